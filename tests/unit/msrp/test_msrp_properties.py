"""Hypothesis properties: any split parses alike, any chunk order reassembles, fuzz raises only ParseError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imsbox.msrp import (BodyData, ConnectionCore, MessageEnd, MsrpParser, MsrpUri, ParseError,
                         SessionCore, parse)
from imsbox.msrp.session import MessageReceived

HEAD = (b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s1;tcp\r\n"
        b"From-Path: msrp://b.example:2/s2;tcp\r\nMessage-ID: m1234\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n")
TAIL = b"\r\n-------t1234$\r\n"
NASTY = st.sampled_from([b"\r\n", b"-------", b"t1234", b"$", b"\r\n-------t1234", b"+", b"x"])


@settings(max_examples=200, deadline=None)
@given(body=st.lists(st.one_of(NASTY, st.binary(max_size=20)), max_size=30).map(b"".join),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_random_feed_boundaries_give_same_body(body: bytes, cuts: list[int]) -> None:
    if b"\r\n-------t1234" in b"\r\n" + body:
        body = body.replace(b"t1234", b"T1234")  # the sender would pick another tid
        if b"\r\n-------t1234" in b"\r\n" + body:
            return
    raw = HEAD + body + TAIL
    p = MsrpParser()
    events = []
    prev = 0
    for c in [*sorted(set(min(c, len(raw)) for c in cuts)), len(raw)]:
        events += p.feed(raw[prev:c])
        prev = c
    assert b"".join(e.data for e in events if isinstance(e, BodyData)) == body
    assert isinstance(events[-1], MessageEnd)


def pair() -> tuple[SessionCore, SessionCore, ConnectionCore]:
    a = MsrpUri.parse("msrp://a.example:1/sa;tcp")
    b = MsrpUri.parse("msrp://b.example:2/sb;tcp")
    tx = SessionCore([a], [b])
    rx = SessionCore([b], [a])
    conn = ConnectionCore(lambda u: rx if u.session_id == "sb" else None)
    return tx, rx, conn


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(min_size=0, max_size=3000),
       size=st.integers(min_value=1, max_value=700),
       data=st.data())
def test_chunks_in_any_order_with_duplicates_reassemble(payload: bytes, size: int, data) -> None:
    tx, rx, conn = pair()
    msg = tx.new_message("application/octet-stream", len(payload))
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    wires = [b"".join(tx.chunk(msg, p, last=i == len(pieces) - 1, now=0))
             for i, p in enumerate(pieces)]
    order = data.draw(st.permutations(range(len(wires))))
    dups = data.draw(st.lists(st.sampled_from(range(len(wires))), max_size=4))
    got = []
    for i in list(order) + dups:
        got += [e for _, e in conn.receive_data(wires[i]) if isinstance(e, MessageReceived)]
    assert len(got) == 1
    assert got[0].message.sink.body == payload  # type: ignore[attr-defined]
    assert got[0].message.size == len(payload)


@settings(max_examples=300, deadline=None)
@given(blob=st.one_of(st.binary(max_size=300),
                      st.lists(st.sampled_from([
                          b"MSRP ", b"abcd ", b"SEND", b"200", b" OK", b"\r\n", b"To-Path: ",
                          b"From-Path: ", b"msrp://h:1/s;tcp", b"msrp://[::1]:2/x;tcp", b":",
                          b"Byte-Range: ", b"1-*/*", b"Content-Type: a/b", b"-------abcd",
                          b"$", b"#", b"\xff", b"Status: 000 200", b"Message-ID: m1"]),
                          max_size=30).map(b"".join)),
       split=st.integers(min_value=0, max_value=300))
def test_fuzzed_input_raises_only_parse_error(blob: bytes, split: int) -> None:
    try:
        parse(blob)
    except ParseError as e:
        assert e.reason
    p = MsrpParser(max_header_size=200)
    try:
        p.feed(blob[:split])
        p.feed(blob[split:])
    except ParseError as e:
        assert e.reason
    tx, rx, conn = pair()
    try:
        conn.receive_data(blob)
    except ParseError as e:
        assert e.reason
