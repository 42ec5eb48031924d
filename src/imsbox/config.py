"""imsbox.toml: the network's configuration, with documented defaults.

Every key is optional; a missing file means all defaults. Defaults::

    domain = "ims.test"          # home domain: identities NAME@ims.test, realm
    data_dir = ".imsbox"         # SQLite store, TLS material, files (relative to CWD)

    [store]
    url = ""                     # "" = SQLite in data_dir; postgresql://USER:PW@HOST/DB
                                 # shared by every instance (docs/scale-out.md)
    cache = ""                   # redis://HOST:PORT/DB, with a PostgreSQL store

    [pcscf]                      # the UEs' entry point
    host = "127.0.0.1"           # or a list: ["127.0.0.1", "::1"]
    port = 5060                  # UDP and TCP
    tls_port = 5061
    transports = ["udp", "tcp", "tls"]
    fronts = []                  # "HOST:PORT" of a load balancer in front (Kamailio
                                 # dispatcher, deploy/kamailio): UEs seen through it

    [icscf]                      # host 127.0.0.1, port 5070, transports udp+tcp
    [scscf]                      # host 127.0.0.1, port 5080, transports udp+tcp
    pool = []                    # "HOST:PORT" of every S-CSCF sharing the users, this
                                 # one included (docs/scale-out.md); [messaging_as] too
    [messaging_as]               # host 127.0.0.1, port 5090 (CPM/RCS messaging)
    [conference_as]              # host 127.0.0.1, port 5100 (conferences, groups)
    [telephony_as]               # host 127.0.0.1, port 5110 (forwarding, screening,
                                 # dialog events, click to dial: docs/telephony-as.md)
    [media_server]               # host 127.0.0.1, port 5120 (the MRF: music on hold,
                                 # audio conferences, announcements; docs/media-server.md)
    rtp_ports = [40000, 41000]   # its RTP/RTCP port range [start, stop)
    moh_file = ""                # WAV played on hold ("": a generated tone melody)
    announcements = ""           # directory of NAME.wav for ;play=NAME ("": tones only)

    [registrar]
    min_expires = 60             # shorter REGISTER expiry gets 423
    default_expires = 3600
    max_expires = 7200           # longer requests are cut down to this
    digest_algorithms = ["SHA-256", "MD5"]  # the 401's challenges, most preferred
                                 # first (RFC 8760); ["MD5", "SHA-256"] for clients
                                 # that answer only the topmost one (SIPp 3.6)
    # failed logins (imsbox.ims.login_guard, docs/security.md):
    account_free_failures = 3    # failures per account before it backs off
    account_backoff = 1.0        # seconds; doubled per further failure
    account_backoff_max = 60.0   # the back-off's ceiling
    source_failures = 20         # failures per source address per window
    source_window = 60.0         # seconds
    remember_success = 604800.0  # seconds a good (account, UE flow) skips the limits
    max_entries = 100000         # per table (accounts, sources, good pairs)

    [security]                   # trust between core nodes (docs/security.md)
    trusted_peers = []           # more "HOST:PORT" sockets trusted like a node's
    udp_trust = "loopback"       # UDP counts from a node socket only on loopback;
                                 # "any" (no spoofing possible), "none" (TCP only)
    transport_switch = "address" # a UE's request on another transport than its
                                 # registration's (RFC 3261 18.1.1): "address" takes
                                 # it from the same IP, Contact and identity; "off"

    [messaging]                  # the messaging AS
    deferred_ttl = 604800        # seconds an undelivered message is kept (then a
                                 # "failed" IMDN goes to the sender)
    max_file_size = 0            # bytes; larger file transfers get 488 (0: no limit)
    max_stored_file_size = 104857600  # bytes a file to an offline user may have to be
                                 # kept for later delivery (larger: 413; 0: none kept)

    [conference]                 # the conference AS (group chat)
    idle_timeout = 300           # seconds a conference nobody is in is kept (then 404)

    [telephony]                  # the telephony AS
    no_answer_after = 20         # seconds a call rings before forward-no-answer / the
                                 # next find-me target, when the setting names none
    max_diversions = 5           # History-Info forwarding entries before 483
    park_orbits = [701, 799]     # call park orbits (sip:park-N@DOMAIN), first and last
    park_timeout = 120           # seconds a parked call waits before it rings the parker

    [limits]                     # every node (docs/limits.md: what is answered how)
    max_headers = 256            # header lines per SIP message; more -> 400
    max_header_length = 8192     # bytes of one header line; longer -> 400
    max_header_size = 65536      # bytes of the header section; more -> 513 (UDP),
                                 # connection closed (TCP/TLS)
    max_body_size = 262144       # bytes of a SIP body; more -> 413
    message_timeout = 30.0       # seconds from a stream message's first byte to its
                                 # last (SIP and MSRP); then the connection closes
    idle_timeout = 60.0          # seconds without a byte on a SIP connection
    msrp_idle_timeout = 300.0    # seconds without a byte on an MSRP connection of
                                 # the messaging AS (it sends keep-alives at half)
    max_connections = 1024       # accepted SIP connections per node, in total
    max_connections_per_source = 256  # ... and per source IP address
    max_transactions = 50000     # held transactions (~3 KB each once answered);
                                 # new requests beyond -> 503
    max_queue_delay = 2.0        # seconds a datagram waited unread; beyond -> 503
    retry_after = 10             # seconds, in the 503's Retry-After

    [[ifc]]                      # when given, replaces the default iFCs
    [[psi]]                      # when given, replaces the default PSIs

Nodes other than the P-CSCF take ``host``, ``port`` and ``transports`` and have
no ``tls_port`` unless set. A node's SIP URI is ``sip:HOST:PORT``; the S-CSCF's
is its Server-Name in the HSS.

Default iFCs (priority, trigger):

* 10 -> messaging AS: an INVITE or MESSAGE, ORIGINATING, whose
  P-Asserted-Service or Accept-Contact ``+g.3gpp.icsi-ref`` names an
  ``oma.cpm.*`` service (CNF: method group AND header group AND case group);
  also any REGISTER (third-party registration, with the UE's REGISTER as
  message/sip: the AS learns who came online and delivers deferred messages).
* 20 -> messaging AS: the same for TERMINATING_REGISTERED or
  TERMINATING_UNREGISTERED (deferred delivery for offline users).
  Neither takes group chat: a Request-URI or P-Asserted-Identity that is a
  conference PSI (``conf-*`` / ``group-*``) is the conference AS's.
* 30 -> conference AS: any REGISTER (third-party registration: an offline
  member of a pre-defined group is invited back with what it missed).
* 40 -> telephony AS (``sip:orig@HOST:PORT``): a voice call, ORIGINATING: an
  INVITE with an ``m=audio`` line that names no CPM service (as above) and is
  not group chat (outgoing screening, dialog events).
* 50 -> telephony AS (``sip:term@HOST:PORT``): the same, TERMINATING_REGISTERED
  or TERMINATING_UNREGISTERED (forwarding, find-me, incoming screening).
* 55 -> telephony AS (``sip:term@...``): a SUBSCRIBE with ``Event: dialog`` to a
  user, TERMINATING_* (the AS is its subscribers' RFC 4235 notifier).

``[[ifc]]`` tables use the shape of :meth:`imsbox.ifc.InitialFilterCriteria.from_dict`;
``application_server`` may also be a node name (``"messaging_as"``, ``"conference_as"``,
``"telephony_as"``).

Default PSIs: ``sip:conf-*@DOMAIN`` and ``sip:group-*@DOMAIN`` hosted by the
conference AS; ``sip:moh@DOMAIN``, ``sip:conference@DOMAIN`` (the audio conference
factory), ``sip:conference-*@DOMAIN`` (its conferences), ``sip:announce@DOMAIN``,
``sip:announce-*@DOMAIN``, ``sip:park@DOMAIN`` and ``sip:park-*@DOMAIN`` (call park
and its orbits) hosted by the media server. Always provisioned
beside them: ``sip:cpm-deferred@DOMAIN``
(deferred-message retrieval, seed 003) hosted by the messaging AS.
``[[psi]]`` tables: ``pattern``, ``application_server`` (URI or node name),
optional ``kind`` (exact / wildcard / regex; default wildcard when the pattern
has ``*`` or ``!``, else exact).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .ifc import (
    ApplicationServer, HeaderSpt, IfcError, InitialFilterCriteria, MethodSpt, RequestUriSpt,
    SdpLineSpt, ServicePointTrigger, SessionCase, SessionCaseSpt, TriggerPoint,
)
from .sip.overload import OverloadPolicy
from .sip.transport import Limits
from .store.models import Psi, PsiKind

__all__ = [
    "CPM_ACCEPT_CONTACT", "CPM_SERVICE", "ConferenceConfig", "Config", "ConfigError",
    "LimitsConfig", "LoginLimits", "MediaServerConfig", "NodeConfig",
    "RegistrarConfig", "SecurityConfig", "TelephonyConfig", "default_ifcs", "default_psis",
    "load_config",
]

DEFAULT_DOMAIN = "ims.test"
DEFAULT_DATA_DIR = ".imsbox"
NODE_NAMES = ("pcscf", "icscf", "scscf", "messaging_as", "conference_as", "telephony_as",
              "media_server")
# Keys of a node table beyond host/port/tls_port/transports.
_NODE_EXTRA_KEYS = {"media_server": ("rtp_ports", "moh_file", "announcements"),
                    "pcscf": ("fronts",), "scscf": ("pool",), "messaging_as": ("pool",),
                    "conference_as": ("pool",)}
_TRANSPORTS = ("udp", "tcp", "tls")
DIGEST_ALGORITHMS = ("SHA-256", "MD5")  # those the store keeps an H(A1) for
UDP_TRUST = ("loopback", "any", "none")   # [security] udp_trust, default first
TRANSPORT_SWITCH = ("address", "off")     # [security] transport_switch, default first
_LOGIN_KEYS = ("account_free_failures", "account_backoff", "account_backoff_max",
               "source_failures", "source_window", "remember_success", "max_entries")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")

# CPM traffic: P-Asserted-Service carries the ICSI as written, Accept-Contact
# carries it %-encoded inside +g.3gpp.icsi-ref (urn%3Aurn-7%3A...oma.cpm.msg).
CPM_SERVICE = r"3gpp-service\.ims\.icsi\.oma\.cpm\."
CPM_ACCEPT_CONTACT = r"\+g\.3gpp\.icsi-ref=\"[^\"]*3gpp-service\.ims\.icsi\.oma\.cpm\."


class ConfigError(ValueError):
    """A configuration value is wrong; says which key and what to do about it."""

    def __init__(self, key: str, message: str, source: str = "imsbox.toml") -> None:
        self.key = key
        self.source = source
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


@dataclass(slots=True, frozen=True)
class NodeConfig:
    """Listen address of one network function."""

    hosts: tuple[str, ...]
    port: int
    transports: tuple[str, ...] = ("udp", "tcp")
    tls_port: int | None = None
    # Every instance of the role, this one included ([scscf] / [messaging_as] /
    # [conference_as] pool:
    # docs/scale-out.md); () = this one alone.
    pool: tuple[tuple[str, int], ...] = ()
    # [pcscf] fronts: load balancers (Kamailio dispatcher) whose requests carry the
    # UE's own address in the second Via (received/rport).
    fronts: tuple[tuple[str, int], ...] = ()

    @property
    def host(self) -> str:
        return self.hosts[0]

    @property
    def uri(self) -> str:
        """sip:HOST:PORT, IPv6 literals in brackets; ``;transport=tcp`` when the node
        listens on TCP and not UDP, so the others reach it over TCP (RFC 3263 4.1:
        a URI without transport means UDP)."""
        return _sip_uri(self.host, self.port) + self.transport_param

    @property
    def instances(self) -> tuple[str, ...]:
        """The SIP URIs of every instance of the role: the pool, else this one
        (each with this node's ``transport_param``: the instances of a role are
        configured alike)."""
        if not self.pool:
            return (self.uri,)
        return tuple(_sip_uri(host, port) + self.transport_param for host, port in self.pool)

    @property
    def transport_param(self) -> str:
        """``;transport=tcp`` for a node that listens on TCP and not on UDP, else ""."""
        return ";transport=tcp" if "udp" not in self.transports and \
            "tcp" in self.transports else ""


def _sip_uri(host: str, port: int) -> str:
    return f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}"


@dataclass(slots=True, frozen=True)
class LoginLimits:
    """The registrar's login limits (imsbox.ims.login_guard), as ``[registrar]`` keys
    of imsbox.toml (docs/security.md)."""

    account_free_failures: int = 3      # failures before an account backs off
    account_backoff: float = 1.0        # first back-off, doubled per further failure
    account_backoff_max: float = 60.0   # the ceiling of the back-off
    source_failures: int = 20           # failures one address may make per window
    source_window: float = 60.0
    remember_success: float = 7 * 24 * 3600.0   # how long a good (account, source) counts
    max_entries: int = 100_000          # per table


@dataclass(slots=True, frozen=True)
class RegistrarConfig:
    min_expires: int = 60
    default_expires: int = 3600
    max_expires: int = 7200
    digest_algorithms: tuple[str, ...] = DIGEST_ALGORITHMS
    login: LoginLimits = field(default_factory=LoginLimits)


@dataclass(slots=True, frozen=True)
class SecurityConfig:
    """``[security]``: who besides the configured nodes is in the trust domain."""

    trusted_peers: tuple[tuple[str, int], ...] = ()   # (host, port)
    udp_trust: str = "loopback"                       # one of UDP_TRUST
    transport_switch: str = "address"                 # one of TRANSPORT_SWITCH


DEFERRED_TTL = 7 * 24 * 3600
MAX_STORED_FILE_SIZE = 100 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class MessagingConfig:
    deferred_ttl: int = DEFERRED_TTL
    max_file_size: int = 0  # 0: no limit
    max_stored_file_size: int = MAX_STORED_FILE_SIZE  # 0: files to offline users refused


@dataclass(slots=True, frozen=True)
class ConferenceConfig:
    idle_timeout: int = 300  # seconds an empty conference is kept


@dataclass(slots=True, frozen=True)
class TelephonyConfig:
    no_answer_after: int = 20   # seconds of ringing before forward-no-answer / find-me
    max_diversions: int = 5     # forwardings of one call (History-Info) before 483
    park_first: int = 701       # call park orbits first..last (docs/media-server.md)
    park_last: int = 799
    park_timeout: int = 120     # seconds parked before the parker is rung again


@dataclass(slots=True, frozen=True)
class MediaServerConfig:
    """The media server's own keys of ``[media_server]`` (beside host and port)."""

    rtp_start: int = 40000
    rtp_stop: int = 41000          # exclusive
    moh_file: str = ""             # "": a generated tone melody
    announcements: str = ""        # directory of NAME.wav files


def _default_nodes() -> dict[str, NodeConfig]:
    local = ("127.0.0.1",)
    return {
        "pcscf": NodeConfig(local, 5060, _TRANSPORTS, 5061),
        "icscf": NodeConfig(local, 5070),
        "scscf": NodeConfig(local, 5080),
        "messaging_as": NodeConfig(local, 5090),
        "conference_as": NodeConfig(local, 5100),
        "telephony_as": NodeConfig(local, 5110),
        "media_server": NodeConfig(local, 5120),
    }


@dataclass(slots=True, frozen=True)
class LimitsConfig:
    """``[limits]``: what every node's transports and endpoints may spend."""

    sip: Limits = field(default_factory=Limits)
    overload: OverloadPolicy = field(default_factory=OverloadPolicy)
    msrp_idle_timeout: float = 300.0

    @property
    def message_timeout(self) -> float | None:
        return self.sip.message_timeout


@dataclass(slots=True, frozen=True)
class Config:
    """The whole configuration; build with :func:`load_config`."""

    domain: str = DEFAULT_DOMAIN
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    store_url: str = ""
    cache_url: str = ""
    nodes: Mapping[str, NodeConfig] = field(default_factory=_default_nodes)
    registrar: RegistrarConfig = RegistrarConfig()
    messaging: MessagingConfig = MessagingConfig()
    conference: ConferenceConfig = ConferenceConfig()
    telephony: TelephonyConfig = TelephonyConfig()
    media: MediaServerConfig = MediaServerConfig()
    security: SecurityConfig = SecurityConfig()
    limits: LimitsConfig = LimitsConfig()
    ifcs: tuple[InitialFilterCriteria, ...] = ()
    psis: tuple[Psi, ...] = ()

    @property
    def pcscf(self) -> NodeConfig:
        return self.nodes["pcscf"]

    @property
    def icscf(self) -> NodeConfig:
        return self.nodes["icscf"]

    @property
    def scscf(self) -> NodeConfig:
        return self.nodes["scscf"]

    @property
    def messaging_as(self) -> NodeConfig:
        return self.nodes["messaging_as"]

    @property
    def conference_as(self) -> NodeConfig:
        return self.nodes["conference_as"]

    @property
    def telephony_as(self) -> NodeConfig:
        return self.nodes["telephony_as"]

    @property
    def media_server(self) -> NodeConfig:
        return self.nodes["media_server"]

    @property
    def deferred_messages_psi(self) -> Psi:
        """The CPMDeferredMsgMgmtURI (seed 003 retrieval, ``imsbox.rcs.cpm.
        deferred_messages_uri``), hosted by the messaging AS beside ``psis``."""
        return Psi(f"sip:cpm-deferred@{self.domain}", self.messaging_as.uri, PsiKind.EXACT)

    def with_node(self, name: str, **changes: object) -> Config:
        """A copy with one node's fields changed (for --host/--port/--tls-port)."""
        if name not in self.nodes:
            raise ConfigError(name, "unknown node; expected one of " + ", ".join(NODE_NAMES))
        nodes = dict(self.nodes)
        nodes[name] = replace(nodes[name], **changes)  # type: ignore[arg-type]
        return replace(self, nodes=nodes)

    def trusted_sockets(self) -> tuple[tuple[str, int], ...]:
        """The trust domain's sockets: every node's port and tls_port on each
        of its hosts, and ``[security] trusted_peers`` (sip.trust)."""
        out = [(h, p) for node in self.nodes.values() for h in node.hosts
               for p in (node.port, node.tls_port) if p]
        out += [socket for node in self.nodes.values() for socket in node.pool]
        return tuple(dict.fromkeys(out + list(self.security.trusted_peers)))

    @property
    def store_location(self) -> str:
        """What :func:`imsbox.store.open_store` takes: the URL, else the data dir."""
        return self.store_url or str(self.data_dir)


# -- defaults that depend on the domain and node addresses ---------------------------

def _cpm_ifc(priority: int, server: str, cases: tuple[SessionCase, ...], name: str,
             register: bool = False) -> InitialFilterCriteria:
    # REGISTER sits in the method and the header group: it needs no CPM header.
    # The S-CSCF evaluates third-party REGISTER as ORIGINATING. SESSION_CONTINUED
    # (the default handling): a network run without the AS keeps working.
    spts = (
        MethodSpt("INVITE", groups=(0,)),
        MethodSpt("MESSAGE", groups=(0,)),
        *((MethodSpt("REGISTER", groups=(0, 1)),) if register else ()),
        HeaderSpt("P-Asserted-Service", CPM_SERVICE, groups=(1,)),
        HeaderSpt("Accept-Contact", CPM_ACCEPT_CONTACT, groups=(1,)),
        *(SessionCaseSpt(case, groups=(2,)) for case in cases),
        # Group chat belongs to the conference AS: neither a request to a conference
        # PSI nor one from a focus (P-Asserted-Identity: the conference).
        RequestUriSpt(CONFERENCE_PSI, negated=True, groups=(3,)),
        HeaderSpt("P-Asserted-Identity", CONFERENCE_PSI, negated=True, groups=(4,)),
    )
    # The REGISTER goes along (message/sip): the AS sees the ICSIs the UE registered.
    return InitialFilterCriteria(priority, ApplicationServer(
                                     server, include_register_request=register),
                                 TriggerPoint(spts, cnf=True), name=name)


def _voice_ifc(priority: int, server: str, cases: tuple[SessionCase, ...],
               name: str) -> InitialFilterCriteria:
    # A voice call is an INVITE with audio that is neither CPM (the messaging
    # AS's) nor group chat (the conference AS's): any phone's call, ICSI or not.
    spts: tuple[ServicePointTrigger, ...] = (
        MethodSpt("INVITE", groups=(0,)),
        SdpLineSpt("m", r"^audio ", groups=(1,)),
        HeaderSpt("P-Asserted-Service", CPM_SERVICE, negated=True, groups=(2,)),
        HeaderSpt("Accept-Contact", CPM_ACCEPT_CONTACT, negated=True, groups=(3,)),
        *(SessionCaseSpt(case, groups=(4,)) for case in cases),
        RequestUriSpt(CONFERENCE_PSI, negated=True, groups=(5,)),
        HeaderSpt("P-Asserted-Identity", CONFERENCE_PSI, negated=True, groups=(6,)),
    )
    return InitialFilterCriteria(priority, ApplicationServer(server),
                                 TriggerPoint(spts, cnf=True), name=name)


def _dialog_events_ifc(priority: int, server: str) -> InitialFilterCriteria:
    """SUBSCRIBE Event: dialog to a user: the telephony AS is its notifier (RFC 4235)."""
    spts = (MethodSpt("SUBSCRIBE", groups=(0,)),
            HeaderSpt("Event", r"^\s*dialog\b", groups=(1,)),
            SessionCaseSpt(SessionCase.TERMINATING_REGISTERED, groups=(2,)),
            SessionCaseSpt(SessionCase.TERMINATING_UNREGISTERED, groups=(2,)))
    return InitialFilterCriteria(priority, ApplicationServer(server),
                                 TriggerPoint(spts, cnf=True), name="dialog-events")


def telephony_ifcs(telephony_as: NodeConfig) -> tuple[InitialFilterCriteria, ...]:
    """Voice calls both ways and dialog subscriptions to the telephony AS; the
    AS URI's user part (``orig`` / ``term``) tells it the session case."""
    host = f"[{telephony_as.host}]" if ":" in telephony_as.host else telephony_as.host
    orig, term = (f"sip:{case}@{host}:{telephony_as.port}" for case in ("orig", "term"))
    terminating = (SessionCase.TERMINATING_REGISTERED, SessionCase.TERMINATING_UNREGISTERED)
    return (
        _voice_ifc(40, orig, (SessionCase.ORIGINATING, SessionCase.ORIGINATING_UNREGISTERED),
                   "voice-originating"),
        _voice_ifc(50, term, terminating, "voice-terminating"),
        _dialog_events_ifc(55, term),
    )


def default_ifcs(messaging_as_uri: str, conference_as_uri: str | None = None,
                 telephony_as: NodeConfig | None = None,
                 ) -> tuple[InitialFilterCriteria, ...]:
    """CPM originating (and third-party REGISTER) and terminating traffic to the
    messaging AS; REGISTER also to the conference AS (offline group members);
    voice calls and dialog subscriptions to the telephony AS."""
    ifcs: tuple[InitialFilterCriteria, ...] = (
        _cpm_ifc(10, messaging_as_uri, (SessionCase.ORIGINATING,), "cpm-originating",
                 register=True),
        _cpm_ifc(20, messaging_as_uri, (SessionCase.TERMINATING_REGISTERED,
                                        SessionCase.TERMINATING_UNREGISTERED),
                 "cpm-terminating"),
    )
    if conference_as_uri is not None:
        # A member who registers gets the pending group invitations and messages.
        ifcs += (InitialFilterCriteria(30, ApplicationServer(conference_as_uri), TriggerPoint(
            (MethodSpt("REGISTER"),)), name="conference-register"),)
    if telephony_as is not None:
        ifcs += telephony_ifcs(telephony_as)
    return ifcs


# The default conference PSIs (``default_psis``) whatever the domain.
CONFERENCE_PSI = r"sips?:(conf|group)-[^@;>]*@"


def default_psis(domain: str, conference_as_uri: str,
                 media_server_uri: str | None = None) -> tuple[Psi, ...]:
    """Conference and group URIs hosted by the conference AS; music on hold, the
    audio conference factory and its conferences, announcements by the media server."""
    psis = (Psi(f"sip:conf-*@{domain}", conference_as_uri, PsiKind.WILDCARD),
            Psi(f"sip:group-*@{domain}", conference_as_uri, PsiKind.WILDCARD))
    if media_server_uri is None:
        return psis
    return (*psis, *media_server_psis(domain, media_server_uri))


def media_server_psis(domain: str, uri: str) -> tuple[Psi, ...]:
    """The media server's service URIs (docs/media-server.md)."""
    return (Psi(f"sip:moh@{domain}", uri, PsiKind.EXACT),
            Psi(f"sip:conference@{domain}", uri, PsiKind.EXACT),
            Psi(f"sip:conference-*@{domain}", uri, PsiKind.WILDCARD),
            Psi(f"sip:announce@{domain}", uri, PsiKind.EXACT),
            Psi(f"sip:announce-*@{domain}", uri, PsiKind.WILDCARD),
            Psi(f"sip:park@{domain}", uri, PsiKind.EXACT),
            Psi(f"sip:park-*@{domain}", uri, PsiKind.WILDCARD))


# -- loading ------------------------------------------------------------------------------------

def load_config(path: str | Path | None = None, *, domain: str | None = None,
                data_dir: str | Path | None = None) -> Config:
    """Read imsbox.toml (None: all defaults); ``domain``/``data_dir`` override the file."""
    source = str(path) if path is not None else "imsbox.toml"
    data = _read(path, source) if path is not None else {}
    return _Loader(data, source).build(domain, data_dir)


def _read(path: str | Path, source: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("", "file not found; check --config", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", source) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read: {exc}", source) from None


class _Loader:
    """Validates one parsed TOML document; every error names its key."""

    TOP_KEYS = ("domain", "data_dir", "store", "registrar", "messaging", "conference",
                "telephony", "security", "limits", "ifc", "psi", *NODE_NAMES)

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(key, message, self.source)

    def keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(f"{prefix}{key}", "unknown key; expected one of "
                                 + ", ".join(allowed))

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table ([{key}]), got {value!r}")
        return value

    def string(self, table: Mapping[str, Any], key: str, name: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {value!r}")
        return value

    def integer(self, table: Mapping[str, Any], key: str, name: str, default: int,
                low: int, high: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(name, f"expected an integer {low}-{high}, got {value!r}")
        return value

    def build(self, domain: str | None, data_dir: str | Path | None) -> Config:
        self.keys(self.data, self.TOP_KEYS, "")
        domain = self.domain(domain)
        data_path = Path(data_dir) if data_dir is not None else Path(
            self.string(self.data, "data_dir", "data_dir", DEFAULT_DATA_DIR))
        store = self.table("store")
        self.keys(store, ("url", "cache"), "store.")
        nodes = {name: self.node(name, default) for name, default in _default_nodes().items()}
        config = Config(domain, data_path, self.store_url(store),
                        self.string(store, "cache", "store.cache", ""), nodes,
                        self.registrar())
        return replace(config, ifcs=self.ifcs(config), psis=self.psis(config),
                       messaging=self.messaging(), conference=self.conference(),
                       telephony=self.telephony(), media=self.media_server(),
                       security=self.security(),
                       limits=self.limits())

    def domain(self, override: str | None) -> str:
        name = "--domain" if override is not None else "domain"
        value = override if override is not None else self.data.get("domain", DEFAULT_DOMAIN)
        if not isinstance(value, str) or not _HOSTNAME.fullmatch(value) or "." not in value:
            raise self.error(name, f"expected a DNS domain such as ims.test, got {value!r}")
        return value.lower().rstrip(".")

    def store_url(self, store: Mapping[str, Any]) -> str:
        url = self.string(store, "url", "store.url", "")
        if url and not url.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise self.error("store.url", f"expected sqlite:///FILE or postgresql://..., "
                             f"got {url!r} (leave empty for SQLite in data_dir)")
        return url

    def node(self, name: str, default: NodeConfig) -> NodeConfig:
        table = self.table(name)
        self.keys(table, ("host", "port", "tls_port", "transports",
                          *_NODE_EXTRA_KEYS.get(name, ())), f"{name}.")
        hosts = self.hosts(table.get("host", list(default.hosts)), f"{name}.host")
        port = self.integer(table, "port", f"{name}.port", default.port, 1, 65535)
        tls_port = table.get("tls_port", default.tls_port)
        if tls_port is not None:
            tls_port = self.integer(table, "tls_port", f"{name}.tls_port",
                                    default.tls_port or 0, 1, 65535)
        transports = self.transports(table.get("transports", list(default.transports)),
                                     f"{name}.transports")
        if "tls" in transports and tls_port is None:
            raise self.error(f"{name}.tls_port", "transports include tls: set tls_port")
        if tls_port is not None and tls_port == port and {"tcp", "tls"} <= set(transports):
            raise self.error(f"{name}.tls_port", f"same as port {port}: TCP and TLS "
                             "cannot share a port; pick another")
        pool = self.sockets(table, "pool", f"{name}.pool")
        if pool and not any((h, port) in pool for h in hosts):
            raise self.error(f"{name}.pool", f"lists every instance of the role, this one "
                             f"({hosts[0]}:{port}) included; add it")
        return NodeConfig(hosts, port, transports, tls_port, pool,
                          self.sockets(table, "fronts", f"{name}.fronts"))

    def sockets(self, table: Mapping[str, Any], key: str,
                name: str) -> tuple[tuple[str, int], ...]:
        """A list of "HOST:PORT" (absent: empty)."""
        value = table.get(key, [])
        if not isinstance(value, list):
            raise self.error(name, f'expected a list of "HOST:PORT", got {value!r}')
        return tuple(dict.fromkeys(self.socket(item, name) for item in value))

    def hosts(self, value: Any, name: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.error(name, f"expected an address or a list of them, got {value!r}")
        for item in items:
            if not isinstance(item, str) or not _is_host(item):
                raise self.error(name, f"expected an IP address or host name, got {item!r}")
        return tuple(items)

    def transports(self, value: Any, name: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(name, f"expected a non-empty list from {list(_TRANSPORTS)}, "
                             f"got {value!r}")
        for item in value:
            if item not in _TRANSPORTS:
                raise self.error(name, f"unknown transport {item!r}; use "
                                 + ", ".join(_TRANSPORTS))
        return tuple(dict.fromkeys(value))

    def registrar(self) -> RegistrarConfig:
        table = self.table("registrar")
        self.keys(table, ("min_expires", "default_expires", "max_expires",
                          "digest_algorithms", *_LOGIN_KEYS), "registrar.")
        low = self.integer(table, "min_expires", "registrar.min_expires", 60, 1, 2**31 - 1)
        default = self.integer(table, "default_expires", "registrar.default_expires",
                               3600, 1, 2**31 - 1)
        high = self.integer(table, "max_expires", "registrar.max_expires", 7200, 1, 2**31 - 1)
        if not low <= default <= high:
            raise self.error("registrar", f"need min_expires <= default_expires <= "
                             f"max_expires, got {low}, {default}, {high}")
        algorithms = table.get("digest_algorithms", list(DIGEST_ALGORITHMS))
        if not isinstance(algorithms, list) or not algorithms or \
                not all(a in DIGEST_ALGORITHMS for a in algorithms):
            raise self.error("registrar.digest_algorithms",
                             f"expected a non-empty list from {list(DIGEST_ALGORITHMS)}, "
                             f"most preferred first, got {algorithms!r}")
        return RegistrarConfig(low, default, high, tuple(dict.fromkeys(algorithms)),
                               self.login_limits(table))

    def login_limits(self, table: Mapping[str, Any]) -> LoginLimits:
        base = LoginLimits()

        def count(key: str, low: int) -> int:
            return self.integer(table, key, f"registrar.{key}", getattr(base, key), low,
                                2**31 - 1)

        limits = LoginLimits(
            account_free_failures=count("account_free_failures", 0),
            account_backoff=self.login_seconds(table, "account_backoff", base.account_backoff),
            account_backoff_max=self.login_seconds(table, "account_backoff_max",
                                             base.account_backoff_max),
            source_failures=count("source_failures", 1),
            source_window=self.login_seconds(table, "source_window", base.source_window),
            remember_success=self.login_seconds(table, "remember_success", base.remember_success),
            max_entries=count("max_entries", 1))
        if limits.account_backoff > limits.account_backoff_max:
            raise self.error("registrar.account_backoff", "must not exceed "
                             f"account_backoff_max ({limits.account_backoff_max})")
        return limits

    def login_seconds(self, table: Mapping[str, Any], key: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not 0 <= value <= 10 * 365 * 86400:
            raise self.error(f"registrar.{key}", f"expected seconds (a number >= 0), "
                             f"got {value!r}")
        return float(value)

    def security(self) -> SecurityConfig:
        table = self.table("security")
        self.keys(table, ("trusted_peers", "udp_trust", "transport_switch"), "security.")
        peers = table.get("trusted_peers", [])
        if not isinstance(peers, list):
            raise self.error("security.trusted_peers", f"expected a list of \"HOST:PORT\", "
                             f"got {peers!r}")
        sockets = [self.socket(peer, "security.trusted_peers") for peer in peers]
        udp = self.string(table, "udp_trust", "security.udp_trust", UDP_TRUST[0])
        if udp not in UDP_TRUST:
            raise self.error("security.udp_trust", "expected one of " + ", ".join(UDP_TRUST)
                             + f", got {udp!r}")
        switch = self.string(table, "transport_switch", "security.transport_switch",
                             TRANSPORT_SWITCH[0])
        if switch not in TRANSPORT_SWITCH:
            raise self.error("security.transport_switch", "expected one of "
                             + ", ".join(TRANSPORT_SWITCH) + f", got {switch!r}")
        return SecurityConfig(tuple(sockets), udp, switch)

    def socket(self, value: Any, name: str) -> tuple[str, int]:
        """``HOST:PORT`` or ``[IPV6]:PORT``."""
        text = value if isinstance(value, str) else ""
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            host = ""  # an IPv6 address needs brackets
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not _is_host(host):
            raise self.error(name, f'expected "HOST:PORT" (IPv6 as "[ADDR]:PORT"), '
                             f"got {value!r}")
        return host, int(port)

    def messaging(self) -> MessagingConfig:
        table = self.table("messaging")
        self.keys(table, ("deferred_ttl", "max_file_size", "max_stored_file_size"),
                  "messaging.")
        return MessagingConfig(
            self.integer(table, "deferred_ttl", "messaging.deferred_ttl",
                         DEFERRED_TTL, 1, 2**31 - 1),
            self.integer(table, "max_file_size", "messaging.max_file_size", 0, 0, 2**62),
            self.integer(table, "max_stored_file_size", "messaging.max_stored_file_size",
                         MAX_STORED_FILE_SIZE, 0, 2**62))

    def telephony(self) -> TelephonyConfig:
        table = self.table("telephony")
        self.keys(table, ("no_answer_after", "max_diversions", "park_orbits", "park_timeout"),
                  "telephony.")
        first, last = self.orbits(table)
        return TelephonyConfig(
            self.integer(table, "no_answer_after", "telephony.no_answer_after", 20, 1, 3600),
            self.integer(table, "max_diversions", "telephony.max_diversions", 5, 1, 20),
            first, last,
            self.integer(table, "park_timeout", "telephony.park_timeout", 120, 1, 86400))

    def orbits(self, table: Mapping[str, Any]) -> tuple[int, int]:
        orbits = table.get("park_orbits", [701, 799])
        if not isinstance(orbits, list) or len(orbits) != 2 or \
                not all(isinstance(o, int) and not isinstance(o, bool) for o in orbits) or \
                not 0 <= orbits[0] <= orbits[1] <= 999999:
            raise self.error("telephony.park_orbits", "expected [FIRST, LAST] with "
                             f"0 <= FIRST <= LAST <= 999999, got {orbits!r}")
        return orbits[0], orbits[1]

    def conference(self) -> ConferenceConfig:
        table = self.table("conference")
        self.keys(table, ("idle_timeout",), "conference.")
        return ConferenceConfig(self.integer(table, "idle_timeout", "conference.idle_timeout",
                                             300, 0, 2**31 - 1))

    def media_server(self) -> MediaServerConfig:
        table = self.table("media_server")
        base = MediaServerConfig()
        ports = table.get("rtp_ports", [base.rtp_start, base.rtp_stop])
        if not isinstance(ports, list) or len(ports) != 2 or \
                not all(isinstance(p, int) and not isinstance(p, bool) for p in ports) or \
                not 1024 <= ports[0] < ports[1] - 1 <= 65535:
            raise self.error("media_server.rtp_ports", "expected [START, STOP] with "
                             f"1024 <= START < STOP - 1 <= 65535, got {ports!r}")
        return MediaServerConfig(
            ports[0], ports[1],
            self.string(table, "moh_file", "media_server.moh_file", ""),
            self.string(table, "announcements", "media_server.announcements", ""))

    def seconds(self, table: Mapping[str, Any], key: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value <= 86400:
            raise self.error(f"limits.{key}", f"expected seconds 0-86400, got {value!r}")
        return float(value)

    def limits(self) -> LimitsConfig:
        table = self.table("limits")
        sip, overload = Limits(), OverloadPolicy()
        sizes = ("max_headers", "max_header_length", "max_header_size", "max_body_size",
                 "max_connections", "max_connections_per_source")
        times = ("message_timeout", "idle_timeout")
        self.keys(table, (*sizes, *times, "msrp_idle_timeout", "max_transactions",
                          "max_queue_delay", "retry_after"), "limits.")
        counts: dict[str, Any] = {k: self.integer(table, k, f"limits.{k}", getattr(sip, k),
                                                  1, 2**31 - 1) for k in sizes}
        seconds: dict[str, Any] = {k: self.seconds(table, k, getattr(sip, k) or 0.0)
                                   for k in times}
        sip = replace(sip, **counts, **seconds)
        overload = OverloadPolicy(
            max_transactions=self.integer(table, "max_transactions", "limits.max_transactions",
                                          overload.max_transactions, 1, 2**31 - 1),
            max_queue_delay=self.seconds(table, "max_queue_delay", overload.max_queue_delay),
            retry_after=self.integer(table, "retry_after", "limits.retry_after",
                                     overload.retry_after, 0, 2**31 - 1))
        return LimitsConfig(sip, overload,
                            self.seconds(table, "msrp_idle_timeout", 300.0))

    def server(self, value: Any, name: str, config: Config) -> str:
        """An AS reference: a node name or a SIP URI."""
        if isinstance(value, str) and value in config.nodes:
            return config.nodes[value].uri
        if isinstance(value, str) and value.lower().startswith(("sip:", "sips:")):
            return value
        raise self.error(name, "expected a SIP URI or a node name ("
                         + ", ".join(NODE_NAMES) + f"), got {value!r}")

    def array(self, key: str) -> list[Any] | None:
        value = self.data.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, dict) for v in value)):
            raise self.error(key, f"expected an array of tables ([[{key}]])")
        return value

    def ifcs(self, config: Config) -> tuple[InitialFilterCriteria, ...]:
        tables = self.array("ifc")
        if tables is None:
            return default_ifcs(config.messaging_as.uri, config.conference_as.uri,
                                config.telephony_as)
        out = []
        for i, table in enumerate(tables):
            table = dict(table)
            server = table.get("application_server")
            if isinstance(server, str):
                table["application_server"] = self.server(
                    server, f"ifc[{i}].application_server", config)
            elif isinstance(server, dict) and "server_name" in server:
                table["application_server"] = dict(server, server_name=self.server(
                    server["server_name"], f"ifc[{i}].application_server.server_name", config))
            try:
                out.append(InitialFilterCriteria.from_dict(table))
            except IfcError as exc:
                raise self.error(f"ifc[{i}]", str(exc)) from None
        priorities = [i.priority for i in out]
        if len(set(priorities)) != len(priorities):
            raise self.error("ifc", f"priorities must be unique, got {priorities}")
        return tuple(out)

    def psis(self, config: Config) -> tuple[Psi, ...]:
        tables = self.array("psi")
        if tables is None:
            return default_psis(config.domain, config.conference_as.uri,
                                config.media_server.uri)
        return tuple(self.psi(table, f"psi[{i}]", config) for i, table in enumerate(tables))

    def psi(self, table: Mapping[str, Any], name: str, config: Config) -> Psi:
        self.keys(table, ("pattern", "application_server", "kind"), f"{name}.")
        pattern = self.string(table, "pattern", f"{name}.pattern", "")
        if not pattern.lower().startswith(("sip:", "sips:", "tel:")) and \
                table.get("kind") != "regex":
            raise self.error(f"{name}.pattern", f"expected a sip: or tel: URI pattern, "
                             f"got {pattern!r}")
        server = self.server(table.get("application_server"),
                             f"{name}.application_server", config)
        guessed = "wildcard" if ("*" in pattern or "!" in pattern) else "exact"
        kind = table.get("kind", guessed)
        if kind not in ("exact", "wildcard", "regex"):
            raise self.error(f"{name}.kind", f"expected exact, wildcard or regex, got {kind!r}")
        if kind == "regex":
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.error(f"{name}.pattern", f"bad regular expression: {exc}") from None
        return Psi(pattern, server, PsiKind(kind))


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(text))
