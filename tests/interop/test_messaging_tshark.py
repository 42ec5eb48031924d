"""Wireshark decodes imsbox's RCS messaging traffic without complaint.

The real IMS core and the messaging AS (Network) run on loopback with two
RcsClients registered; tshark captures the SIP ports of every node (P-CSCF,
I-CSCF, S-CSCF, messaging AS) and the MSRP ports in use (the AS's MSRP
endpoint and each UE's), which are learnt once everything is up: so the
capture starts after the REGISTERs and sees

* a pager MESSAGE (CPIM) with its delivery and display IMDNs (MESSAGEs), and
* a chat anchored by the AS: INVITE / 100 / 183 / 200 / ACK, MSRP binding
  SENDs, several CPIM messages with their IMDNs, isComposing, BYE,

on every hop (UE <-> P-CSCF <-> S-CSCF <-> AS <-> I-CSCF ..., UDP or TCP).

SIP is decoded with ``udp.port==N,sip`` / ``tcp.port==N,sip`` and MSRP with
``tcp.port==N,msrp``. tshark 4.0's MSRP dissector only decodes the first MSRP
message of each TCP segment and flags one cut by the segment's end (see
capture.py): the live capture may only have those MSRP frames flagged, and
``resegment()`` (one message per segment; SIP-over-TCP streams kept whole)
must then decode with no malformed frame at all.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imsbox.apps.messaging import MessagingAs
from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.store import open_store
from imsbox.ue.client import (
    ChatEnded, ChatMessage, ChatStarted, Composing, MessageReceived, MessageStatus, RcsClient,
)
from imsbox.testing import FAST_TIMERS, write_loopback_config

from .capture import Capture, CaptureError, Pcap, split_msrp

pytestmark = pytest.mark.timeout(60)
DOMAIN = "ims.test"
WAIT = 5.0
CHAT_LINES = ("Hello", "how are you?", "see you at 8")
SIP_FIELDS = ["sip.Method", "sip.Status-Code", "sip.CSeq.method", "sip.Call-ID",
              "sip.Via.branch"]
MSRP_FIELDS = ["frame.protocols", "msrp.request.line", "msrp.response.line", "msrp.method",
               "msrp.status.code", "msrp.content.type", "msrp.byte.range"]


@dataclass
class Ports:
    sip: list[int] = field(default_factory=list)
    msrp: list[int] = field(default_factory=list)

    @property
    def decode_as(self) -> list[str]:
        return ([f"{proto}.port=={p},sip" for p in self.sip for proto in ("udp", "tcp")]
                + [f"tcp.port=={p},msrp" for p in self.msrp])


@dataclass
class Sent:
    """What the UEs did, to compare with what tshark decoded."""

    pager_ok: bool = False
    chat_ids: list[str] = field(default_factory=list)
    reply_ok: bool = False


def network_config(tmp_path: Path) -> Config:
    path, _ = write_loopback_config(tmp_path)
    config = load_config(path)
    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(in_store())
    return config


def client(config: Config, name: str) -> RcsClient:
    pcscf = config.pcscf
    return RcsClient(name, f"{name}-secret", DOMAIN, pcscf=(pcscf.host, pcscf.port),
                     timers=FAST_TIMERS)


def ports_in_use(config: Config, net: Network, *ues: RcsClient) -> Ports:
    """Every node's SIP port; the AS's and the UEs' MSRP listening ports."""
    node = net.nodes["as"]
    assert isinstance(node, MessagingAs) and node.msrp is not None
    sip = [config.pcscf.port, config.icscf.port, config.scscf.port, config.messaging_as.port]
    return Ports(sip, [node.msrp.port, *(ue._msrp.port for ue in ues)])


async def pager(alice: RcsClient, bob: RcsClient, sent: Sent) -> None:
    mid = await alice.send_message("bob", "pager hello", display=True)
    got = await bob.wait_event(MessageReceived, WAIT)
    assert isinstance(got, MessageReceived) and got.text == "pager hello"
    assert await bob.mark_displayed(mid)
    status = await alice.wait_status(mid, MessageStatus.DISPLAYED, WAIT)
    sent.pager_ok = status is MessageStatus.DISPLAYED


async def chat(alice: RcsClient, bob: RcsClient, sent: Sent) -> None:
    session = await alice.open_chat("bob")
    started = await bob.wait_event(ChatStarted, WAIT)
    assert isinstance(started, ChatStarted)
    theirs = bob.chats[started.chat_id]
    await session.composing()
    assert isinstance(await bob.wait_event(Composing, WAIT), Composing)
    for line in CHAT_LINES:
        sent.chat_ids.append(await session.send(line))
        got = await bob.wait_event(ChatMessage, WAIT)
        assert isinstance(got, ChatMessage) and got.text == line
    for mid in sent.chat_ids:
        assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
    await theirs.composing()
    reply = await theirs.send("fine, thanks")
    assert isinstance(await alice.wait_event(ChatMessage, WAIT), ChatMessage)
    sent.reply_ok = await bob.wait_status(reply, timeout=WAIT) is MessageStatus.DELIVERED
    await session.close()
    assert isinstance(await bob.wait_event(ChatEnded, WAIT), ChatEnded)


async def scenario(config: Config, make: Callable[..., Capture]) -> tuple[Capture, Ports, Sent]:
    alice, bob = client(config, "alice"), client(config, "bob")
    sent = Sent()
    async with Network(config, timers=FAST_TIMERS) as net:
        await alice.start()
        await bob.start()
        try:
            ports = ports_in_use(config, net, alice, bob)
            cap = make(ports=ports.sip + ports.msrp, decode_as=ports.decode_as)
            await asyncio.to_thread(cap.start)
            await pager(alice, bob, sent)
            await chat(alice, bob, sent)
            await asyncio.sleep(0.2)  # the last 200 OKs
            await asyncio.to_thread(cap.stop)
        finally:
            await alice.close()
            await bob.close()
    return cap, ports, sent


# -- reading the capture back -----------------------------------------------------------------

END_LINE = re.compile(rb"\r\n-------[!-~]+[+$#]\r\n\Z")


def msrp_cut_by_segment(cap: Pcap, report: str) -> bool:
    """A live MSRP frame flagged only because its first message goes on in the next
    TCP segment (tshark 4.0 does not reassemble MSRP)."""
    if "MSRP" not in report.split("|")[0]:
        return False
    frame = int(re.match(r"frame (\d+):", report).group(1))  # type: ignore[union-attr]
    try:
        first = split_msrp(cap.tcp_payload(frame))[0]
    except CaptureError:
        return False
    return END_LINE.search(first) is None


def split_streams(data: bytes) -> list[bytes]:
    """MSRP streams cut into messages; SIP-over-TCP streams left whole."""
    return split_msrp(data) if data.startswith(b"MSRP ") else [data]


def sip_counts(pcap: Pcap) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Requests by method and responses by (status, CSeq method), each hop once:
    UDP retransmissions (same Call-ID, Via branches, start line) count once."""
    seen: set[tuple[Any, ...]] = set()
    methods: Counter[str] = Counter()
    statuses: Counter[tuple[str, str]] = Counter()
    for f in pcap.decode(display_filter="sip", fields=SIP_FIELDS):
        key = tuple(tuple(f.get(name, [])) for name in SIP_FIELDS)
        if key in seen:
            continue
        seen.add(key)
        methods.update(f.get("sip.Method", []))
        statuses.update(zip(f.get("sip.Status-Code", []), f.get("sip.CSeq.method", [])))
    return methods, statuses


def msrp_lines(frames: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[str]]:
    """[(tid, method)] of the MSRP requests and the [tid] of the responses."""
    requests, responses = [], []
    for frame in frames:
        for line in frame.get("msrp.request.line", []):
            tid, method = line.split()[1:3]
            requests.append((tid, method))
        responses += [line.split()[1] for line in frame.get("msrp.response.line", [])]
    return requests, responses


# -- the test ----------------------------------------------------------------------------------

def test_tshark_decodes_pager_and_chat_through_the_core(
        capture: Callable[..., Capture], tmp_path: Path) -> None:
    config = network_config(tmp_path)
    cap, ports, sent = asyncio.run(asyncio.wait_for(scenario(config, capture), 40))
    assert sent.pager_ok and sent.reply_ok and len(sent.chat_ids) == len(CHAT_LINES)
    assert cap.packets, cap.stderr

    bad = [m for m in cap.malformed() if not msrp_cut_by_segment(cap, m)]
    assert bad == [], cap.summary()
    check_sip(cap)

    pcap = cap.resegment(split_streams)
    assert pcap.malformed() == [], pcap.summary()
    check_msrp(pcap, ports)


def check_sip(cap: Pcap) -> None:
    """Every hop of the pager exchange and the chat set-up is decoded as SIP."""
    methods, statuses = sip_counts(cap)
    assert set(methods) == {"MESSAGE", "INVITE", "ACK", "BYE"}, methods
    # the pager message, its delivery and display IMDNs: 3 MESSAGEs, each seen on
    # 10 hops (UE-P, P-S, S-AS, AS-S, S-I, I-S, S-AS, AS-S, S-P, P-UE), 200 OK back
    assert methods["MESSAGE"] == 30, methods
    assert statuses[("200", "MESSAGE")] == 30, statuses
    # the chat: alice's INVITE to the AS (UE-P, P-S, S-AS) and the AS's far leg to
    # bob (AS-S, S-I, I-S, S-AS, AS-S, S-P, P-UE); the AS's 183 back to alice
    assert methods["INVITE"] == 10, methods
    assert statuses[("200", "INVITE")] == 10 and statuses[("100", "INVITE")] >= 2, statuses
    assert statuses[("183", "INVITE")] == 3, statuses
    assert methods["ACK"] >= 2 and methods["BYE"] >= 2, methods
    assert statuses[("200", "BYE")] == methods["BYE"], statuses


def check_msrp(pcap: Pcap, ports: Ports) -> None:
    """Two MSRP legs (alice <-> AS <-> bob), one message per segment, all decoded."""
    frames = [f for f in pcap.decode(display_filter="msrp", fields=MSRP_FIELDS)]
    assert frames, pcap.summary()
    requests, responses = msrp_lines(frames)
    assert {m for _, m in requests} == {"SEND"}
    send_tids = [t for t, _ in requests]
    assert len(set(send_tids)) == len(send_tids)
    assert sorted(responses) == sorted(send_tids)  # one 200 per SEND
    types = Counter(t for f in frames for t in f.get("msrp.content.type", []))
    n_chat = len(CHAT_LINES) + 1                   # alice's lines and bob's reply
    # on each leg: the CPIM messages and their delivery IMDNs, both ways
    assert types["message/cpim"] == 2 * 2 * n_chat, types
    assert types["application/im-iscomposing+xml"] == 2 * 2, types
    binding = [f for f in frames if f.get("msrp.method") == ["SEND"]
               and "msrp.content.type" not in f]
    assert len(binding) == 2  # alice -> AS, AS -> bob
    assert len(requests) == 2 + 2 * (2 * n_chat + 2)
