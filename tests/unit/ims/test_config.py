"""imsbox.toml loading: defaults, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.config import ConfigError, load_config
from imsbox.ifc import RequestView, SessionCase, matching_ifcs
from imsbox.ims.login_guard import LoginLimits
from imsbox.store import PsiKind

AC_MSG = '*;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"'
AC_FT = '*;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.filetransfer"'
PAS_SESSION = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imsbox.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    c = load_config()
    assert c.domain == "ims.test" and c.data_dir == Path(".imsbox")
    assert (c.pcscf.host, c.pcscf.port, c.pcscf.tls_port) == ("127.0.0.1", 5060, 5061)
    assert c.pcscf.transports == ("udp", "tcp", "tls")
    assert [c.icscf.port, c.scscf.port, c.messaging_as.port, c.conference_as.port] == \
        [5070, 5080, 5090, 5100]
    assert c.media_server.port == 5120 and (c.media.rtp_start, c.media.rtp_stop) == (40000, 41000)
    assert c.media.moh_file == "" and c.media.announcements == ""
    assert c.scscf.uri == "sip:127.0.0.1:5080"
    assert c.store_location == ".imsbox"
    assert (c.registrar.min_expires, c.registrar.default_expires,
            c.registrar.max_expires) == (60, 3600, 7200)
    assert [(p.pattern, p.as_uri, p.kind) for p in c.psis] == [
        ("sip:conf-*@ims.test", "sip:127.0.0.1:5100", PsiKind.WILDCARD),
        ("sip:group-*@ims.test", "sip:127.0.0.1:5100", PsiKind.WILDCARD),
        ("sip:moh@ims.test", "sip:127.0.0.1:5120", PsiKind.EXACT),
        ("sip:conference@ims.test", "sip:127.0.0.1:5120", PsiKind.EXACT),
        ("sip:conference-*@ims.test", "sip:127.0.0.1:5120", PsiKind.WILDCARD),
        ("sip:announce@ims.test", "sip:127.0.0.1:5120", PsiKind.EXACT),
        ("sip:announce-*@ims.test", "sip:127.0.0.1:5120", PsiKind.WILDCARD),
        ("sip:park@ims.test", "sip:127.0.0.1:5120", PsiKind.EXACT),
        ("sip:park-*@ims.test", "sip:127.0.0.1:5120", PsiKind.WILDCARD)]


def test_media_server_section(tmp_path: Path) -> None:
    path = tmp_path / "imsbox.toml"
    path.write_text('[media_server]\nport = 6000\nrtp_ports = [30000, 30100]\n'
                    'moh_file = "music.wav"\n')
    c = load_config(path)
    assert c.media_server.port == 6000 and c.media.moh_file == "music.wav"
    assert (c.media.rtp_start, c.media.rtp_stop) == (30000, 30100)
    for bad in ("[30000]", "[30100, 30000]", "[10, 20]", '"30000-30100"'):
        path.write_text(f"[media_server]\nrtp_ports = {bad}\n")
        with pytest.raises(ConfigError, match=r"media_server\.rtp_ports"):
            load_config(path)
    path.write_text("[media_server]\nmusic = 1\n")
    with pytest.raises(ConfigError, match=r"media_server\.music"):
        load_config(path)


def test_call_park_settings(tmp_path: Path) -> None:
    path = tmp_path / "imsbox.toml"
    path.write_text("")
    c = load_config(path).telephony
    assert (c.park_first, c.park_last, c.park_timeout) == (701, 799, 120)
    path.write_text("[telephony]\npark_orbits = [1, 9]\npark_timeout = 30\n")
    c = load_config(path).telephony
    assert (c.park_first, c.park_last, c.park_timeout) == (1, 9, 30)
    for bad in ("[9, 1]", "[1]", "[-1, 5]", '"701-799"', "[1.5, 3]"):
        path.write_text(f"[telephony]\npark_orbits = {bad}\n")
        with pytest.raises(ConfigError, match=r"telephony\.park_orbits"):
            load_config(path)
    path.write_text("[telephony]\npark_timeout = 0\n")
    with pytest.raises(ConfigError, match=r"telephony\.park_timeout"):
        load_config(path)


@pytest.mark.parametrize("method, headers, case, expected", [
    ("MESSAGE", [("Accept-Contact", AC_MSG)], SessionCase.ORIGINATING, [10]),
    ("INVITE", [("a", AC_FT)], SessionCase.ORIGINATING, [10]),
    ("INVITE", [("P-Asserted-Service", PAS_SESSION)], SessionCase.TERMINATING_REGISTERED, [20]),
    ("MESSAGE", [("P-Asserted-Service", PAS_SESSION)], SessionCase.TERMINATING_UNREGISTERED,
     [20]),
    ("INVITE", [("Accept-Contact", "*;audio")], SessionCase.ORIGINATING, []),
    ("INVITE", [], SessionCase.TERMINATING_REGISTERED, []),
    ("OPTIONS", [("Accept-Contact", AC_MSG)], SessionCase.ORIGINATING, []),
])
def test_default_ifcs_route_cpm_to_messaging_as(method: str, headers: list, case: SessionCase,
                                                expected: list[int]) -> None:
    c = load_config()
    found = matching_ifcs(c.ifcs, RequestView(method, "sip:bob@ims.test", headers), case)
    assert [i.priority for i in found] == expected
    assert all(i.application_server.server_name == c.messaging_as.uri for i in found)


def test_file_values_and_derived_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
domain = "Example.NET"
data_dir = "/var/lib/imsbox"
[pcscf]
host = ["127.0.0.1", "::1"]
port = 6060
tls_port = 6061
[messaging_as]
port = 7000
[conference_as]
host = "::1"
port = 7100
transports = ["tcp"]
[telephony_as]
port = 7200
[registrar]
max_expires = 600000
""")
    c = load_config(path)
    assert c.domain == "example.net" and c.data_dir == Path("/var/lib/imsbox")
    assert c.pcscf.hosts == ("127.0.0.1", "::1") and c.pcscf.port == 6060
    # on TCP alone: its URI says so, or the others would send it UDP (RFC 3263 4.1)
    assert c.conference_as.uri == "sip:[::1]:7100;transport=tcp"
    assert c.conference_as.transports == ("tcp",)
    assert c.registrar.max_expires == 600000
    # default iFCs and PSIs follow the configured domain and AS addresses
    assert {i.application_server.server_name for i in c.ifcs} == {
        "sip:127.0.0.1:7000", "sip:[::1]:7100;transport=tcp", "sip:orig@127.0.0.1:7200",
        "sip:term@127.0.0.1:7200"}
    assert c.psis[0].pattern == "sip:conf-*@example.net"
    assert c.psis[0].as_uri == "sip:[::1]:7100;transport=tcp"


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'domain = "a.test"\ndata_dir = "x"\n')
    c = load_config(path, domain="b.test", data_dir=tmp_path / "d")
    assert c.domain == "b.test" and c.data_dir == tmp_path / "d"
    assert c.psis[1].pattern == "sip:group-*@b.test"


def test_custom_ifcs_and_psis(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[ifc]]
priority = 5
application_server = "conference_as"
[ifc.trigger_point]
condition = "DNF"
spt = [{method = "INVITE", group = 0}, {header = "Subject", content = "conf", group = 0}]

[[ifc]]
priority = 6
application_server = {server_name = "messaging_as", default_handling = "SESSION_TERMINATED"}

[[psi]]
pattern = "sip:rooms!.*!@ims.test"
application_server = "sip:rooms@127.0.0.1:9000"

[[psi]]
pattern = "sip:lobby@ims.test"
application_server = "conference_as"
""")
    c = load_config(path)
    assert [i.priority for i in c.ifcs] == [5, 6]
    assert c.ifcs[0].application_server.server_name == "sip:127.0.0.1:5100"
    assert c.ifcs[1].application_server.server_name == "sip:127.0.0.1:5090"
    assert c.ifcs[0].trigger_point.cnf is False
    assert [(p.kind, p.as_uri) for p in c.psis] == [
        (PsiKind.WILDCARD, "sip:rooms@127.0.0.1:9000"), (PsiKind.EXACT, "sip:127.0.0.1:5100")]


@pytest.mark.parametrize("text, key, hint", [
    ("[pcscf]\nport = 70000", "pcscf.port", "1-65535"),
    ('[pcscf]\nport = "5060"', "pcscf.port", "integer"),
    ('[scscf]\ntransports = ["sctp"]', "scscf.transports", "sctp"),
    ('[icscf]\ntransports = ["tls"]', "icscf.tls_port", "set tls_port"),
    ("[pcscf]\ntls_port = 5060", "pcscf.tls_port", "cannot share"),
    ('[pcscf]\nhost = "bad host!"', "pcscf.host", "IP address or host name"),
    ('[pcscf]\nhost = []', "pcscf.host", "list"),
    ("[pcscf]\nprot = 1", "pcscf.prot", "unknown key"),
    ('domain = "nodot"', "domain", "DNS domain"),
    ("colour = 1", "colour", "unknown key"),
    ("pcscf = 5", "pcscf", "expected a table"),
    ('[store]\nurl = "mysql://x"', "store.url", "postgresql"),
    ("[registrar]\nmin_expires = 4000", "registrar", "min_expires <= default_expires"),
    ("[[ifc]]\npriority = 1", r"ifc\[0\]", "application_server"),
    ('[[ifc]]\npriority = 1\napplication_server = "nowhere"', r"ifc\[0\].application_server",
     "node name"),
    ('[[ifc]]\npriority = 1\napplication_server = "sip:a"\n'
     '[[ifc]]\npriority = 1\napplication_server = "sip:b"', "ifc", "unique"),
    ('[[psi]]\npattern = "conf-*"\napplication_server = "conference_as"', r"psi\[0\].pattern",
     "sip: or tel:"),
    ('[[psi]]\npattern = "sip:a@b"\napplication_server = "conference_as"\nkind = "fuzzy"',
     r"psi\[0\].kind", "exact, wildcard or regex"),
    ("ifc = 3", "ifc", r"\[\[ifc\]\]"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=f"imsbox.toml: {key}: .*{hint}") as info:
        load_config(write(tmp_path, text))
    assert info.value.key.replace("\\", "") == key.replace("\\", "")


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "domain = "))
    with pytest.raises(ConfigError, match="--domain"):
        load_config(domain="bad domain")


def test_with_node_copies() -> None:
    c = load_config()
    changed = c.with_node("pcscf", hosts=("::1",), port=6000)
    assert changed.pcscf.uri == "sip:[::1]:6000" and changed.pcscf.tls_port == 5061
    assert c.pcscf.port == 5060  # original untouched
    with pytest.raises(ConfigError, match="unknown node"):
        c.with_node("bgcf", port=1)


def test_messaging_settings(tmp_path):
    """[messaging] sets the deferred lifetime and the file size limit."""
    path = tmp_path / "imsbox.toml"
    path.write_text("[messaging]\ndeferred_ttl = 60\nmax_file_size = 1000\n")
    config = load_config(path)
    assert (config.messaging.deferred_ttl, config.messaging.max_file_size) == (60, 1000)
    assert load_config(None).messaging.max_file_size == 0
    assert load_config(None).messaging.max_stored_file_size == 100 * 1024 * 1024
    path.write_text("[messaging]\nmax_stored_file_size = 0\n")
    assert load_config(path).messaging.max_stored_file_size == 0  # files to offline: 413
    path.write_text("[messaging]\nmax_stored_file_size = -1\n")
    with pytest.raises(ConfigError, match=r"messaging.max_stored_file_size"):
        load_config(path)
    path.write_text("[messaging]\ndeferred_ttl = 0\n")
    with pytest.raises(ConfigError, match=r"messaging.deferred_ttl"):
        load_config(path)
    path.write_text("[messaging]\nttl = 5\n")
    with pytest.raises(ConfigError, match="messaging"):
        load_config(path)


def test_limits_defaults_and_overrides(tmp_path: Path) -> None:
    limits = load_config().limits
    assert (limits.sip.max_headers, limits.sip.max_header_length, limits.sip.max_body_size,
            limits.sip.message_timeout, limits.sip.max_connections_per_source) == \
        (256, 8192, 262144, 30.0, 256)
    assert (limits.overload.max_transactions, limits.overload.retry_after,
            limits.msrp_idle_timeout) == (50000, 10, 300.0)
    path = write(tmp_path, "[limits]\nmax_headers = 50\nmax_body_size = 1000\n"
                           "message_timeout = 2.5\nmax_transactions = 7\nretry_after = 3\n"
                           "msrp_idle_timeout = 20\nmax_queue_delay = 0.25\n")
    limits = load_config(path).limits
    assert (limits.sip.max_headers, limits.sip.max_body_size, limits.sip.message_timeout,
            limits.sip.max_header_length) == (50, 1000, 2.5, 8192)
    assert (limits.overload.max_transactions, limits.overload.retry_after,
            limits.overload.max_queue_delay, limits.msrp_idle_timeout) == (7, 3, 0.25, 20.0)


@pytest.mark.parametrize("text, key", [
    ("[limits]\nmax_headerz = 5\n", "limits.max_headerz"),
    ("[limits]\nmax_headers = 0\n", "limits.max_headers"),
    ("[limits]\nidle_timeout = -1\n", "limits.idle_timeout"),
    ("[limits]\nmessage_timeout = \"soon\"\n", "limits.message_timeout"),
])
def test_limits_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"imsbox.toml: {key}: "):
        load_config(write(tmp_path, text))


def test_security_and_login_limits_defaults_and_file_values(tmp_path: Path) -> None:
    c = load_config()
    assert c.security.trusted_peers == () and c.security.udp_trust == "loopback"
    assert c.security.transport_switch == "address"
    assert c.registrar.login == LoginLimits()
    assert ("127.0.0.1", 5061) in c.trusted_sockets() and \
        ("127.0.0.1", 5080) in c.trusted_sockets()
    c = load_config(write(tmp_path, """
[security]
trusted_peers = ["10.0.0.9:5070", "[::1]:6000", "as.example.net:5090"]
udp_trust = "none"
transport_switch = "off"
[registrar]
account_free_failures = 5
account_backoff = 2
account_backoff_max = 120.0
source_failures = 50
source_window = 30
remember_success = 3600
max_entries = 1000
"""))
    assert c.security.trusted_peers == (("10.0.0.9", 5070), ("::1", 6000),
                                        ("as.example.net", 5090))
    assert c.security.udp_trust == "none" and c.security.transport_switch == "off"
    assert c.registrar.login == LoginLimits(5, 2.0, 120.0, 50, 30.0, 3600.0, 1000)
    assert ("::1", 6000) in c.trusted_sockets()


@pytest.mark.parametrize("text,key,hint", [
    ('[security]\ntrusted_peers = ["10.0.0.9"]', "security.trusted_peers", "HOST:PORT"),
    ('[security]\ntrusted_peers = ["::1:5060"]', "security.trusted_peers", "IPv6"),
    ('[security]\ntrusted_peers = "10.0.0.9:5060"', "security.trusted_peers", "list"),
    ('[security]\nudp_trust = "some"', "security.udp_trust", "loopback, any, none"),
    ('[security]\ntransport_switch = "on"', "security.transport_switch", "address, off"),
    ("[security]\nmtls = true", "security.mtls", "unknown key"),
    ("[registrar]\nsource_failures = 0", "registrar.source_failures", "integer 1-"),
    ('[registrar]\naccount_backoff = "1s"', "registrar.account_backoff", "seconds"),
    ("[registrar]\naccount_backoff = 90", "registrar.account_backoff", "account_backoff_max"),
])
def test_security_and_login_errors_name_the_key(tmp_path: Path, text: str, key: str,
                                                hint: str) -> None:
    with pytest.raises(ConfigError, match=f"imsbox.toml: {key}: .*{hint}"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("uri, headers, case", [
    ("sip:conf-factory@ims.test", [("P-Asserted-Service", PAS_SESSION)], SessionCase.ORIGINATING),
    ("sip:group-team@ims.test", [("Accept-Contact", AC_MSG)], SessionCase.ORIGINATING),
    ("sip:bob@ims.test", [("P-Asserted-Service", PAS_SESSION),
                          ("P-Asserted-Identity", "<sip:conf-1a2b@ims.test>")],
     SessionCase.TERMINATING_REGISTERED),
])
def test_default_ifcs_leave_conference_traffic_alone(uri: str, headers: list,
                                                     case: SessionCase) -> None:
    """Requests to a conference PSI, and a focus's invitations, are the conference
    AS's: the messaging AS would anchor them (or answer 420 to recipient-list-invite)."""
    c = load_config()
    assert matching_ifcs(c.ifcs, RequestView("INVITE", uri, headers), case) == []
    user = RequestView("INVITE", "sip:bob@ims.test", [("P-Asserted-Service", PAS_SESSION),
                                                     ("P-Asserted-Identity", "<sip:alice@ims.test>")])
    assert [i.priority for i in matching_ifcs(c.ifcs, user, case)] in ([10], [20])
