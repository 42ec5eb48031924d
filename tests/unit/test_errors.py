"""The error trees: one root per layer, local misuse vs remote protocol error.

Errors are raised by the real parsers and state machines; a remote error says
what a server should answer (``status``), a local one never does.
"""

from __future__ import annotations

import pytest

from imsbox import content, msrp, sdp, sip
from imsbox.content.xmlsafe import parse_xml
from imsbox.errors import ImsboxError, LocalProtocolError, RemoteProtocolError
from imsbox.rcs.errors import CpmError, CpmProtocolError
from imsbox.sip.auth import DigestError
from imsbox.sip.grammar import GrammarError
from imsbox.sip.headers import Contact
from imsbox.sip.ua.dialog import DialogError
from imsbox.sip.ua.invite import InviteSession, SessionError

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
          b"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n"
          b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
          b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")

TREES = [
    (sip.SipError, sip.SipUsageError, sip.SipProtocolError),
    (sdp.SdpError, sdp.SdpUsageError, sdp.SdpProtocolError),
    (msrp.MsrpError, msrp.MsrpUsageError, msrp.MsrpProtocolError),
    (content.ContentError, content.ContentUsageError, content.ContentProtocolError),
]


@pytest.mark.parametrize(("root", "usage", "remote"), TREES, ids=lambda c: c.__name__)
def test_each_layer_has_one_root_split_into_local_and_remote(
        root: type[Exception], usage: type[Exception], remote: type[Exception]) -> None:
    assert issubclass(root, ImsboxError)
    assert issubclass(usage, root) and issubclass(usage, LocalProtocolError)
    assert issubclass(remote, root) and issubclass(remote, RemoteProtocolError)
    assert not issubclass(usage, RemoteProtocolError)
    assert not issubclass(remote, LocalProtocolError)


def test_the_rcs_layer_has_a_remote_branch_only() -> None:
    # its helpers are lenient readers with nothing to misuse locally
    assert issubclass(CpmProtocolError, CpmError) and issubclass(CpmError, ImsboxError)
    assert issubclass(CpmProtocolError, RemoteProtocolError)


def test_building_an_sdp_line_with_a_line_break_is_local_misuse() -> None:
    description = sdp.parse(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
    description.session_name = "evil\r\na=inject"
    with pytest.raises(sdp.SdpUsageError, match="CR, LF or NUL"):
        bytes(description)


def test_building_cpim_with_a_bad_header_is_local_misuse() -> None:
    with pytest.raises(content.ContentUsageError, match="cannot build CPIM"):
        content.build_cpim("text/plain", b"hi", headers=[("Bad Name", "x")])
    with pytest.raises(content.ContentUsageError):
        content.build_cpim("text/plain", b"hi", namespaces=[("imdn", "not a uri>")])
    assert content.build_cpim("text/plain", b"hi").body == b"hi"


def test_msrp_misuse_raises_msrp_usage_error() -> None:
    uri = msrp.MsrpUri.parse("msrp://127.0.0.1:2855/s1;tcp")
    from imsbox.msrp.session import SessionCore
    session = SessionCore([uri], [uri])
    with pytest.raises(msrp.MsrpUsageError, match="Failure-Report"):
        session.new_message("text/plain", 2, failure_report="sometimes")


@pytest.mark.parametrize("member", [sip.ParseError, sip.HeaderError, GrammarError, sip.UriError,
                                    DigestError, DialogError])
def test_sip_errors_from_the_wire_are_remote_and_still_value_errors(member: type) -> None:
    assert issubclass(member, sip.SipProtocolError) and issubclass(member, ValueError)


def test_a_bad_contact_carries_400_and_its_header() -> None:
    with pytest.raises(sip.HeaderError) as caught:
        Contact.parse("<sip:alice@127.0.0.1")
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.status == 400 and "Contact" in str(caught.value)


def test_the_parser_keeps_its_more_precise_status() -> None:
    with pytest.raises(sip.ParseError) as caught:
        sip.parse(INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", 1))
    assert caught.value.status == 505 and isinstance(caught.value, sip.SipProtocolError)


def test_an_unusable_offer_carries_488() -> None:
    with pytest.raises(sdp.SdpError) as caught:
        sdp.parse(b"v=0\r\no=broken\r\n")
    assert isinstance(caught.value, sdp.SdpProtocolError) and caught.value.status == 488
    assert isinstance(caught.value, ValueError)


def test_a_malformed_body_carries_400() -> None:
    with pytest.raises(content.ContentError) as caught:
        content.parse_cpim(b"no headers here")
    assert isinstance(caught.value, content.ContentProtocolError) and caught.value.status == 400
    with pytest.raises(content.XmlError) as xml:
        parse_xml(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert isinstance(xml.value, content.ContentProtocolError)


def test_malformed_msrp_is_remote_and_an_outcome_is_neither() -> None:
    with pytest.raises(msrp.ParseError) as caught:
        msrp.parse(b"MSRP x SEND\r\n-------x$\r\n")
    assert isinstance(caught.value, msrp.MsrpProtocolError) and caught.value.status == 400
    outcome = msrp.TransactionTimeout("m1")
    assert isinstance(outcome, msrp.MsrpError)
    assert not isinstance(outcome, (LocalProtocolError, RemoteProtocolError))


def test_misusing_a_session_is_local_and_has_no_status() -> None:
    session = InviteSession.incoming(sip.parse(INVITE), 0.0)
    with pytest.raises(SessionError) as caught:
        session.provisional(0.0, status=200)
    assert isinstance(caught.value, sip.SipUsageError) and isinstance(caught.value, RuntimeError)
    assert not hasattr(caught.value, "status")
