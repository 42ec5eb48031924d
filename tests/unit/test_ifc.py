"""iFC model and evaluation (TS 29.228 Annex B/C)."""

from __future__ import annotations

import pytest

from imsbox.ifc import (
    ApplicationServer, DefaultHandling, HeaderSpt, IfcError, InitialFilterCriteria, MethodSpt,
    ProfilePartIndicator, RequestUriSpt, RequestView, SdpLineSpt, SessionCase, SessionCaseSpt,
    TriggerPoint, matching_ifcs, next_ifc,
)

ORIG = SessionCase.ORIGINATING
TERM = SessionCase.TERMINATING_REGISTERED
TERM_UNREG = SessionCase.TERMINATING_UNREGISTERED
CPM_AC = ('*;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"')
SDP = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=message 7394 TCP/MSRP *\r\na=accept-types:message/cpim\r\n"


def ifc(priority: int, *spts: object, cnf: bool = True, server: str = "sip:as@127.0.0.1",
        **kw: object) -> InitialFilterCriteria:
    tp = TriggerPoint(tuple(spts), cnf=cnf) if spts else None  # type: ignore[arg-type]
    return InitialFilterCriteria(priority, ApplicationServer(server), tp, **kw)  # type: ignore[arg-type]


def req(method: str = "INVITE", uri: str = "sip:bob@ims.test",
        headers: list[tuple[str, str]] | None = None, body: str | bytes = "") -> RequestView:
    return RequestView(method, uri, headers or [], body)


def test_method_spt() -> None:
    f = ifc(1, MethodSpt("MESSAGE"))
    assert f.matches(req("MESSAGE"), ORIG)
    assert not f.matches(req("INVITE"), ORIG)


def test_request_uri_regex() -> None:
    f = ifc(1, RequestUriSpt(r"^sip:conf-[0-9]+@"))
    assert f.matches(req(uri="sip:conf-12@ims.test"), ORIG)
    assert not f.matches(req(uri="sip:bob@ims.test"), ORIG)


def test_header_presence_and_content_with_compact_forms() -> None:
    present = ifc(1, HeaderSpt("Accept-Contact"))
    content = ifc(2, HeaderSpt("accept-contact", r"oma\.cpm\.msg"))
    compact = req(headers=[("a", CPM_AC)])
    assert present.matches(compact, ORIG) and content.matches(compact, ORIG)
    other = req(headers=[("Accept-Contact", '*;+g.3gpp.icsi-ref="urn%3Aother"')])
    assert present.matches(other, ORIG) and not content.matches(other, ORIG)
    assert not present.matches(req(), ORIG)
    # any instance of a repeated header may match
    two = req(headers=[("Accept-Contact", "*;audio"), ("Accept-Contact", CPM_AC)])
    assert content.matches(two, ORIG)


def test_session_case() -> None:
    f = ifc(1, SessionCaseSpt(TERM), SessionCaseSpt(TERM_UNREG))  # CNF, one group: OR
    assert f.matches(req(), TERM) and f.matches(req(), TERM_UNREG)
    assert not f.matches(req(), ORIG)


def test_sdp_line() -> None:
    msrp = ifc(1, SdpLineSpt("m", r"^message .*TCP/MSRP"))
    any_m = ifc(2, SdpLineSpt("m"))
    assert msrp.matches(req(body=SDP), ORIG) and any_m.matches(req(body=SDP.encode()), ORIG)
    audio = req(body="v=0\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert not msrp.matches(audio, ORIG) and any_m.matches(audio, ORIG)
    assert not any_m.matches(req(body=""), ORIG)


def test_negation() -> None:
    not_register = ifc(1, MethodSpt("REGISTER", negated=True))
    assert not_register.matches(req("INVITE"), ORIG)
    assert not not_register.matches(req("REGISTER"), ORIG)
    no_header = ifc(2, HeaderSpt("P-Asserted-Service", negated=True))
    assert no_header.matches(req(), ORIG)
    assert not no_header.matches(req(headers=[("P-Asserted-Service", "x")]), ORIG)


def test_cnf_is_and_of_or_groups() -> None:
    f = ifc(1, MethodSpt("INVITE", groups=(0,)), MethodSpt("MESSAGE", groups=(0,)),
            SessionCaseSpt(ORIG, groups=(1,)), cnf=True)
    assert f.matches(req("INVITE"), ORIG)
    assert f.matches(req("MESSAGE"), ORIG)
    assert not f.matches(req("MESSAGE"), TERM)  # group 1 fails
    assert not f.matches(req("OPTIONS"), ORIG)  # group 0 fails


def test_dnf_is_or_of_and_groups() -> None:
    f = ifc(1, MethodSpt("INVITE", groups=(0,)), SessionCaseSpt(ORIG, groups=(0,)),
            MethodSpt("MESSAGE", groups=(1,)), SessionCaseSpt(TERM, groups=(1,)), cnf=False)
    assert f.matches(req("INVITE"), ORIG)
    assert f.matches(req("MESSAGE"), TERM)
    assert not f.matches(req("INVITE"), TERM)
    assert not f.matches(req("MESSAGE"), ORIG)


def test_spt_in_several_groups() -> None:
    # (INVITE or MESSAGE) and (INVITE or ORIG): the INVITE SPT sits in both groups
    f = ifc(1, MethodSpt("INVITE", groups=(0, 1)), MethodSpt("MESSAGE", groups=(0,)),
            SessionCaseSpt(ORIG, groups=(1,)))
    assert f.matches(req("INVITE"), TERM)
    assert f.matches(req("MESSAGE"), ORIG)
    assert not f.matches(req("MESSAGE"), TERM)


def test_empty_trigger_point_matches_everything() -> None:
    assert ifc(1).matches(req("BYE"), TERM_UNREG)
    assert InitialFilterCriteria(1, ApplicationServer("sip:as"), TriggerPoint()).matches(req(), ORIG)


def test_profile_part_indicator() -> None:
    reg_only = ifc(1, profile_part=ProfilePartIndicator.REGISTERED)
    unreg_only = ifc(2, profile_part=ProfilePartIndicator.UNREGISTERED)
    assert reg_only.matches(req(), TERM) and not reg_only.matches(req(), TERM_UNREG)
    assert unreg_only.matches(req(), TERM_UNREG) and not unreg_only.matches(req(), ORIG)


def test_priority_order_and_continuation() -> None:
    invite = MethodSpt("INVITE")
    ifcs = [ifc(30, invite, server="sip:c@x"), ifc(10, invite, server="sip:a@x"),
            ifc(20, MethodSpt("MESSAGE"), server="sip:b@x"), ifc(40, invite, server="sip:d@x")]
    names = lambda found: [i.application_server.server_name for i in found]  # noqa: E731
    assert names(matching_ifcs(ifcs, req("INVITE"), ORIG)) == ["sip:a@x", "sip:c@x", "sip:d@x"]
    # the AS at priority 10 returned the request: continue after it
    assert names(matching_ifcs(ifcs, req("INVITE"), ORIG, after_priority=10)) == \
        ["sip:c@x", "sip:d@x"]
    assert next_ifc(ifcs, req("INVITE"), ORIG, after_priority=30).priority == 40
    assert next_ifc(ifcs, req("INVITE"), ORIG, after_priority=40) is None
    assert next_ifc(ifcs, req("MESSAGE"), ORIG).priority == 20


def test_dict_and_json_round_trip() -> None:
    original = InitialFilterCriteria(
        5, ApplicationServer("sip:as@127.0.0.1:5090", DefaultHandling.SESSION_TERMINATED,
                             service_info="hello", include_register_request=True,
                             include_register_response=True),
        TriggerPoint((MethodSpt("REGISTER", groups=(0,)),
                      HeaderSpt("Contact", r"\+g\.3gpp", negated=True, groups=(1,)),
                      RequestUriSpt("^sip:", groups=(1, 2)),
                      SessionCaseSpt(TERM_UNREG, groups=(2,)),
                      SdpLineSpt("m", "audio", groups=(2,))), cnf=False),
        ProfilePartIndicator.UNREGISTERED, name="all")
    assert InitialFilterCriteria.from_json(original.to_json()) == original
    assert InitialFilterCriteria.from_dict(original.to_dict()) == original


def test_from_dict_defaults_and_short_forms() -> None:
    f = InitialFilterCriteria.from_dict({
        "priority": 1, "application_server": "sip:as@h",
        "trigger_point": {"spt": [{"method": "MESSAGE"}, {"session_case": "originating"}]}})
    assert f.application_server.default_handling is DefaultHandling.SESSION_CONTINUED
    assert f.trigger_point.cnf and f.trigger_point.spts[1] == SessionCaseSpt(ORIG)
    # both SPTs are in group 0, so CNF means MESSAGE or ORIGINATING
    assert f.matches(req("INVITE"), ORIG)


@pytest.mark.parametrize("doc, message", [
    ({"application_server": "sip:a"}, "ifc.priority"),
    ({"priority": -1, "application_server": "sip:a"}, "ifc.priority"),
    ({"priority": 1}, "application_server: missing"),
    ({"priority": 1, "application_server": "http://a"}, "expected a SIP URI"),
    ({"priority": 1, "application_server": {"server_name": "sip:a",
                                             "default_handling": "MAYBE"}},
     "default_handling"),
    ({"priority": 1, "application_server": "sip:a", "colour": "red"}, "unknown key"),
    ({"priority": 1, "application_server": "sip:a",
      "trigger_point": {"condition": "XNF"}}, "condition"),
    ({"priority": 1, "application_server": "sip:a",
      "trigger_point": {"spt": [{"method": "A", "header": "B"}]}}, r"spt\[0\]: give exactly one"),
    ({"priority": 1, "application_server": "sip:a",
      "trigger_point": {"spt": [{"request_uri": "(unclosed"}]}}, "bad regular expression"),
    ({"priority": 1, "application_server": "sip:a",
      "trigger_point": {"spt": [{"session_case": "SIDEWAYS"}]}}, "session_case"),
    ({"priority": 1, "application_server": "sip:a",
      "trigger_point": {"spt": [{"method": "A", "group": "x"}]}}, "group"),
    ({"priority": 1, "application_server": "sip:a",
      "trigger_point": {"spt": [{"sdp_line": "media"}]}}, "sdp_line"),
])
def test_bad_documents_name_the_field(doc: dict, message: str) -> None:
    with pytest.raises(IfcError, match=message):
        InitialFilterCriteria.from_dict(doc)


def test_bad_json() -> None:
    with pytest.raises(IfcError, match="not JSON"):
        InitialFilterCriteria.from_json("{")
    with pytest.raises(IfcError, match="object"):
        InitialFilterCriteria.from_json("[]")
