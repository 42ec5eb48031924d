"""StreamFramer: Content-Length framing of SIP over TCP/TLS (RFC 3261 18.3, RFC 5626)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imsbox.sip import Request, parse
from imsbox.sip.transport import StreamFramer, reason_phrase, should_use_tcp, Destination


def message(body: bytes = b"", call_id: str = "c1", content_length: bool = True) -> bytes:
    lines = [
        "MESSAGE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=1928301774",
        "To: <sip:bob@example.com>",
        f"Call-ID: {call_id}",
        "CSeq: 1 MESSAGE",
    ]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_one_message_in_one_feed() -> None:
    framer = StreamFramer()
    data = message(b"hello")
    assert framer.feed(data) == [data]
    assert framer.error is None and framer.buffered == 0


def test_split_at_every_byte() -> None:
    data = message(b"hello world") + message(b"", "c2")
    for cut in range(1, len(data)):
        framer = StreamFramer()
        out = framer.feed(data[:cut]) + framer.feed(data[cut:])
        assert out == [message(b"hello world"), message(b"", "c2")], cut
        assert framer.error is None


def test_byte_by_byte() -> None:
    data = message(b"x" * 50)
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(data)):
        out += framer.feed(data[i:i + 1])
    assert out == [data]


def test_several_messages_in_one_buffer() -> None:
    msgs = [message(f"body{i}".encode(), f"call-{i}") for i in range(5)]
    framer = StreamFramer()
    out = framer.feed(b"".join(msgs))
    assert out == msgs
    assert [parse(m).call_id for m in out] == [f"call-{i}" for i in range(5)]


def test_body_containing_blank_lines_is_not_split() -> None:
    body = b"line1\r\n\r\nline2\r\n\r\n"
    framer = StreamFramer()
    assert framer.feed(message(body)) == [message(body)]
    assert parse(message(body)).body == body


def test_crlf_keepalive_ping_counts_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.take_pings() == 1
    assert framer.take_pings() == 0
    data = message(b"hi")
    assert framer.feed(b"\r\n\r\n" + data + b"\r\n\r\n") == [data]
    assert framer.take_pings() == 2


def test_ping_split_across_feeds() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.take_pings() == 0
    assert framer.feed(b"\r\n") == []
    assert framer.take_pings() == 1


def test_single_crlf_pong_is_skipped() -> None:
    framer = StreamFramer()
    data = message()
    assert framer.feed(b"\r\n" + data) == [data]
    assert framer.take_pings() == 0


def test_header_limit_closes_without_answer() -> None:
    framer = StreamFramer(max_header=1024)
    out = framer.feed(b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X-Junk: " + b"a" * 2000)
    assert out == []
    assert framer.error is not None
    assert framer.error.status is None
    assert "header section exceeds 1024" in framer.error.reason
    # Once failed, the framer stays failed.
    assert framer.feed(message()) == []


def test_header_limit_with_complete_oversized_head() -> None:
    framer = StreamFramer(max_header=200)
    big = message().replace(b"Max-Forwards: 70", b"X-Pad: " + b"p" * 300)
    assert framer.feed(big) == []
    assert framer.error is not None and framer.error.status is None


def test_body_limit_gives_413_with_head() -> None:
    framer = StreamFramer(max_body=100)
    head = message(b"x" * 101)[:-101]
    assert framer.feed(head) == []
    assert framer.error is not None
    assert framer.error.status == 413
    assert framer.error.head == head
    assert "101" in framer.error.reason


def test_body_at_limit_is_fine() -> None:
    framer = StreamFramer(max_body=100)
    data = message(b"y" * 100)
    assert framer.feed(data) == [data]


def test_missing_content_length_is_400() -> None:
    framer = StreamFramer()
    data = message(b"", content_length=False)
    assert framer.feed(data) == []
    assert framer.error is not None
    assert framer.error.status == 400
    assert framer.error.reason == "missing Content-Length on stream transport"
    assert framer.error.head == data


def test_compact_content_length() -> None:
    data = message(b"abc").replace(b"Content-Length: 3", b"l:3")
    framer = StreamFramer()
    assert framer.feed(data) == [data]


def test_bad_and_conflicting_content_length() -> None:
    framer = StreamFramer()
    framer.feed(message(b"").replace(b"Content-Length: 0", b"Content-Length: ten"))
    assert framer.error is not None and framer.error.status == 400
    framer = StreamFramer()
    framer.feed(message(b"").replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 5"))
    assert framer.error is not None and "conflicting" in framer.error.reason


def test_messages_before_an_error_are_returned() -> None:
    framer = StreamFramer()
    good = message(b"ok")
    out = framer.feed(good + message(content_length=False))
    assert out == [good]
    assert framer.error is not None


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=20))
def test_arbitrary_chunking_preserves_messages(bodies: list[bytes], cuts: list[int]) -> None:
    msgs = [message(b, f"id{i}") for i, b in enumerate(bodies)]
    stream = b"\r\n\r\n".join(msgs)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    for cut in cuts:
        out += framer.feed(stream[pos:pos + cut])
        pos += cut
    out += framer.feed(stream[pos:])
    assert out == msgs
    assert all(isinstance(parse(m), Request) for m in out)


def test_reason_phrase_is_one_printable_line() -> None:
    text = reason_phrase(400, "missing Call-ID header")
    assert text == "Bad Request - missing Call-ID header"
    long = reason_phrase(400, "bad\r\nthing\x00" + "z" * 300)
    assert len(long) <= 100 and long.isprintable() and "\n" not in long


def test_should_use_tcp() -> None:
    udp = Destination("udp", "127.0.0.1", 5060)
    assert not should_use_tcp(b"x" * 1300, udp)
    assert should_use_tcp(b"x" * 1301, udp)
    assert not should_use_tcp(5000, Destination("tcp", "127.0.0.1", 5060))
