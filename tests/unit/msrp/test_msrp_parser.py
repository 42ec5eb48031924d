"""MSRP parser: seed fixtures, streaming, split at every byte, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.msrp import (BadMessage, BodyData, ByteRange, Flag, MessageEnd, MessageStart,
                         MsrpParser, MsrpRequest, MsrpResponse, MsrpUri, ParseError, Status,
                         parse)

FIXTURES = sorted((Path(__file__).parents[2] / "fixtures" / "msrp").glob("*.msrp"))


def collect(events: list) -> list[tuple]:
    """Normalise events, merging body pieces, so feeds of any split compare equal."""
    out: list[tuple] = []
    for ev in events:
        if isinstance(ev, BodyData):
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + ev.data)
            else:
                out.append(("data", ev.data))
        elif isinstance(ev, MessageStart):
            out.append(("start", bytes(ev.message)))
        elif isinstance(ev, MessageEnd):
            out.append(("end", ev.transaction_id, ev.flag))
        else:
            out.append(("bad", ev.transaction_id, ev.reason))
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_seed_fixture_round_trips(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse(raw)
    assert bytes(msg) == raw
    assert msg.to_path and msg.from_path


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_seed_fixture_split_at_every_byte(path: Path) -> None:
    raw = path.read_bytes()
    whole = collect(MsrpParser().feed(raw))
    for cut in range(1, len(raw)):
        p = MsrpParser()
        assert collect(p.feed(raw[:cut]) + p.feed(raw[cut:])) == whole, cut


def test_seed_byte_by_byte_stream_of_all_fixtures() -> None:
    stream = b"".join(p.read_bytes() for p in FIXTURES)
    p = MsrpParser()
    events = []
    for i in range(len(stream)):
        events += p.feed(stream[i : i + 1])
    starts = [e for e in events if isinstance(e, MessageStart)]
    assert len(starts) == len(FIXTURES)
    assert collect(events) == collect(MsrpParser().feed(stream))


def test_seed_001_hello_fields() -> None:
    msg = parse((FIXTURES[0].parent / "001_03_send_hello_cpim.msrp").read_bytes())
    assert isinstance(msg, MsrpRequest)
    assert msg.method == "SEND" and msg.transaction_id == "RgGcYXJW2nHr"
    assert msg.message_id == "ZNsPlykpMApIABRrejarbO37ADMMae"
    assert msg.byte_range == ByteRange(1, len(msg.body), len(msg.body))
    assert msg.content_type == "message/cpim"
    assert msg.success_report is False and msg.failure_report == "yes"
    assert msg.body.endswith(b"\r\n\r\nHello") and msg.flag is Flag.COMPLETE
    assert msg.to_path[0] == MsrpUri.parse("msrp://[2001:0:0:1::2]:16000/558f02b9d0;tcp")


def test_seed_001_empty_send_and_response() -> None:
    req = parse((FIXTURES[0].parent / "001_01_empty_send.msrp").read_bytes())
    assert isinstance(req, MsrpRequest) and req.body == b"" and not req.has_body
    resp = parse((FIXTURES[0].parent / "001_04_send_hello_200.msrp").read_bytes())
    assert isinstance(resp, MsrpResponse) and resp.status == 200 and resp.comment == ""


def test_seed_003_jpeg_chunk_is_continued() -> None:
    msg = parse((FIXTURES[0].parent / "003_03_send_jpeg_chunk.msrp").read_bytes())
    assert isinstance(msg, MsrpRequest)
    assert msg.flag is Flag.CONTINUED and len(msg.body) == 2048
    assert msg.byte_range == ByteRange(1, 2048, 1049274)


HEAD = (b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s1;tcp\r\n"
        b"From-Path: msrp://b.example:2/s2;tcp\r\nMessage-ID: m1234\r\n"
        b"Content-Type: text/plain\r\n\r\n")


def body_of(raw: bytes) -> bytes:
    msg = parse(raw)
    assert isinstance(msg, MsrpRequest)
    return msg.body


@pytest.mark.parametrize("body", [
    b"",
    b"\r\n",
    b"-------t1234$",                       # no CRLF before: not an end-line
    b"x\r\n-------t1234",                    # no flag
    b"x\r\n-------t1234X\r\ny",              # wrong flag char
    b"x\r\n-------t1234$y",                  # flag not followed by CRLF
    b"x\r\n-------t12345$\r\ny",             # longer tid
    b"x\r\n-------other$\r\ny",              # another tid
    b"\r\n-------t123$\r\n",                 # shorter tid
    b"-------" * 50,
])
def test_boundary_like_text_inside_body(body: bytes) -> None:
    raw = HEAD + body + b"\r\n-------t1234$\r\n"
    assert body_of(raw) == body
    for cut in range(len(HEAD), len(raw)):
        p = MsrpParser()
        ev = collect(p.feed(raw[:cut]) + p.feed(raw[cut:]))
        assert ev[-1] == ("end", "t1234", Flag.COMPLETE)
        data = b"".join(e[1] for e in ev if e[0] == "data")
        assert data == body


def test_flags_and_pipelined_messages() -> None:
    raw = (HEAD + b"abc\r\n-------t1234+\r\n" + HEAD.replace(b"t1234", b"t5678")
           + b"def\r\n-------t5678#\r\n")
    ev = collect(MsrpParser().feed(raw))
    assert [e for e in ev if e[0] == "end"] == [("end", "t1234", Flag.CONTINUED),
                                                ("end", "t5678", Flag.ABORTED)]


def test_large_body_streams_in_pieces_without_buffering() -> None:
    p = MsrpParser()
    assert isinstance(p.feed(HEAD)[0], MessageStart)
    block = b"z" * 65536
    total = 0
    for _ in range(64):
        for ev in p.feed(block):
            assert isinstance(ev, BodyData)
            total += len(ev.data)
        assert len(p._buf) < 64  # only a possible end-line prefix is held
    ev = p.feed(b"\r\n-------t1234$\r\n")
    total += sum(len(e.data) for e in ev if isinstance(e, BodyData))
    assert total == 64 * 65536 and isinstance(ev[-1], MessageEnd)


def test_report_with_status_and_lenient_header_spacing() -> None:
    raw = (b"MSRP r9n1kGgh REPORT\r\nTo-path:msrp://a.example:1/s1;tcp\r\n"
           b"From-path:msrp://b.example:2/s2;tcp\r\nMessage-ID: m1234\r\n"
           b"Byte-Range: 1-10/10\r\nStatus: 000 200 OK\r\n-------r9n1kGgh$\r\n")
    msg = parse(raw)
    assert isinstance(msg, MsrpRequest) and msg.method == "REPORT"
    assert msg.status == Status(200, "OK")


def test_byte_range_star_forms() -> None:
    assert ByteRange.parse("1-*/*") == ByteRange(1, None, None)
    assert ByteRange.parse("2049-*/1049274") == ByteRange(2049, None, 1049274)
    assert str(ByteRange(1, 0, 0)) == "1-0/0"
    for bad in ("0-1/1", "5-3/10", "1-20/10", "a-b/c", "1-2", ""):
        with pytest.raises(ParseError):
            ByteRange.parse(bad)


@pytest.mark.parametrize("raw, reason", [
    (b"MSRP t1234 SEND\r\nFrom-Path: msrp://b.example:2/s;tcp\r\nTo-Path: msrp://a.example:1/s;tcp\r\n"
     b"Message-ID: m1234\r\n-------t1234$\r\n", "To-Path and From-Path"),
    (b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s;tcp\r\nFrom-Path: msrp://b.example:2/s;tcp\r\n"
     b"Message-ID: m1234\r\nByte-Range: 1-x/3\r\n-------t1234$\r\n", "Byte-Range"),
    (b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s;tcp\r\nFrom-Path: msrp://b.example:2/s;tcp\r\n"
     b"Message-ID: m1234\r\n\r\nbody\r\n-------t1234$\r\n", "Content-Type"),
    (b"MSRP t1234 SEND\r\nTo-Path: http://a.example:1/s;tcp\r\nFrom-Path: msrp://b.example:2/s;tcp\r\n"
     b"Message-ID: m1234\r\n-------t1234$\r\n", "scheme"),
    (b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s;tcp\r\nFrom-Path: msrp://b.example:2/s;tcp\r\n"
     b"Success-Report: maybe\r\nMessage-ID: m1234\r\n-------t1234$\r\n", "Success-Report"),
    (b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s;tcp\r\nbroken header\r\n-------t1234$\r\n",
     "malformed header"),
])
def test_bad_framed_message_yields_bad_message_then_recovers(raw: bytes, reason: str) -> None:
    good = HEAD.replace(b"t1234", b"t9999") + b"ok\r\n-------t9999$\r\n"
    p = MsrpParser()
    events = p.feed(raw + good)
    bad = [e for e in events if isinstance(e, BadMessage)]
    assert len(bad) == 1 and bad[0].transaction_id == "t1234" and reason in bad[0].reason
    assert isinstance(events[-1], MessageEnd) and events[-1].transaction_id == "t9999"
    with pytest.raises(ParseError, match=reason):
        parse(raw)


@pytest.mark.parametrize("raw, reason", [
    (b"HTTP/1.1 200 OK\r\n", "start line"),
    (b"MSRP ab SEND\r\n", "transaction id"),
    (b"MSRP " + b"x" * 2000, "line longer"),
])
def test_unrecoverable_framing_raises(raw: bytes, reason: str) -> None:
    p = MsrpParser()
    with pytest.raises(ParseError, match=reason):
        p.feed(raw)
    with pytest.raises(ParseError):
        p.feed(b"MSRP abcd SEND\r\n")  # the connection is done


def test_header_size_limit() -> None:
    p = MsrpParser(max_header_size=256)
    with pytest.raises(ParseError, match="exceeds 256") as info:
        p.feed(b"MSRP t1234 SEND\r\nTo-Path: msrp://a.example:1/s;tcp\r\n" + b"X-Pad: " + b"a" * 300)
    assert info.value.transaction_id == "t1234"


def test_events_before_a_fault_are_kept() -> None:
    p = MsrpParser()
    with pytest.raises(ParseError) as info:
        p.feed(HEAD + b"ok\r\n-------t1234$\r\nGARBAGE\r\n")
    assert isinstance(info.value.events[-1], MessageEnd)


def test_parse_rejects_partial_and_multiple() -> None:
    with pytest.raises(ParseError, match="incomplete"):
        parse(HEAD + b"abc")
    with pytest.raises(ParseError, match="more than one"):
        parse(HEAD + b"a\r\n-------t1234$\r\n" + HEAD + b"b\r\n-------t1234$\r\n")
    with pytest.raises(ParseError, match="no MSRP message"):
        parse(b"")


def test_serialize_response_with_comment() -> None:
    r = MsrpResponse("abcd", [("To-Path", "msrp://a.example:1/s;tcp"),
                              ("From-Path", "msrp://b.example:2/s;tcp")], 481, "Session Does Not Exist")
    assert parse(bytes(r)) == r
