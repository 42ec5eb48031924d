from __future__ import annotations

import pytest

from imsbox.content import ContentError, SipFrag, parse_sipfrag


@pytest.mark.parametrize(
    "data, code, final",
    [(b"SIP/2.0 100 Trying\r\n", 100, False), (b"SIP/2.0 200 OK\r\n", 200, True),
     (b"SIP/2.0 603 Declined\r\n", 603, True)],
)
def test_refer_notify_status_lines(data, code, final):
    frag = parse_sipfrag(data)
    assert frag.status_code == code and frag.is_final is final
    assert frag.headers == [] and frag.body is None
    assert frag.to_bytes() == data


def test_build_status_fragment():
    assert SipFrag.status(200, "OK").to_bytes() == b"SIP/2.0 200 OK\r\n"
    assert SipFrag.status(200, "OK").is_success
    frag = SipFrag.status(180, "Ringing", [("Contact", "<sip:bob@host.example.com>")])
    assert frag.to_bytes() == b"SIP/2.0 180 Ringing\r\nContact: <sip:bob@host.example.com>\r\n"


def test_status_with_headers_and_body_round_trip():
    data = (b"SIP/2.0 200 OK\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n"
            b"Call-ID: 4802029847@biloxi.example.com\r\nContent-Type: text/plain\r\n\r\nhello")
    frag = parse_sipfrag(data)
    assert frag.reason == "OK"
    assert dict(frag.headers)["Call-ID"] == "4802029847@biloxi.example.com"
    assert frag.body == b"hello"
    assert frag.to_bytes() == data


def test_request_line_and_headers_only_fragments():
    frag = parse_sipfrag(b"INVITE sip:alice@atlanta.com SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n")
    assert (frag.method, frag.request_uri, frag.status_code) == ("INVITE", "sip:alice@atlanta.com", None)
    assert frag.to_bytes() == b"INVITE sip:alice@atlanta.com SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n"
    only = parse_sipfrag(b"From: Alice <sip:alice@atlanta.com>\r\nSubject: Where?\r\n")
    assert only.status_code is None and only.method is None
    assert only.headers[1] == ("Subject", "Where?")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty sipfrag"),
        (b"SIP/2.0 99 Odd\r\n", "does not start"),
        (b"SIP/2.0 800 Bad\r\n", "does not start"),
        (b"hello world\r\n", "does not start"),
        (b"SIP/2.0 200 OK\r\nnot a header\r\n", "malformed sipfrag header"),
        (b"SIP/2.0 200 \xff\r\n", "not UTF-8"),
    ],
)
def test_errors(data, reason):
    with pytest.raises(ContentError, match=reason):
        parse_sipfrag(data)


def test_build_errors():
    with pytest.raises(ContentError, match="invalid sipfrag status line"):
        SipFrag.status(42, "Nope")
    with pytest.raises(ContentError, match="line break"):
        SipFrag.status(200, "OK", [("X", "a\r\nb")])
