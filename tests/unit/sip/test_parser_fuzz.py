"""Fuzzing the SIP parser: bad input raises ParseError and nothing else."""

from hypothesis import HealthCheck, given, settings, strategies as st

from imsbox.sip import ParseError, parse
from imsbox.sip.headers import HeaderError

VALID = (
    b"INVITE sip:bob@[2001:db8::1]:5060;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP pc33.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@b.test>\r\n'
    b"f: <sip:alice@a.test>;tag=1928301774\r\n"
    b"i: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"m: <sip:alice@pc33.example.com>;+g.3gpp.icsi-ref=\"urn%3Aa\"\r\n"
    b"Route: <sip:p1.test;lr>, <sip:p2.test;lr>\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n\r\nv=0\n"
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(message):
    """Touch every typed view a layer might read; only typed errors may escape."""
    for view in ("via", "from_", "to", "cseq", "contact", "route", "record_route",
                 "content_type", "max_forwards"):
        try:
            getattr(message, view)
        except HeaderError:
            pass
    reparsed = parse(bytes(message))
    assert reparsed.call_id == message.call_id
    assert reparsed.body == message.body


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    try:
        message = parse(data)
    except ParseError:
        return
    exercise(message)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=0, max_size=3)),
                min_size=1, max_size=6))
def test_mutated_valid_message(edits):
    data = bytearray(VALID)
    for pos, replacement in edits:
        pos = min(pos, len(data))
        data[pos:pos + 1] = replacement
    try:
        message = parse(bytes(data))
    except ParseError as exc:
        assert exc.reason and exc.status in (400, 414, 505)
        return
    exercise(message)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=80))
def test_any_header_value(value):
    data = VALID.replace(b"\r\n\r\n", b"\r\nX-Fuzz: " + value.encode() + b"\r\n\r\n", 1)
    data = data.replace(b'"Bob"', value.encode()[:20])
    try:
        message = parse(data)
    except ParseError:
        return
    exercise(message)
