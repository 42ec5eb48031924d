"""``imsbox trace --pcap`` against a live tshark capture of the same traffic.

The loopback network runs with its trace feed; alice and bob register; then a
live capture of every node's SIP port and every MSRP listening port (as in
test_messaging_tshark) and ``imsbox trace --pcap`` start, alice sends a pager
message (delivery + display IMDNs) and chats with bob through the messaging AS.
Both files are read back with tshark and the same ``-d`` decode-as entries:

- SIP: the same messages - (Call-ID, method or status, CSeq method) with their
  counts - in the live capture and in the trace's pcap;
- MSRP: the same (transaction id, method or status) in the trace's pcap as in the
  live capture cut into one message per segment (tshark 4.0 decodes only the
  first MSRP message of a segment);
- the trace's pcap has no malformed packet at all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imsbox.apps.messaging import MessagingAs
from imsbox.config import Config
from imsbox.serve import Network
from imsbox.testing import FAST_TIMERS
from imsbox.ue.client import (
    ChatEnded, ChatMessage, ChatStarted, MessageReceived, MessageStatus, RcsClient,
)

from .capture import Capture, Pcap, split_msrp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from helpers import DOMAIN, alice_and_bob


pytestmark = pytest.mark.timeout(90)
WAIT = 5.0
SRC = Path(__file__).resolve().parents[2] / "src"
SIP_FIELDS = ["sip.Call-ID", "sip.Method", "sip.Status-Code", "sip.CSeq.method"]
MSRP_FIELDS = ["msrp.request.line", "msrp.response.line"]


def client(config: Config, name: str) -> RcsClient:
    return RcsClient(name, f"{name}-secret", DOMAIN,
                     pcscf=(config.pcscf.host, config.pcscf.port), timers=FAST_TIMERS)


async def traffic(alice: RcsClient, bob: RcsClient) -> None:
    mid = await alice.send_message("bob", "pager hello", display=True)
    assert isinstance(await bob.wait_event(MessageReceived, WAIT), MessageReceived)
    assert await bob.mark_displayed(mid)
    assert await alice.wait_status(mid, MessageStatus.DISPLAYED, WAIT) is \
        MessageStatus.DISPLAYED
    chat = await alice.open_chat("bob")
    assert isinstance(await bob.wait_event(ChatStarted, WAIT), ChatStarted)
    hello = await chat.send("Hello")
    assert isinstance(await bob.wait_event(ChatMessage, WAIT), ChatMessage)
    assert await alice.wait_status(hello, timeout=WAIT) is MessageStatus.DELIVERED
    await chat.close()
    assert isinstance(await bob.wait_event(ChatEnded, WAIT), ChatEnded)
    await asyncio.sleep(0.3)


def sip_messages(pcap: Pcap) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for frame in pcap.decode(display_filter="sip", fields=SIP_FIELDS):
        call_ids = frame.get("sip.Call-ID", [])
        kinds = frame.get("sip.Method", []) + frame.get("sip.Status-Code", [])
        cseqs = frame.get("sip.CSeq.method", [])
        assert len(call_ids) == len(cseqs) == len(kinds), frame
        out.update(zip(call_ids, kinds, cseqs))
    return out


def msrp_messages(pcap: Pcap) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for frame in pcap.decode(display_filter="msrp", fields=MSRP_FIELDS):
        for line in frame.get("msrp.request.line", []) + frame.get("msrp.response.line", []):
            _, tid, what = line.split()[:3]
            out[(tid, what)] += 1
    return out


def split_streams(data: bytes) -> list[bytes]:
    return split_msrp(data) if data.startswith(b"MSRP ") else [data]


def test_trace_pcap_matches_a_live_capture(capture: Callable[..., Capture],
                                           tmp_path: Path) -> None:
    config = alice_and_bob(tmp_path)
    ours = tmp_path / "trace.pcapng"
    found: dict[str, Any] = {}

    async def main() -> None:
        alice, bob = client(config, "alice"), client(config, "bob")
        async with Network(config, timers=FAST_TIMERS, feed=True) as net:
            await alice.start()
            await bob.start()
            node = net.nodes["as"]
            assert isinstance(node, MessagingAs) and node.msrp is not None
            sip = [config.pcscf.port, config.icscf.port, config.scscf.port,
                   config.messaging_as.port, config.conference_as.port]
            msrp = [node.msrp.port, alice._msrp.port, bob._msrp.port]
            decode = [f"{p}.port=={n},sip" for n in sip for p in ("udp", "tcp")] + \
                [f"tcp.port=={n},msrp" for n in msrp]
            found["decode"] = decode
            env = {**os.environ, "PYTHONPATH": str(SRC)}
            with capture(ports=sip + msrp, decode_as=decode) as cap:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "imsbox.cli", "trace", "--data",
                    str(config.data_dir), "--pcap", str(ours),
                    stderr=asyncio.subprocess.PIPE, env=env)
                assert proc.stderr is not None
                assert b"attached" in await asyncio.wait_for(proc.stderr.readline(), 20)
                assert net.trace_feed is not None
                async with asyncio.timeout(5):
                    while not net.trace_feed.attached:
                        await asyncio.sleep(0.01)
                await traffic(alice, bob)
                proc.send_signal(signal.SIGINT)
                assert await proc.wait() == 0
            found["cap"] = cap
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(main(), 70))
    live: Capture = found["cap"]
    trace = Pcap(ours, found["decode"])
    assert trace.malformed() == []
    live_sip, trace_sip = sip_messages(live), sip_messages(trace)
    assert sum(live_sip.values()) > 40
    assert trace_sip == live_sip
    live_msrp = msrp_messages(live.resegment(split_streams))
    assert live_msrp and msrp_messages(trace) == live_msrp
