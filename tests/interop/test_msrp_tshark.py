"""Wireshark's MSRP dissector reads imsbox's MSRP traffic without complaint.

Two MsrpEndpoints on 127.0.0.1 exchange, while tshark captures loopback:
the binding empty SEND, a text message with a success REPORT, a reply, a
200 KB file in 2 KiB chunks (with a success REPORT), a 413 (message over the
peer's max size) and a 481 (unknown session).

tshark 4.0's MSRP dissector decodes only the first MSRP message of each TCP
segment (no reassembly, no loop over several messages), so the live capture
shows just the messages that happened to start a segment.  The test checks
that capture, then ``Capture.resegment(split_msrp)`` rewrites it with one
message per TCP segment, and tshark must then decode every message as MSRP,
see every chunk with the right Byte-Range, one response per SEND, both
REPORTs, and flag nothing as malformed.  See capture.py for the dissector's
quirks that the test works around.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import pytest

from imsbox.msrp import MsrpEndpoint, MsrpSession, MsrpStatusError, MsrpUri

from .capture import CaptureError, split_msrp

pytestmark = pytest.mark.timeout(60)

FILE_SIZE = 200 * 1024
CHUNK = 2048
TEXT = "Hello from imsbox over MSRP \N{GRINNING FACE}"


@dataclass
class Log:
    """What the MSRP side saw, to compare with what tshark decoded."""

    text_id: str = ""
    reply_id: str = ""
    file_id: str = ""
    text_report: object = None
    file_reports: list = field(default_factory=list)
    oversize_status: int = 0
    unknown_status: int = 0


async def pair(a: MsrpEndpoint, b: MsrpEndpoint, **kw) -> tuple[MsrpSession, MsrpSession]:
    """B passive, A active (connects and sends the binding empty SEND)."""
    sb = b.create_session(setup="passive", **kw)
    sa = a.create_session(remote_path=[sb.local_uri], setup="active")
    sb.set_remote_path([sa.local_uri])
    await sa.start()
    await sb.wait_bound(5)
    return sa, sb


async def scenario(port_a: int, port_b: int, payload: bytes) -> Log:
    log = Log()
    async with MsrpEndpoint("127.0.0.1", port_a) as a, MsrpEndpoint("127.0.0.1", port_b) as b:
        sa, sb = await pair(a, b)

        res = await sa.send_message("text/plain", TEXT, success_report=True)
        log.text_id = res.message_id
        msg = await asyncio.wait_for(sb.receive(), 5)
        assert msg.body == TEXT.encode() and msg.message_id == log.text_id
        assert len(sa.reports) == 1
        log.text_report = sa.reports[0]

        res = await sb.send_message("text/plain", b"pong")
        log.reply_id = res.message_id
        assert (await asyncio.wait_for(sa.receive(), 5)).body == b"pong"

        res = await sa.send_message("application/octet-stream", payload, success_report=True)
        log.file_id = res.message_id
        msg = await asyncio.wait_for(sb.receive(), 5)
        assert msg.size == len(payload)
        assert hashlib.sha256(msg.body).digest() == hashlib.sha256(payload).digest()
        log.file_reports = sa.reports[1:]

        # 413: a second session on the same connection, with a small max size at B
        small_a, small_b = await pair(a, b, max_size=10_000)
        with pytest.raises(MsrpStatusError) as info:
            await small_a.send_message("text/plain", b"x" * 20_000)
        log.oversize_status = info.value.status
        # still usable; its 200 also proves every earlier response was received
        await small_a.send_message("text/plain", b"small")
        assert (await asyncio.wait_for(small_b.receive(), 5)).body == b"small"

        # 481: a session towards a session id B does not know (shares the connection)
        nowhere = MsrpUri("msrp", "127.0.0.1", port_b, "nosuchsession")
        bogus = a.create_session(remote_path=[nowhere], setup="active")
        with pytest.raises(MsrpStatusError) as info:
            await bogus.start()
        log.unknown_status = info.value.status
    return log


def file_payload() -> bytes:
    """Random bytes, except no ';' in the first 10 bytes of any 2 KiB chunk: tshark
    4.0 takes such a ';' for a Content-Type parameter and reports a malformed
    packet (see capture.py)."""
    data = bytearray(os.urandom(FILE_SIZE))
    for start in range(0, FILE_SIZE, CHUNK):
        for i in range(start, min(start + 10, FILE_SIZE)):
            if data[i] == ord(";"):
                data[i] = ord(":")
    return bytes(data)


END_LINE = re.compile(rb"\r\n-------[!-~]+[+$#]\r\n\Z")


def cut_by_segment_end(cap, report: str) -> bool:
    """A live frame tshark calls malformed only because its first MSRP message
    continues in the next TCP segment (tshark 4.0 does not reassemble MSRP)."""
    frame = int(re.match(r"frame (\d+):", report).group(1))
    try:
        first = split_msrp(cap.tcp_payload(frame))[0]
    except CaptureError:  # not even an MSRP start line: a real problem
        return False
    return END_LINE.search(first) is None


FIELDS = ["frame.protocols", "msrp.request.line", "msrp.response.line", "msrp.method",
          "msrp.status.code", "msrp.to.path", "msrp.messageid", "msrp.byte.range",
          "msrp.cnt.flg", "msrp.content.type", "msrp.success.report", "msrp.status",
          "msrp.data"]


def lines(frames: list[dict]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """[(tid, method)] of the requests and [(tid, status)] of the responses decoded."""
    def split(name: str) -> list[tuple[str, str]]:
        out = []
        for v in (v for f in frames for v in f.get(name, [])):
            m = re.fullmatch(r"MSRP (\S+) (\S+)( .*)?", v.strip())
            assert m, v
            out.append((m.group(1), m.group(2)))
        return out
    return split("msrp.request.line"), split("msrp.response.line")


def one(frame: dict, name: str) -> str:
    values = frame.get(name, [])
    assert len(values) == 1, (name, frame)
    return values[0]


def test_tshark_decodes_imsbox_msrp(capture, free_port) -> None:
    port_a, port_b = free_port(), free_port()
    decode_as = [f"tcp.port=={port_a},msrp", f"tcp.port=={port_b},msrp"]
    payload = file_payload()

    with capture(ports=[port_a, port_b], tcp=True, udp=False, decode_as=decode_as) as cap:
        log = asyncio.run(asyncio.wait_for(scenario(port_a, port_b, payload), 15))

    assert log.oversize_status == 413 and log.unknown_status == 481
    assert log.text_report.status.code == 200
    assert [str(r.byte_range) for r in log.file_reports] == [f"1-{FILE_SIZE}/{FILE_SIZE}"]
    assert cap.packets, cap.stderr

    # -- the live capture: what tshark decodes as captured ------------------------------
    bad = [m for m in cap.malformed() if not cut_by_segment_end(cap, m)]
    assert bad == [], cap.summary()
    live_req, live_resp = lines(cap.decode(display_filter="msrp", fields=FIELDS))
    # the binding SEND opens the connection and the 481 exchange comes alone at the end,
    # so at least these start a TCP segment whatever the kernel did with the rest
    assert sum(m == "SEND" for _, m in live_req) >= 2, cap.summary()
    assert {"200", "481"} <= {s for _, s in live_resp}, cap.summary()

    # -- one MSRP message per TCP segment: tshark decodes all of them ------------------
    pcap = cap.resegment(split_msrp)
    assert pcap.malformed() == [], pcap.summary()
    frames = pcap.decode(fields=FIELDS)  # one frame = one message from here on
    assert frames and all("msrp" in one(f, "frame.protocols").split(":") for f in frames), \
        pcap.summary()
    requests, responses = lines(frames)
    assert len(requests) + len(responses) == len(frames)
    assert set(live_req) <= set(requests) and set(live_resp) <= set(responses)

    methods = Counter(m for _, m in requests)
    statuses = Counter(s for _, s in responses)
    n_chunks = FILE_SIZE // CHUNK  # 100
    # SENDs: 3 empty (two bindings and the bogus session), text, reply, 100 file
    # chunks, >= 1 chunk of the oversize message, the small one after it
    assert methods["SEND"] >= n_chunks + 7, methods
    assert methods["REPORT"] == 2, methods  # text and file success reports
    assert set(methods) == {"SEND", "REPORT"}, methods
    assert statuses["200"] == n_chunks + 5, statuses  # all but the oversize and bogus
    assert statuses["413"] >= 1 and statuses["481"] == 1, statuses
    assert set(statuses) == {"200", "413", "481"}, statuses
    # every SEND got exactly one response (REPORTs get none), and nothing else did
    send_tids = [t for t, m in requests if m == "SEND"]
    assert len(set(send_tids)) == len(send_tids)
    assert sorted(t for t, _ in responses) == sorted(send_tids)
    sends = [f for f in frames if f.get("msrp.method") == ["SEND"]]

    # -- the empty binding SENDs: no Content-Type, no body ------------------------------
    empty = [f for f in sends if "msrp.content.type" not in f]
    assert len(empty) == 3, empty
    assert all(one(f, "msrp.byte.range") == "1-0/0" and "msrp.data" not in f for f in empty)
    assert sum("/nosuchsession" in one(f, "msrp.to.path") for f in empty) == 1

    # -- the file: every 2 KiB chunk, in order, with the right Byte-Range and flag --------
    chunks = [f for f in sends if f.get("msrp.messageid") == [log.file_id]]
    want = [f"{i + 1}-{min(i + CHUNK, FILE_SIZE)}/{FILE_SIZE}" for i in range(0, FILE_SIZE, CHUNK)]
    assert [one(f, "msrp.byte.range") for f in chunks] == want
    assert [one(f, "msrp.cnt.flg") for f in chunks] == ["+"] * (n_chunks - 1) + ["$"]
    assert {one(f, "msrp.content.type") for f in chunks} == {"application/octet-stream"}

    # -- the success REPORTs ----------------------------------------------------------
    reports = [f for f in frames if f.get("msrp.method") == ["REPORT"]]
    size = len(TEXT.encode())
    got = sorted((one(f, "msrp.messageid"), one(f, "msrp.status"), one(f, "msrp.byte.range"))
                 for f in reports)
    assert got == sorted([(log.text_id, "000 200 OK", f"1-{size}/{size}"),
                          (log.file_id, "000 200 OK", f"1-{FILE_SIZE}/{FILE_SIZE}")])

    # -- the text message ----------------------------------------------------------------
    text = [f for f in sends if f.get("msrp.messageid") == [log.text_id]]
    assert [(one(f, "msrp.content.type"), one(f, "msrp.success.report"),
             one(f, "msrp.byte.range")) for f in text] == [
                 ("text/plain", "yes", f"1-{size}/{size}")]
