"""RFC 3261 message parsing: start lines, framing, header grammar, errors."""

import pytest

from imsbox.sip import ParseError, Request, Response, parse
from imsbox.sip.headers import HeaderError

BASE = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 {method}\r\n"
)


def request(method="INVITE", extra="", body="", start=None):
    start = start or f"{method} sip:bob@biloxi.example.com SIP/2.0"
    length = f"Content-Length: {len(body.encode())}\r\n" if body is not None else ""
    return f"{start}\r\n{BASE.format(method=method)}{extra}{length}\r\n{body}".encode()


def test_request_round_trip():
    data = request(body="v=0\r\n", extra="Content-Type: application/sdp\r\n")
    msg = parse(data)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE" and msg.uri.user == "bob"
    assert msg.body == b"v=0\r\n"
    assert bytes(msg) == data
    assert parse(bytes(msg)).call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_response_start_line_with_spaces_in_reason():
    data = ("SIP/2.0 183 Session Progress now\r\n" + BASE.format(method="INVITE")
            + "Content-Length: 0\r\n\r\n").encode()
    msg = parse(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (183, "Session Progress now")


def test_compact_forms_map_to_long_names():
    data = (
        b"MESSAGE sip:b@x.test SIP/2.0\r\n"
        b"v: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK1\r\n"
        b"f: <sip:a@x.test>;tag=1\r\nt: <sip:b@x.test>\r\ni: cid\r\n"
        b"CSeq: 1 MESSAGE\r\nc: text/plain\r\nl: 2\r\nk: timer\r\n"
        b"m: <sip:a@[2001:db8::1]>\r\ne: gzip\r\ns: hi\r\no: presence\r\n"
        b"r: <sip:c@x.test>\r\nu: refer\r\nx: 90\r\ny: sig\r\nb: <sip:d@x.test>\r\n"
        b"a: *;audio\r\nj: *;video\r\nd: proxy\r\n\r\nhi"
    )
    msg = parse(data)
    expected = {
        "Call-ID": "cid", "Content-Type": "text/plain", "Supported": "timer",
        "Contact": "<sip:a@[2001:db8::1]>", "Content-Encoding": "gzip", "Subject": "hi",
        "Event": "presence", "Refer-To": "<sip:c@x.test>", "Allow-Events": "refer",
        "Session-Expires": "90", "Identity": "sig", "Referred-By": "<sip:d@x.test>",
        "Accept-Contact": "*;audio", "Reject-Contact": "*;video",
        "Request-Disposition": "proxy", "Content-Length": "2",
    }
    for name, value in expected.items():
        assert msg.header(name) == value, name
    assert msg.top_via.host == "[2001:db8::1]" and msg.top_via.transport == "TCP"
    assert msg.body == b"hi"


def test_folded_lines_and_repeated_headers_and_lists():
    data = request(extra=(
        "Route: <sip:p1.test;lr>,\r\n  <sip:p2.test;lr>\r\n"
        "Route: <sip:p3.test;lr>\r\n"
        "Subject: I know you're there,\r\n\tpick up the phone\r\n"
        "X-Custom: one\r\nX-custom: two\r\n"
    ))
    msg = parse(data)
    assert [str(r.uri) for r in msg.route] == [
        "sip:p1.test;lr", "sip:p2.test;lr", "sip:p3.test;lr"]
    assert msg.header("subject") == "I know you're there, pick up the phone"
    assert msg.headers.get_all("x-custom") == ["one", "two"]
    names = [n for n, _ in msg.headers]
    assert names.index("X-Custom") < names.index("X-custom")


def test_quoted_display_names_with_escapes_and_commas():
    data = request(extra='Contact: "Doe, \\"J\\"" <sip:j@h.test>;q=0.5, <sip:k@h.test>\r\n')
    msg = parse(data)
    first, second = msg.contact
    assert first.address.display_name == 'Doe, "J"'
    assert first.q == 0.5 and second.q == 1.0


def test_contact_star_and_expires():
    data = request("REGISTER", extra="Contact: *\r\nExpires: 0\r\n")
    msg = parse(data)
    assert msg.contact[0].is_star and msg.expires() == 0


def test_via_comment_and_received_rport():
    data = request(extra="").replace(
        b"branch=z9hG4bK776asdhds", b"branch=z9hG4bK776asdhds;rport;received=10.0.0.1 (c)")
    via = parse(data).top_via
    assert via.branch == "z9hG4bK776asdhds" and via.received == "10.0.0.1"
    assert via.wants_rport and via.rport is None


def test_unknown_method_kept():
    data = request("FOOBAR")
    msg = parse(data)
    assert msg.method == "FOOBAR" and bytes(msg) == data


def test_lf_only_line_ends_accepted():
    data = request().replace(b"\r\n", b"\n")
    assert parse(data).cseq.seq == 314159


@pytest.mark.parametrize("mutate,fault", [
    (lambda d: d.replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""),
     "missing Call-ID"),
    (lambda d: d.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "CSeq method"),
    (lambda d: d.replace(b"CSeq: 314159", b"CSeq: abc"), "CSeq"),
    (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: 7x"), "Max-Forwards"),
    (lambda d: d.replace(b"Content-Length: 0", b"Content-Length: 10"), "shorter than Content-Length"),
    (lambda d: d.replace(b"To: Bob", b"To: Bob\r\nTo: Carol <sip:c@x>\r\nX: Bob"), "more than one To"),
    (lambda d: d.replace(b"Via: SIP/2.0/UDP 192.0.2.1:5060", b"Via: SIP/2.0/UDP"), "Via"),
    (lambda d: d.replace(b"From: Alice <sip:alice", b"From: Alice <sip:al ice"), "From"),
    (lambda d: d.replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0",
                         b"INVITE sip:bob@biloxi.example.com SIP/2.0 extra"), "Request-Line"),
    (lambda d: d.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n"), "malformed header line"),
])
def test_malformed_requests_name_the_fault(mutate, fault):
    with pytest.raises(ParseError) as info:
        parse(mutate(request()))
    assert fault in info.value.reason
    assert info.value.status == 400


def test_partial_message_allows_a_400():
    data = request().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    with pytest.raises(ParseError) as info:
        parse(data)
    partial = info.value.partial
    reply = Response.for_request(partial, 400, "Bad Request - " + info.value.reason)
    assert reply.call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_wrong_version_is_505_and_long_uri_is_414():
    with pytest.raises(ParseError) as info:
        parse(request(start="INVITE sip:bob@b.test SIP/7.0"))
    assert info.value.status == 505
    with pytest.raises(ParseError) as info:
        parse(request(start="INVITE sip:" + "a" * 5000 + "@b.test SIP/2.0"))
    assert info.value.status == 414


def test_extra_datagram_bytes_after_body_are_dropped():
    data = request(body="abc") + b"garbage"
    assert parse(data).body == b"abc"


def test_typed_cache_follows_header_edits():
    msg = parse(request())
    assert len(msg.via) == 1
    msg.push_header("Via", "SIP/2.0/TCP proxy.test;branch=z9hG4bKp")
    assert [v.host for v in msg.via] == ["proxy.test", "192.0.2.1"]
    assert msg.pop_header("Via") == "SIP/2.0/TCP proxy.test;branch=z9hG4bKp"
    assert [v.host for v in msg.via] == ["192.0.2.1"]


def test_lazy_header_errors_are_typed():
    msg = parse(request(extra="Contact: <sip:a@b;q=x\r\n"))
    with pytest.raises(HeaderError):
        msg.contact


def _options(extra: str = "", line: str = "OPTIONS sip:b@example.com SIP/2.0") -> bytes:
    return (f"{line}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlim\r\n"
            "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
            f"Call-ID: lim\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def test_header_count_limit_keeps_a_bounded_partial() -> None:
    with pytest.raises(ParseError) as info:
        parse(_options("".join(f"X{i}: y\r\n" for i in range(100))), max_headers=20)
    assert info.value.status == 400 and info.value.reason == "too many headers (over 20)"
    assert info.value.partial is not None and len(info.value.partial.headers) == 20


def test_header_length_and_section_limits() -> None:
    with pytest.raises(ParseError) as info:
        parse(_options("Subject: " + "s" * 300 + "\r\n"), max_header_length=100)
    assert info.value.status == 400 and "'Subject' longer than 100" in info.value.reason
    assert "Subject" not in info.value.partial.headers  # type: ignore[union-attr]
    with pytest.raises(ParseError) as info:
        parse(_options("X-Pad: " + "p" * 300 + "\r\n"), max_header_size=250)
    assert info.value.status == 513 and info.value.partial is not None


@pytest.mark.parametrize("line", [
    "INVITE sip:user@example.com; lr SIP/2.0",        # RFC 4475 lwsruri
    "INVITE  sip:user@example.com  SIP/2.0",          # lwsstart
    "OPTIONS sip:remote-target@example.com SIP/2.0  ",  # trws
])
def test_malformed_request_line_is_answerable(line: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(_options(line=line))
    assert info.value.bad_start_line and info.value.status == 400
    partial = info.value.partial
    assert partial is not None and partial.headers.get("Call-ID") == "lim"
