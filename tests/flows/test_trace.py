"""``imsbox trace`` attached to a running network: seed flows 000/001 and 003.

A loopback :class:`Network` runs with its trace feed (as ``imsbox serve`` does);
the real ``imsbox trace`` CLI runs in a subprocess attached to it and writes
``--plain``, ``--pcap`` and ``--html`` when it gets SIGINT. Meanwhile the test
records, through public hooks only, what crosses the UEs' sockets (the SIP
transport's ``trace``, the MSRP endpoint's ``trace``) and how many messages
every node and UE sent. Then:

- the plain ladder lists, for each UE, the same SIP messages in the same order
  per Call-ID (per direction when two crossed in flight, e.g. a UDP
  retransmission and the answer to the first copy), and the same MSRP messages
  in the same order per direction, as that UE's wire, with its columns named
  alice's UE / P-CSCF / bob's UE;
- tshark reads the pcapng with one SIP or MSRP message per message sent
  (nodes and UEs together) and 0 malformed packets, and follows its TCP streams;
- the HTML page parses and holds every message the UEs sent or received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from imsbox.config import Config
from imsbox.serve import Network
from imsbox.testing import FAST_TIMERS
from imsbox.trace.feed import MsrpFramer, attach, find_feeds
from imsbox.trace.ladder import Filter, Ladder
from imsbox.trace.record import TraceRecord
from imsbox.trace.summary import describe
from imsbox.ue.client import (
    ChatEnded, ChatMessage, ChatStarted, Composing, GroupJoined, GroupMessage, MessageReceived,
    MessageStatus, RcsClient,
)

from helpers import alice_and_bob, client

pytestmark = pytest.mark.timeout(90)
WAIT = 5.0
SRC = Path(__file__).resolve().parents[2] / "src"
LARGE_TEXT = "large message mode " * 250   # 4750 bytes: three 2048-byte MSRP chunks


# -- what the UEs' sockets saw, through the public trace hooks ---------------------------

@dataclass(frozen=True)
class Seen:
    ue: str
    proto: str
    direction: str
    data: bytes

    @property
    def label(self) -> str:
        record = TraceRecord(0, 0.0, 0.0, self.ue, self.direction, self.proto, "udp",
                             ("", 0), ("", 0), self.data)
        return describe(record).label

    @property
    def call_id(self) -> str:
        record = TraceRecord(0, 0.0, 0.0, self.ue, self.direction, self.proto, "udp",
                             ("", 0), ("", 0), self.data)
        return describe(record).call_id


@dataclass
class Wire:
    seen: list[Seen] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)   # messages sent, by proto

    def watch_ue(self, name: str, ue: RcsClient) -> None:
        transport = ue._endpoint.transport
        transport.trace = lambda d, data, flow: self._add(name, "sip", d, bytes(data))
        framers: dict[tuple[int, str], MsrpFramer] = {}

        def msrp(direction: str, data: bytes, conn: Any) -> None:
            framer = framers.setdefault((id(conn), direction), MsrpFramer())
            for message in framer.feed(data):
                self._add(name, "msrp", direction, message)
        ue._msrp.trace = msrp

    def _add(self, ue: str, proto: str, direction: str, data: bytes) -> None:
        self.seen.append(Seen(ue, proto, direction, data))
        if direction == "out":
            self.sent[proto] += 1

    def count_nodes(self, net: Network) -> None:
        """Chain a counter of sent messages onto every node's hooks (the feed's too)."""
        for node in net.nodes.values():
            transport = node.endpoint.transport
            transport.trace = self._counting("sip", transport.trace)
            msrp = getattr(node, "msrp", None)
            if msrp is not None:
                msrp.trace = self._msrp_counting(msrp.trace)

    def _counting(self, proto: str, inner: Any) -> Any:
        def trace(direction: str, data: bytes, flow: Any) -> None:
            if direction == "out":
                self.sent[proto] += 1
            inner(direction, data, flow)
        return trace

    def _msrp_counting(self, inner: Any) -> Any:
        framers: dict[int, MsrpFramer] = {}

        def trace(direction: str, data: bytes, conn: Any) -> None:
            if direction == "out":
                framer = framers.setdefault(id(conn), MsrpFramer())
                self.sent["msrp"] += len(framer.feed(data))
            inner(direction, data, conn)
        return trace

    def of(self, ue: str, proto: str) -> list[Seen]:
        return [s for s in self.seen if s.ue == ue and s.proto == proto]


# -- the plain ladder, read back -------------------------------------------------------------

_GROUP = re.compile(r"^== (\S+) (\S+) \((\d+) messages\) ==$")
_LINE = re.compile(r"^\+(\d+\.\d+)\s+[|\-=<>@ ]*[|<>@]\s{4}(.+?)  \[(.+?) -> (.+)\]$")


@dataclass(frozen=True)
class Line:
    group: str
    t: float
    proto: str
    label: str
    src: str
    dst: str


def parse_plain(text: str) -> list[Line]:
    lines: list[Line] = []
    group = ""
    for raw in text.splitlines():
        if (head := _GROUP.match(raw)) is not None:
            group = head.group(2)
            continue
        if (found := _LINE.match(raw)) is not None:
            label = found.group(2)
            proto = "msrp" if label.startswith("MSRP ") else "sip"
            lines.append(Line(group, float(found.group(1)), proto,
                              label.removeprefix("MSRP "), found.group(3), found.group(4)))
    return lines


def ue_steps(lines: list[Line], ue: str) -> list[tuple[str, str]]:
    column = f"{ue}'s UE"
    return [("out" if ln.src == column else "in", ln.label) for ln in lines
            if column in (ln.src, ln.dst)]


# -- running a flow with imsbox trace attached -------------------------------------------------

@dataclass
class Traced:
    wire: Wire
    plain: str
    stderr: str
    pcap: Path
    html: Path
    messages: int


def trace_cli(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "imsbox.cli", "trace", "--data", str(data_dir), *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@contextlib.asynccontextmanager
async def attached(net: Network, argv: list[str], out: Path) -> AsyncIterator[
        asyncio.subprocess.Process]:
    """``imsbox trace`` running and attached (the feed counts it) for the block."""
    with out.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=stdout,
                                                    stderr=asyncio.subprocess.PIPE, env=env())
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 20)
    assert b"attached to 1 feed" in line, line
    feed = net.trace_feed
    assert feed is not None
    async with asyncio.timeout(5):
        while feed.attached < 1:
            await asyncio.sleep(0.01)
    yield proc


async def settled(out: Path, quiet: float = 0.5, limit: float = 10.0) -> None:
    """Until the trace's output has not grown for ``quiet`` s: it has printed what
    the feed sent it (a fixed pause was too short for a loaded machine)."""
    size, still = -1, 0.0
    async with asyncio.timeout(limit):
        while still < quiet:
            await asyncio.sleep(0.05)
            now = out.stat().st_size
            still = still + 0.05 if now == size else 0.0
            size = now


def run_traced(tmp_path: Path, scenario: Callable[[RcsClient, RcsClient], Awaitable[None]],
               *extra: str, **bob_options: Any) -> Traced:
    config = alice_and_bob(tmp_path)
    wire = Wire()
    pcap, page, plain = tmp_path / "trace.pcapng", tmp_path / "trace.html", tmp_path / "plain"
    argv = trace_cli(config.data_dir, "--plain", "--pcap", str(pcap), "--html", str(page),
                     *extra)
    result: dict[str, Any] = {}

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True) as net:
            wire.count_nodes(net)
            async with attached(net, argv, plain) as proc:
                await flow(config, wire, scenario, **bob_options)
                await settled(plain)  # the last records reach the trace
                if proc.returncode is None:  # (--count may have ended it)
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
                assert proc.stderr is not None
                result["stderr"] = (await proc.stderr.read()).decode()
                result["rc"] = await proc.wait()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert result["rc"] == 0, result["stderr"]
    count = re.search(r"imsbox trace: (\d+) messages", result["stderr"])
    assert count is not None, result["stderr"]
    return Traced(wire, plain.read_text(), result["stderr"], pcap, page, int(count.group(1)))


async def flow(config: Config, wire: Wire,
               scenario: Callable[[RcsClient, RcsClient], Awaitable[None]],
               **bob_options: Any) -> None:
    alice, bob = client(config, "alice"), client(config, "bob", **bob_options)
    started: list[RcsClient] = []
    try:
        for name, ue in (("alice", alice), ("bob", bob)):
            started.append(await ue.start())
            wire.watch_ue(name, ue)  # from the first re-REGISTER on; REGISTERs are before
        await scenario(alice, bob)
    finally:
        for ue in started:
            await ue.close()


async def pager(alice: RcsClient, bob: RcsClient) -> None:
    mid = await alice.send_message("bob", "Hello", display=True)
    await bob.wait_event(MessageReceived, WAIT)
    assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
    assert await bob.mark_displayed(mid)
    assert await alice.wait_status(mid, MessageStatus.DISPLAYED, WAIT) is \
        MessageStatus.DISPLAYED


async def large(alice: RcsClient, bob: RcsClient) -> None:
    mid = await alice.send_message("bob", LARGE_TEXT)
    got = await bob.wait_event(MessageReceived, WAIT)
    assert isinstance(got, MessageReceived) and got.text == LARGE_TEXT
    assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
    await asyncio.sleep(0.3)  # the AS's BYE of bob's leg


async def chat(alice: RcsClient, bob: RcsClient) -> None:
    session = await alice.open_chat("bob")
    started = await bob.wait_event(ChatStarted, WAIT)
    assert isinstance(started, ChatStarted)
    hello = await session.send("Hello")
    assert isinstance(await bob.wait_event(ChatMessage, WAIT), ChatMessage)
    assert await alice.wait_status(hello, timeout=WAIT) is MessageStatus.DELIVERED
    theirs = bob.chats[started.chat_id]
    await theirs.composing()
    assert isinstance(await alice.wait_event(Composing, WAIT), Composing)
    reply = await theirs.send("hi")
    assert isinstance(await alice.wait_event(ChatMessage, WAIT), ChatMessage)
    assert await bob.wait_status(reply, timeout=WAIT) is MessageStatus.DELIVERED
    await session.close()
    assert isinstance(await bob.wait_event(ChatEnded, WAIT), ChatEnded)


# -- the checks ----------------------------------------------------------------------------

def check_plain(traced: Traced) -> list[Line]:
    """Per UE: SIP per Call-ID and MSRP per direction in the wire's order."""
    lines = parse_plain(traced.plain)
    assert len(lines) == traced.messages
    for ue in ("alice", "bob"):
        column = f"{ue}'s UE"
        mine = [ln for ln in lines if column in (ln.src, ln.dst)]
        assert mine, f"no column {column!r} in\n{traced.plain}"
        for other in {ln.src for ln in mine} | {ln.dst for ln in mine}:
            assert other in (column, "P-CSCF", "messaging AS", "conference AS"), other
        seen = traced.wire.of(ue, "sip")
        for call_id in dict.fromkeys(s.call_id for s in seen):
            wire_steps = [(s.direction, s.label) for s in seen if s.call_id == call_id]
            ladder = ue_steps([ln for ln in mine if ln.proto == "sip" and ln.group == call_id],
                              ue)
            # the trace saw the UE's REGISTERs too, before the UE was watched
            ladder = ladder[len(ladder) - len(wire_steps):]
            if ladder != wire_steps:  # crossed on the wire (a retransmission and an
                # answer in flight at once): each direction still keeps its order
                for direction in ("in", "out"):
                    assert [m for m in ladder if m[0] == direction] == \
                        [m for m in wire_steps if m[0] == direction], (call_id, ladder)
        msrp = ue_steps([ln for ln in mine if ln.proto == "msrp"], ue)
        wire_msrp = [(s.direction, s.label) for s in traced.wire.of(ue, "msrp")]
        for direction in ("in", "out"):
            assert [m for m in msrp if m[0] == direction] == \
                [m for m in wire_msrp if m[0] == direction]
    return lines


def tshark(*args: str) -> str:
    done = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_pcap(traced: Traced) -> None:
    """One SIP or MSRP PDU per message sent; nothing malformed; TCP streams follow."""
    path = str(traced.pcap)
    assert tshark("-r", path, "-Y", "_ws.malformed") == ""
    sip = tshark("-r", path, "-Y", "sip", "-T", "fields", "-e", "sip.CSeq.method").split("\n")
    msrp = tshark("-r", path, "-Y", "msrp", "-T", "fields", "-e", "msrp.transaction.id")
    n_sip, n_msrp = len([s for s in sip if s]), len(msrp.split())
    # What the nodes and the UEs sent, counted on their hooks (the UEs only after
    # their REGISTERs, which the trace saw: those are in the ladder, not in `sent`)
    sent = traced.wire.sent
    assert n_msrp == sent["msrp"]
    assert n_sip >= sent["sip"] and n_sip + n_msrp == traced.messages
    follow = tshark("-r", path, "-q", "-z", "follow,tcp,ascii,0")
    assert "Follow: tcp,ascii" in follow and ("SIP/2.0" in follow or "MSRP " in follow)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.pres: list[str] = []
        self.links: list[str] = []
        self.svgs = 0
        self._pre: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("id"):
            self.ids.append(str(values["id"]))
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))
        if tag == "svg":
            self.svgs += 1
        if tag == "pre":
            self._pre = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)


def check_html(traced: Traced) -> None:
    text = traced.html.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "<script" not in text
    page = _Page()
    page.feed(text)
    page.close()
    assert len(page.ids) == len(page.pres) == traced.messages
    assert page.svgs >= 1
    targets = {f"#{i}" for i in page.ids}
    assert targets <= set(page.links)  # every message one click from its arrow
    bodies = {b.replace("\r\n", "\n") for b in page.pres}  # read_text: universal newlines
    for seen in traced.wire.seen:
        assert seen.data.decode("utf-8", "replace").replace("\r\n", "\n") in bodies, seen.label


# -- the flows ------------------------------------------------------------------------------

def test_trace_pager_with_imdns(tmp_path: Path) -> None:
    traced = run_traced(tmp_path, pager)
    lines = check_plain(traced)
    labels = [ln.label for ln in lines if ln.src == "alice's UE"]
    assert "MESSAGE cpim 'Hello'" in labels
    assert "MESSAGE cpim imdn delivered" in [ln.label for ln in lines if ln.dst == "alice's UE"]
    assert "MESSAGE cpim imdn displayed" in [ln.label for ln in lines if ln.dst == "alice's UE"]
    # the path through the core, in order, as the seed shows it
    first = next(ln.group for ln in lines if ln.label == "MESSAGE cpim 'Hello'")
    # each hop once: a UDP retransmission under load repeats a hop at the end
    hops = list(dict.fromkeys((ln.src, ln.dst) for ln in lines if ln.group == first
                              and ln.label == "MESSAGE cpim 'Hello'"))
    assert hops[0] == ("alice's UE", "P-CSCF") and hops[-1] == ("P-CSCF", "bob's UE")
    assert ("S-CSCF", "messaging AS") in hops and ("S-CSCF", "I-CSCF") in hops
    check_pcap(traced)
    check_html(traced)


def test_trace_large_message_over_msrp(tmp_path: Path) -> None:
    traced = run_traced(tmp_path, large)
    lines = check_plain(traced)
    sends = [ln.label for ln in lines if ln.proto == "msrp" and ln.src == "alice's UE"]
    assert sends[0] == "SEND empty"
    chunks = [s for s in sends if re.fullmatch(r"SEND \d+-\d+/\d+", s)]
    assert chunks[0].startswith("SEND 1-2048/") and len(chunks) >= 2, sends
    invite = next(ln for ln in lines if ln.src == "alice's UE" and ln.label.startswith("INVITE"))
    assert invite.label == "INVITE sdp message"
    assert any(ln.group == invite.group and ln.proto == "msrp" for ln in lines)
    check_pcap(traced)
    check_html(traced)


def test_trace_chat(tmp_path: Path) -> None:
    traced = run_traced(tmp_path, chat)
    lines = check_plain(traced)
    msrp = [(ln.src, ln.dst, ln.label) for ln in lines if ln.proto == "msrp"]
    assert any(src == "alice's UE" and dst == "messaging AS" and "cpim 'Hello'" in label
               for src, dst, label in msrp)
    assert any(src == "messaging AS" and dst == "bob's UE" and "cpim 'Hello'" in label
               for src, dst, label in msrp)
    assert ("bob's UE", "messaging AS", "SEND 1-") in {
        (src, dst, label[:7]) for src, dst, label in msrp if label.endswith("iscomposing")}
    check_pcap(traced)
    check_html(traced)


# -- filters, several feeds, no network --------------------------------------------------------

async def pager_and_chat(alice: RcsClient, bob: RcsClient) -> None:
    await pager(alice, bob)
    await chat(alice, bob)


def test_trace_filters(tmp_path: Path) -> None:
    """--method and --user --count from the CLI; Call-ID, Conversation-ID and node
    filters on the library's Ladder, fed by attach() in-process at the same time."""
    config = alice_and_bob(tmp_path)
    wire = Wire()
    invites, bobs = tmp_path / "invites", tmp_path / "bob5"
    ladder = Ladder()
    done: dict[str, Any] = {}

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True) as net:
            assert net.trace_feed is not None
            paths, events = await attach(find_feeds(config.data_dir))
            assert paths == [net.trace_feed.path]

            async def pump() -> None:
                async for event in events:
                    ladder.feed(event)
            reader = asyncio.create_task(pump())
            async with attached(net, trace_cli(config.data_dir, "--plain", "--method",
                                               "INVITE"), invites) as by_method, \
                    attached(net, trace_cli(config.data_dir, "--plain", "--user", "bob",
                                            "--count", "5"), bobs) as counted:
                await flow(config, wire, pager_and_chat)
                await asyncio.sleep(0.3)
                done["counted"] = await asyncio.wait_for(counted.wait(), 10)  # by itself
                by_method.send_signal(signal.SIGINT)
                done["by_method"] = await by_method.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await events.aclose()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert done == {"counted": 0, "by_method": 0}

    lines = parse_plain(invites.read_text())
    groups = re.findall(r"^== (\S+) ", invites.read_text(), re.M)
    assert groups and set(groups) == {"INVITE"}
    assert any(ln.proto == "msrp" for ln in lines)   # MSRP follows its INVITE
    assert not any(ln.label.startswith("MESSAGE") for ln in lines)

    first_five = parse_plain(bobs.read_text())
    assert len(first_five) == 5
    assert all(ln.label.startswith(("REGISTER", "401", "200")) for ln in first_five)

    chat_call = next(a.summary.call_id for a in ladder.arrows
                     if a.summary.method == "INVITE" and a.summary.is_request)
    (only,) = ladder.groups(Filter(call_ids=(chat_call,)))
    assert only.key == chat_call and any(a.proto == "msrp" for a in only.arrows)
    conversation = next(iter(next(a for a in only.arrows
                                  if a.summary.conversation_ids).summary.conversation_ids))
    legs = ladder.groups(Filter(conversation_ids=(conversation,)))
    assert len(legs) == 2  # alice's leg and the AS's leg to bob carry it
    assert {g.key for g in ladder.groups(Filter(nodes=("conference",)))} == {
        g.key for g in ladder.groups() if any("conference" in a.nodes for a in g.arrows)}
    assert all(g.title.startswith("REGISTER")
               for g in ladder.groups(Filter(nodes=("conference",))))
    assert ladder.groups(Filter(users=("nobody",))) == []
    assert ladder.groups(Filter(users=("sip:bob@ims.test",)))


def test_trace_without_a_network(tmp_path: Path) -> None:
    """No serve on the data dir (nothing there, then a stale socket): a clear error, 1."""
    data = tmp_path / "data"
    argv = trace_cli(data, "--plain")
    done = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=30)
    assert done.returncode == 1
    assert "no imsbox serve is running on" in done.stderr and str(data) in done.stderr
    (data / "trace").mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(data / "trace" / "all-1.sock"))
    stale.close()  # the file stays, nobody listens: a serve that was killed
    done = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=30)
    assert done.returncode == 1 and "no imsbox serve is running" in done.stderr
    done = subprocess.run(trace_cli(data), capture_output=True, text=True, env=env(),
                          timeout=30)
    assert done.returncode == 1 and "--plain, --pcap FILE and/or --html FILE" in done.stderr


def test_trace_split_processes(tmp_path: Path) -> None:
    """The P-CSCF in one Network, the rest in another (as two `serve --role`
    processes would be): two feeds, one ladder, each message once, columns by role."""
    config = alice_and_bob(tmp_path)
    wire = Wire()
    out = tmp_path / "split"
    rest = ("icscf", "scscf", "as", "conference")

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True, roles=rest) as core, \
                Network(config, timers=FAST_TIMERS, feed=True, roles=("pcscf",)) as edge:
            assert core.trace_feed is not None and edge.trace_feed is not None
            argv = trace_cli(config.data_dir, "--plain")
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=out.open("wb"), stderr=asyncio.subprocess.PIPE, env=env())
            assert proc.stderr is not None
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert b"attached to 2 feed(s)" in line, line
            async with asyncio.timeout(5):
                while core.trace_feed.attached < 1 or edge.trace_feed.attached < 1:
                    await asyncio.sleep(0.01)
            await flow(config, wire, pager)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            stderr["text"] = (await proc.stderr.read()).decode()
            assert await proc.wait() == 0

    stderr: dict[str, str] = {}
    asyncio.run(asyncio.wait_for(main(), 60))
    lines = parse_plain(out.read_text())
    hello = [ln for ln in lines if ln.label == "MESSAGE cpim 'Hello'"]
    assert [(ln.src, ln.dst) for ln in hello][:2] == [("alice's UE", "P-CSCF"),
                                                     ("P-CSCF", "S-CSCF")]
    hops = [(ln.src, ln.dst) for ln in hello]
    assert ("P-CSCF", "bob's UE") in hops and ("S-CSCF", "I-CSCF") in hops
    # each hop once although both ends traced it, from two processes' feeds: only
    # the hops to and from the UEs have one record (a UDP retransmission, with
    # FAST_TIMERS, is a message of its own, with its own records)
    counted = re.search(r"(\d+) messages \((\d+) records", stderr["text"])
    assert counted is not None
    messages, records = int(counted.group(1)), int(counted.group(2))
    assert messages == len(lines) and 1.5 * messages < records < 2 * messages, (messages, records)


def test_trace_attaches_to_imsbox_serve(tmp_path: Path) -> None:
    """The real `imsbox serve` opens its feed; `imsbox trace --config` finds it
    through the same imsbox.toml; --user and --method keep alice's MESSAGEs."""
    config = alice_and_bob(tmp_path)
    toml = tmp_path / "imsbox.toml"
    assert toml.is_file()
    serve = subprocess.Popen([sys.executable, "-m", "imsbox.cli", "serve", "--config", str(toml)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    out = tmp_path / "serve-trace"
    try:
        for _ in range(200):
            if find_feeds(config.data_dir):
                break
            assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
            time.sleep(0.05)
        argv = [sys.executable, "-m", "imsbox.cli", "trace", "--config", str(toml), "--plain",
                "--user", "alice", "--method", "MESSAGE"]

        async def main() -> None:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=out.open("wb"), stderr=asyncio.subprocess.PIPE, env=env())
            assert proc.stderr is not None
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert b"attached to 1 feed(s): all-" in line, line
            await asyncio.sleep(0.2)  # the serve process accepts the subscriber
            await flow(config, Wire(), pager)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0

        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(15) == 0
    assert not list((config.data_dir / "trace").glob("*.sock"))  # removed on exit
    lines = parse_plain(out.read_text())
    assert {ln.group for ln in lines}  # MESSAGE dialogs only
    assert set(re.findall(r"^== (\S+) ", out.read_text(), re.M)) == {"MESSAGE"}
    hops = list(dict.fromkeys((ln.src, ln.dst) for ln in lines
                              if ln.label == "MESSAGE cpim 'Hello'"))
    assert hops[0] == ("alice's UE", "P-CSCF") and hops[-1] == ("P-CSCF", "bob's UE")


# -- the terminal UI ------------------------------------------------------------------------

_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78M]|[\x0e\x0f]")


def test_trace_tui_on_a_terminal(tmp_path: Path) -> None:
    """`imsbox trace --tui --pcap F` on a pseudo-terminal is the live ladder: it shows the
    pager flow as it happens, 'g' shows one group, Home + Enter the first message
    whole, q goes back and quits; then the pcap is written."""
    import fcntl
    import pty
    import struct
    import termios

    config = alice_and_bob(tmp_path)
    pcap = tmp_path / "tui.pcapng"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 150, 400, 0, 0))  # wide: labels whole
    screen = bytearray()

    def read_screen() -> str:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(master, 65536):
                screen.extend(chunk)
        return _ESCAPES.sub(b"", bytes(screen)).decode("utf-8", "replace")

    async def wait_for(text: str, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while text not in read_screen():
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"{text!r} not on the screen:\n{read_screen()[-3000:]}") from None

    async def press(keys: bytes) -> None:
        os.write(master, keys)
        await asyncio.sleep(0.3)

    async def shown(text: str) -> None:
        """Within one view curses sends only the cells that changed, so a label that
        replaced a similar one may never be written whole: then a view change (g, g)
        sends the whole ladder (150 rows: the pager flow fits)."""
        try:
            await wait_for(text, 5)
        except AssertionError:
            screen.clear()
            await press(b"g")
            await press(b"g")
            await wait_for(text)

    async def main() -> None:
        os.set_blocking(master, False)
        async with Network(config, timers=FAST_TIMERS, feed=True) as net:
            proc = await asyncio.create_subprocess_exec(
                *trace_cli(config.data_dir, "--tui", "--pcap", str(pcap)), stdin=slave,
                stdout=slave, stderr=asyncio.subprocess.PIPE,
                # curses takes LINES/COLUMNS from the environment over the pty's size
                env={**env(), "TERM": "xterm", "LINES": "150", "COLUMNS": "400"})
            assert proc.stderr is not None
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert b"attached" in line, line
            assert net.trace_feed is not None
            async with asyncio.timeout(5):
                while not net.trace_feed.attached:
                    await asyncio.sleep(0.01)
            await wait_for("imsbox trace")
            await flow(config, Wire(), pager)
            await shown("MESSAGE cpim imdn displayed")
            screen.clear()
            await press(b"g")          # the newest message's group alone, redrawn whole:
            await wait_for("group ")   # bob's de-REGISTER (the flow closes the UEs)
            await wait_for("bob's UE")
            await wait_for("REGISTER expires=0")
            await press(b"g")
            screen.clear()
            await press(b"\x1bOH")     # Home (keypad mode): the first message
            await press(b"\r")         # Enter: it, whole
            await wait_for("REGISTER sip:ims.test SIP/2.0")
            await wait_for("Enter/Esc back")
            await press(b"q")          # back to the ladder
            await press(b"q")          # quit
            assert await asyncio.wait_for(proc.wait(), 10) == 0

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        os.close(slave)
        os.close(master)
    assert pcap.stat().st_size > 1000
    assert tshark("-r", str(pcap), "-Y", "_ws.malformed") == ""


# -- group chat and a voice call ------------------------------------------------------------

async def group_and_call(alice: RcsClient, bob: RcsClient) -> None:
    """An ad-hoc group (factory INVITE with the recipient list, the focus's invitation,
    conference-info NOTIFYs, a message through the focus), then a voice call."""
    group = await alice.create_group(["bob"], "Lunch")
    joined = await bob.wait_event(GroupJoined, WAIT)
    assert isinstance(joined, GroupJoined)
    async with asyncio.timeout(WAIT):
        while set(group.participants) != {alice.aor, bob.aor}:
            await asyncio.sleep(0.02)
    (theirs,) = bob.groups.values()
    await theirs.send("pizza?")
    got = await alice.wait_event(GroupMessage, WAIT)
    assert isinstance(got, GroupMessage) and got.text == "pizza?"
    await group.leave()
    await asyncio.sleep(0.3)
    call = await alice.call("bob")
    assert await call.wait_answered(WAIT)
    await asyncio.sleep(0.3)
    await call.hangup()
    await asyncio.sleep(0.3)


def test_trace_group_chat_and_call(tmp_path: Path) -> None:
    traced = run_traced(tmp_path, group_and_call, answer_calls=0.1)
    lines = check_plain(traced)
    labels = {(ln.src, ln.dst, ln.label) for ln in lines}
    assert ("alice's UE", "P-CSCF", "INVITE sdp+resource-lists message") in labels
    assert any(src == "conference AS" and re.fullmatch(r"NOTIFY conference v\d+( partial)?", lab)
               for src, _, lab in labels)
    assert any(src == "bob's UE" and dst == "conference AS" and lab.startswith("SEND 1-")
               and "cpim 'pizza?'" in lab for src, dst, lab in labels)
    assert ("alice's UE", "P-CSCF", "INVITE sdp audio") in labels
    assert ("P-CSCF", "bob's UE", "INVITE sdp audio") in labels
    check_pcap(traced)
    check_html(traced)


_FOLLOW = re.compile(r"^\+(\d+\.\d+) #(\d+) (.+?) -> (.+?)  (.+)$")


def test_trace_plain_follow_streams_lines(tmp_path: Path) -> None:
    """--plain --follow prints each message as it comes (then the ladder); with
    --user bob --count 30 both hold the same 30 messages."""
    traced = run_traced(tmp_path, pager, "--follow", "--user", "bob", "--count", "30")
    head, _, ladder_text = traced.plain.partition("\n== ")
    follow = [m.groups() for m in map(_FOLLOW.match, head.splitlines()) if m]
    assert len(follow) == 30 == traced.messages
    lines = parse_plain("== " + ladder_text)
    assert len(lines) == 30
    assert sorted((f[2], f[3], f[4].removeprefix("MSRP ")) for f in follow) == \
        sorted((ln.src, ln.dst, ln.label) for ln in lines)
    assert ("alice's UE", "P-CSCF") in {(f[2], f[3]) for f in follow}


def test_trace_duration_and_the_network_stopping(tmp_path: Path) -> None:
    """--duration ends the trace by itself; a trace still attached when serve stops
    writes what it has and exits 0."""
    config = alice_and_bob(tmp_path)

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True) as net:
            timed = await asyncio.create_subprocess_exec(
                *trace_cli(config.data_dir, "--plain", "--duration", "1"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env())
            endless = await asyncio.create_subprocess_exec(
                *trace_cli(config.data_dir, "--html", str(tmp_path / "end.html")),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env())
            _, err = await asyncio.wait_for(timed.communicate(), 15)
            assert timed.returncode == 0 and b"imsbox trace: 0 messages" in err
            assert net.trace_feed is not None
            async with asyncio.timeout(10):
                while not net.trace_feed.attached:
                    await asyncio.sleep(0.01)
        _, err = await asyncio.wait_for(endless.communicate(), 15)  # the network closed
        assert endless.returncode == 0, err
        assert b"0 messages" in err

    asyncio.run(asyncio.wait_for(main(), 60))
    assert "<svg" not in (tmp_path / "end.html").read_text()  # no group, still a page
    assert (tmp_path / "end.html").read_text().startswith("<!DOCTYPE html>")
