"""The trace's pieces on their own: labels, MSRP framing, the feed's back-pressure,
the pcapng writer read back by tshark (IPv6, a message over several segments)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from imsbox.trace.feed import MsrpFramer, TraceFeed, attach
from imsbox.trace.ladder import Ladder
from imsbox.trace.pcap import MAX_SEGMENT, write_pcap
from imsbox.trace.record import Hello, NodeInfo, TraceRecord
from imsbox.trace.summary import describe

A, B, C = ("127.0.0.1", 5060), ("127.0.0.1", 5070), ("::1", 5080)


def record(data: bytes, node: str = "pcscf", direction: str = "out", proto: str = "sip",
           transport: str = "udp", local: tuple[str, int] = A,
           remote: tuple[str, int] = B, seq: int = 1, t: float = 1.0) -> TraceRecord:
    return TraceRecord(seq, t, 1_700_000_000.0 + t, node, direction, proto, transport,
                       local, remote, data)


def sip(start: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [start, "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1", "From: <sip:alice@ims.test>;tag=1",
             "To: <sip:bob@ims.test>", "Call-ID: c1", "CSeq: 1 " + (
                 start.split()[0] if not start.startswith("SIP/") else headers.pop("_m", "MESSAGE")),
             "Max-Forwards: 70"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CPIM = (b"From: <sip:alice@ims.test>\r\nTo: <sip:bob@ims.test>\r\n\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\n\r\nHello")
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
CONF = (b'<?xml version="1.0"?><conference-info xmlns="urn:ietf:params:xml:ns:conference-info"'
        b' entity="sip:conf-1@ims.test" state="full" version="3"></conference-info>')


@pytest.mark.parametrize(("data", "label"), [
    (sip("MESSAGE sip:bob@ims.test SIP/2.0", {"Content-Type": "message/cpim"}, CPIM),
     "MESSAGE cpim 'Hello'"),
    (sip("INVITE sip:bob@ims.test SIP/2.0", {"Content-Type": "application/sdp"}, SDP),
     "INVITE sdp audio"),
    (sip("NOTIFY sip:bob@ims.test SIP/2.0", {"Event": "conference",
                                             "Subscription-State": "active",
                                             "Content-Type": "application/conference-info+xml"},
         CONF), "NOTIFY conference v3"),
    (sip("SIP/2.0 200 OK", {"_m": "MESSAGE"}), "200 OK (MESSAGE)"),
    (b"MSRP a1b2c3d4 SEND\r\nTo-Path: msrp://127.0.0.1:1/s1;tcp\r\n"
     b"From-Path: msrp://127.0.0.1:2/s2;tcp\r\nMessage-ID: msg1abcd\r\nByte-Range: 1-2048/5000\r\n"
     b"Content-Type: message/cpim\r\n\r\n" + b"x" * 2048 + b"\r\n-------a1b2c3d4+\r\n",
     "SEND 1-2048/5000"),
    (b"MSRP a1b2c3d4 200 OK\r\nTo-Path: msrp://127.0.0.1:2/s2;tcp\r\n"
     b"From-Path: msrp://127.0.0.1:1/s1;tcp\r\n-------a1b2c3d4$\r\n", "200 OK"),
    (b"NOT SIP AT ALL\r\n\r\n", None),
], ids=["message", "invite", "notify", "200", "send", "msrp-200", "garbage"])
def test_labels(data: bytes, label: str | None) -> None:
    proto = "msrp" if data.startswith(b"MSRP") else "sip"
    summary = describe(record(data, proto=proto))
    if label is None:
        assert summary.label.startswith("(unparsable SIP")
    else:
        assert summary.label == label


def test_msrp_framer_cuts_at_end_lines_and_joins_late() -> None:
    one = (b"MSRP t1abcd SEND\r\nTo-Path: msrp://h:1/a;tcp\r\nFrom-Path: msrp://h:2/b;tcp\r\n"
           b"Message-ID: msg2abcd\r\nByte-Range: 1-5/5\r\nContent-Type: text/plain\r\n\r\n"
           b"hello\r\n-------t1abcd$\r\n")
    two = b"MSRP t2abcd 200 OK\r\nTo-Path: msrp://h:2/b;tcp\r\nFrom-Path: msrp://h:1/a;tcp\r\n" \
        b"-------t2abcd$\r\n"
    stream = one + two
    framer = MsrpFramer()
    got = [m for i in range(0, len(stream), 7) for m in framer.feed(stream[i:i + 7])]
    assert got == [one, two]
    late = MsrpFramer()  # attached in the middle of the first message
    assert late.feed(stream[30:]) == [two]


async def test_feed_costs_nothing_unattended_and_drops_for_a_slow_reader(tmp_path: Path) -> None:
    feed = await TraceFeed(tmp_path / "f.sock", high_water=64 * 1024).start()
    try:
        feed.add_node("pcscf", [("udp", "127.0.0.1", 5060)])
        tracer = feed.sip_tracer("pcscf")

        class Flow:
            transport, local, remote, conn_id = "udp", A, B, None
        tracer("out", b"x" * 100, Flow())
        assert feed.published == 0  # nobody attached: nothing encoded, nothing kept
        reader, writer = await asyncio.open_unix_connection(str(feed.path))
        async with asyncio.timeout(2):
            while not feed.attached:
                await asyncio.sleep(0.01)
        for _ in range(3000):  # ~3 MB at a reader that does not read yet
            tracer("out", b"x" * 1000, Flow())
        assert feed.published == 3000 and feed.dropped > 0
        paths, events = await attach([feed.path])
        first = await anext(events)
        assert isinstance(first, Hello) and first.nodes[0].role == "pcscf"
        tracer("out", b"y", Flow())
        got = await anext(events)
        assert isinstance(got, TraceRecord) and got.data == b"y"
        await events.aclose()
        writer.close()
    finally:
        await feed.close()
    assert not (tmp_path / "f.sock").exists()


def tshark(path: Path, *args: str) -> str:
    done = subprocess.run(["tshark", "-r", str(path), *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pcap_ipv6_udp_and_tcp_over_segments(tmp_path: Path) -> None:
    """IPv6 UDP, and a TCP SIP message larger than a segment; both ends traced
    (out by the sender, in by the receiver) but written once."""
    ladder = Ladder()
    big = sip("MESSAGE sip:bob@ims.test SIP/2.0", {"Content-Type": "text/plain"},
              b"z" * (MAX_SEGMENT + 5000))
    small = sip("MESSAGE sip:bob@ims.test SIP/2.0", {"Content-Type": "text/plain"}, b"hi")
    reply = sip("SIP/2.0 200 OK", {"_m": "MESSAGE"})
    v6 = ("::1", 40000)
    records = [record(small, transport="udp", local=v6, remote=C, seq=1, t=1.0),
               record(small, node="scscf", direction="in", transport="udp", local=C,
                      remote=v6, seq=2, t=1.001),
               record(big, transport="tcp", local=("127.0.0.1", 41000), remote=B, seq=3, t=1.1),
               record(big, node="scscf", direction="in", transport="tcp", local=B,
                      remote=("127.0.0.1", 41000), seq=4, t=1.2),
               record(reply, node="scscf", transport="tcp", local=B,
                      remote=("127.0.0.1", 41000), seq=5, t=1.3)]
    for r in records:
        ladder.add(r)
    assert len(ladder.arrows) == 3
    path = tmp_path / "t.pcapng"
    with path.open("wb") as fh:
        assert write_pcap(ladder.ordered(), fh) == 3
    assert tshark(path, "-Y", "_ws.malformed") == ""
    methods = tshark(path, "-Y", "sip", "-T", "fields", "-e", "ipv6.src", "-e", "sip.Method",
                     "-e", "sip.Status-Code").split("\n")
    rows = [m.split("\t") for m in methods if m.strip()]
    assert rows == [["::1", "MESSAGE", ""], ["", "MESSAGE", ""], ["", "", "200"]]
    follow = tshark(path, "-q", "-z", "follow,tcp,raw,0")
    assert follow.count("\n") > 3 and "Node 0: 127.0.0.1:41000" in follow


def test_tui_state_keys_and_views() -> None:
    """The terminal UI's state without curses: follow, select, group, message view."""
    import curses

    from imsbox.trace.tui import TuiState

    ladder = Ladder()
    ladder.feed(Hello(1, (NodeInfo("pcscf", (("udp", *A),)), NodeInfo("scscf", (("udp", *B),)))))
    one = sip("MESSAGE sip:bob@ims.test SIP/2.0", {"Content-Type": "text/plain"}, b"one")
    two = one.replace(b"Call-ID: c1", b"Call-ID: c2").replace(b"one", b"two")
    for i, data in enumerate((one, two)):
        ladder.add(record(data, seq=i, t=1.0 + i))
    state = TuiState(ladder)
    lines = state.lines(200, 20)
    assert "2 messages" in lines[0][0] and "P-CSCF" in lines[1][0] and "S-CSCF" in lines[1][0]
    assert [hl for _, hl in lines[2:]] == [False, True]  # following the newest
    assert "#2" in lines[3][0] and "MESSAGE text 'two'" in lines[3][0]
    state.key(curses.KEY_UP, 20)
    assert [hl for _, hl in state.lines(200, 20)[2:]] == [True, False]
    state.key(ord("g"), 20)  # only c1's group
    lines = state.lines(200, 20)
    assert "1 messages  group 1" in lines[0][0] and len(lines) == 3
    state.key(ord("g"), 20)
    state.key(curses.KEY_HOME, 20)
    state.key(10, 20)  # Enter
    view = state.lines(200, 20)
    assert view[1][0] == "MESSAGE sip:bob@ims.test SIP/2.0" and view[-1][0] == "one"
    state.key(ord("q"), 20)  # back, not quit
    assert state.viewing is None and not state.quit
    state.key(ord("q"), 20)
    assert state.quit
