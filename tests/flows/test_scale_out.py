"""Scale-out on loopback, every node its own ``imsbox serve --role`` process:

    UEs -> Kamailio dispatcher -> 2 P-CSCFs -> 1 I-CSCF -> 2 S-CSCFs -> 2 messaging ASs

all on one throw-away PostgreSQL with a Redis cache. Four UEs keep up six
pager conversations, two chats (MSRP through an AS) and a file transfer after
another while one S-CSCF and one AS are killed with SIGKILL, restarted, and
then the other two are killed (so the restarted ones must have rejoined to
carry the traffic), and then a P-CSCF. Every message that got a 2xx must
arrive exactly once and in order per conversation (a chat message's MSRP 200
is the receiver's, so that holds for chats through a killed AS too); a chat
through a killed AS ends by itself; UEs on the killed P-CSCF register again on the other one.
Then messages kept for an offline user are delivered once each and in order
when it registers, with both ASs racing for them (leases).

Select with ``-m scaleout``; Kamailio comes from Debian (scripts/setup.sh).
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imsbox.ims.provisioning import add_user
from imsbox.store import open_store
from imsbox.testing import LoopbackPorts
from imsbox.ue import Chat, ChatMessage, FileReceived, MessageReceived, RcsClient, SendError

pytestmark = [pytest.mark.scaleout, pytest.mark.load, pytest.mark.timeout(280)]

ROOT = Path(__file__).resolve().parents[2]
DISPATCHER_CFG = ROOT / "deploy" / "kamailio" / "dispatcher.cfg"
DOMAIN = "ims.test"
PASSWORD = "secret-pw"
HOST = "127.0.0.1"


def _kamailio() -> str:
    found = shutil.which("kamailio") or ("/usr/sbin/kamailio"
                                         if os.path.exists("/usr/sbin/kamailio") else None)
    if found is None:
        pytest.fail("kamailio not found: install the Debian package kamailio "
                    "(scripts/setup.sh does)", pytrace=False)
    return found


class Proc:
    """One background process; its output collected by a thread."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=self.env)
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        return proc

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return
        raise AssertionError(f"{self.name}: no {text!r} (exit {self.proc.poll()}):\n"
                             + "\n".join(self.output[-40:]))

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no clean-up of any kind
        self.proc.wait(10)

    def restart(self) -> None:
        self.lines = queue.Queue()
        self.proc = self._spawn()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Layout:
    """The ports of every instance."""

    ports: LoopbackPorts = field(default_factory=LoopbackPorts)
    instances: int = 2          # of the S-CSCF and of the messaging AS

    def __post_init__(self) -> None:
        take = self.ports
        self.kamailio = take()
        self.pcscf = (take(), take())
        self.icscf = take()
        self.scscf = tuple(take() for _ in range(self.instances))
        self.messaging = tuple(take() for _ in range(self.instances))
        self.others = {n: take() for n in ("conference_as", "telephony_as", "media_server")}

    def toml(self, directory: Path, name: str, pg: str, redis: str, *, pcscf: int | None = None,
             scscf: int | None = None, messaging: int | None = None) -> Path:
        """One process's imsbox.toml: its own port for its role, the pools shared."""
        def sockets(ports: tuple[int, ...]) -> str:
            return ", ".join(f'"{HOST}:{p}"' for p in ports)
        text = f"""domain = "{DOMAIN}"
data_dir = "{directory / ('data-' + name)}"

[store]
url = "{pg}"
cache = "{redis}"

[pcscf]
host = "{HOST}"
port = {pcscf or self.pcscf[0]}
transports = ["udp", "tcp"]
fronts = ["{HOST}:{self.kamailio}"]

[icscf]
host = "{HOST}"
port = {self.icscf}

[scscf]
host = "{HOST}"
port = {scscf or self.scscf[0]}
pool = [{sockets(self.scscf)}]

[messaging_as]
host = "{HOST}"
port = {messaging or self.messaging[0]}
pool = [{sockets(self.messaging)}]

[security]
trusted_peers = [{sockets(self.pcscf)}]
"""
        for node, port in self.others.items():
            text += f'\n[{node}]\nhost = "{HOST}"\nport = {port}\n'
        path = directory / f"{name}.toml"
        path.write_text(text)
        return path


def _serve(name: str, config: Path, role: str) -> Proc:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    proc = Proc(name, [sys.executable, "-m", "imsbox.cli", "serve", "--config", str(config),
                       "--role", role], env)
    proc.wait_for("listening on")
    return proc


def _kamailio_proc(directory: Path, layout: Layout) -> Proc:
    ds_list = directory / "dispatcher.list"
    ds_list.write_text("".join(f"1 sip:{HOST}:{p}\n" for p in layout.pcscf))
    run = directory / "kamailio-run"
    run.mkdir(exist_ok=True)
    proc = Proc("kamailio", [_kamailio(), "-DD", "-E", "-f", str(DISPATCHER_CFG),
                             "-A", f"LISTEN=udp:{HOST}:{layout.kamailio}",
                             "-A", f'DS_LIST="{ds_list}"', "-A", "FR_TIMER=2000",
                             "-A", "CHILDREN=2", "-Y", str(run), "-w", str(run)])
    proc.wait_for("INFO: <core>", timeout=15)
    time.sleep(1.0)  # its children bind and probe
    assert proc.proc.poll() is None, "\n".join(proc.output[-30:])
    return proc


@dataclass
class Conversation:
    """One sender's numbered messages to one receiver."""

    name: str
    sender: RcsClient
    receiver: RcsClient
    acked: list[int] = field(default_factory=list)     # seqs whose MESSAGE got a 2xx
    refused: int = 0                                    # attempts that got none
    errors: dict[int, list[str]] = field(default_factory=dict)  # seq -> why refused
    latencies: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        seq = 0
        while not stop.is_set():
            for _attempt in range(3):
                started = time.monotonic()
                try:
                    await self.sender.send_message(self.receiver.aor, f"{self.name}:{seq}")
                except SendError as exc:
                    self.refused += 1
                    self.errors.setdefault(seq, []).append(str(exc))
                    await asyncio.sleep(0.3)
                    continue
                self.latencies.append(time.monotonic() - started)
                self.acked.append(seq)
                break
            seq += 1
            await asyncio.sleep(0.1)


Received = dict[str, list[tuple[int, str | None]]]   # conversation -> (seq, Message-ID)


async def _collect(client: RcsClient, into: Received,
                   files: list[FileReceived] | None = None) -> None:
    """Pager and chat messages by conversation (their text is ``conv:seq``); files."""
    async for event in client.events():
        if isinstance(event, MessageReceived | ChatMessage):
            conv, _, seq = event.text.partition(":")
            into.setdefault(conv, []).append((int(seq), event.message_id))
        elif isinstance(event, FileReceived) and files is not None:
            files.append(event)


@dataclass
class ChatTalk:
    """One sender's numbered chat messages (MSRP, anchored by a messaging AS) to
    one receiver; a chat that ends (its AS killed) is opened again."""

    name: str
    sender: RcsClient
    receiver: RcsClient
    sessions: list[list[int]] = field(default_factory=list)  # seqs with MSRP 200, per chat
    ends: list[str] = field(default_factory=list)            # why each broken chat ended
    refused: int = 0
    resent: int = 0                                          # sent again after no 200
    hung: int = 0                                            # chats that never ended
    _chat: Chat | None = None

    @property
    def acked(self) -> list[int]:
        return [seq for session in self.sessions for seq in session]

    async def run(self, stop: asyncio.Event) -> None:
        seq, self._chat = 0, None
        again: str | None = None  # the Message-ID of a message without a 200
        try:
            while not stop.is_set():
                if self._chat is None:
                    self._chat = await self._open()
                    if self._chat is None:
                        continue
                try:
                    await self._chat.send(f"{self.name}:{seq}", display=False,
                                          message_id=again)
                    self.sessions[-1].append(seq)
                    seq, again = seq + 1, None
                except SendError as exc:
                    # no 200: it may or may not have arrived - sent again in the
                    # next chat under its Message-ID (a second copy is dropped)
                    again = exc.message_id
                    self.resent += again is not None
                    await self._ended(self._chat)
                    self._chat = None
                await asyncio.sleep(0.2)
        finally:  # also when cancelled: the chat ends with our BYE
            if self._chat is not None:
                await self._chat.close()

    async def _open(self) -> Chat | None:
        try:
            chat = await self.sender.open_chat(self.receiver.aor)
        except (SendError, OSError, TimeoutError):
            self.refused += 1
            await asyncio.sleep(0.5)
            return None
        self.sessions.append([])
        return chat

    async def _ended(self, chat: Chat) -> None:
        """A send failed: the chat must end by itself (BYE or timeout), not hang."""
        try:
            await asyncio.wait_for(chat.closed.wait(), 15)
        except TimeoutError:
            self.hung += 1
            await chat.close()
        self.ends.append(chat.end_reason)


@dataclass
class FileTalk:
    """One sender's files to one receiver, one after another."""

    sender: RcsClient
    receiver: RcsClient
    path: Path
    confirmed: int = 0            # the receiver's success REPORT came (hash checked)
    failed: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await self.sender.send_file(self.receiver.aor, self.path)
            except SendError as exc:
                self.failed.append(str(exc))
            else:
                if result.ok:
                    self.confirmed += 1
                else:
                    self.failed.append(result.reason)
            await asyncio.sleep(1.0)


def _check_chats(talks: list[ChatTalk], received: Received) -> int:
    """Once each and in order, and every message with an MSRP 200 arrived, also
    in a chat that broke (the AS answers a SEND only once the receiver answered
    the relayed one: apps/chat_relay.py). A message without a 200 is sent again
    under its Message-ID until it gets one, so only the last may be unconfirmed.
    Returns how many arrived without a 200."""
    unconfirmed = 0
    for talk in talks:
        got = received.get(talk.name, [])
        ids = [i for _, i in got]
        assert len(ids) == len(set(ids)), f"{talk.name}: one chat message delivered twice"
        seqs = [s for s, _ in got]
        assert seqs == sorted(set(seqs)), f"{talk.name}: out of order or twice: {seqs}"
        arrived = set(seqs)
        missing = [seq for seq in talk.acked if seq not in arrived]
        assert not missing, f"{talk.name}: messages with an MSRP 200 lost: {missing}"
        extra = arrived - set(talk.acked)  # no 200 yet: only the one sent at the stop
        assert len(extra) <= 1, f"{talk.name}: arrived without a 200: {sorted(extra)}"
        unconfirmed += len(extra)
        assert talk.hung == 0, f"{talk.name}: {talk.hung} chats did not end by themselves"
    return unconfirmed


def _check(conversations: list[Conversation], received: Received) -> tuple[int, int]:
    """Exactly once per 2xx, those in order. Returns how many sends that got an
    error (and were sent again, as a new message) had arrived all the same, and
    how many messages that got only errors arrived after later ones: a node
    on the way gave up (408) while the message went on, e.g. kept by the AS for
    a UE whose P-CSCF had died and delivered when it registered again."""
    resent = late = 0
    for conv in conversations:
        got = received.get(conv.name, [])
        ids = [i for _, i in got]
        assert len(ids) == len(set(ids)), f"{conv.name}: one message delivered twice"
        seqs = [s for s, _ in got]
        for seq in sorted({s for s in seqs if seqs.count(s) > 1}):
            # only a message its sender sent again after an error may come twice
            assert seq in conv.errors, f"{conv.name}: {seq} delivered twice"
            resent += 1
        firsts = list(dict.fromkeys(seqs))
        acked = set(conv.acked)
        in_order = [seq for seq in firsts if seq in acked]
        assert in_order == sorted(in_order), f"{conv.name}: out of order: {in_order}"
        late += sum(1 for i, seq in enumerate(firsts)
                    if seq not in acked and any(earlier > seq for earlier in firsts[:i]))
        lost = sorted(acked - set(seqs))
        assert not lost, f"{conv.name}: got a 2xx but never arrived: {lost}"
    return resent, late


@pytest.fixture
def network(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[dict[str, Proc]]:
    layout = Layout()
    asyncio.run(_provision(pg_url, redis_url))

    def config(name: str, **own: int) -> Path:
        return layout.toml(tmp_path, name, pg_url, redis_url, **own)

    procs: dict[str, Proc] = {}
    try:
        # downstream first, one at a time (the HSS carriers write the iFCs at start)
        procs["as1"] = _serve("as1", config("as1", messaging=layout.messaging[0]), "as")
        procs["as2"] = _serve("as2", config("as2", messaging=layout.messaging[1]), "as")
        procs["scscf1"] = _serve("scscf1", config("scscf1", scscf=layout.scscf[0]), "scscf")
        procs["scscf2"] = _serve("scscf2", config("scscf2", scscf=layout.scscf[1]), "scscf")
        procs["icscf"] = _serve("icscf", config("icscf"), "icscf")
        procs["pcscf1"] = _serve("pcscf1", config("pcscf1", pcscf=layout.pcscf[0]), "pcscf")
        procs["pcscf2"] = _serve("pcscf2", config("pcscf2", pcscf=layout.pcscf[1]), "pcscf")
        procs["kamailio"] = _kamailio_proc(tmp_path, layout)
        procs["_layout"] = layout  # type: ignore[assignment]
        print(f"\nports: kamailio {layout.kamailio}, P-CSCFs {layout.pcscf}, I-CSCF "
              f"{layout.icscf}, S-CSCFs {layout.scscf}, ASs {layout.messaging}")
        yield procs
    finally:
        for proc in procs.values():
            if isinstance(proc, Proc):
                proc.stop()
        _report_trouble(procs)


TROUBLE = ("untrusted", "from another port", "cannot bind", "Traceback", "P-CSCF",
           "ERROR")


def _report_trouble(procs: dict[str, Proc]) -> None:
    """The lines that explain a failure (a 403 from a trust guard, a connection
    from a port that is not the node's), printed for ``-s``."""
    for name, proc in procs.items():
        if isinstance(proc, Proc):
            for line in proc.output:
                if any(word in line for word in TROUBLE):
                    print(f"{name}: {line}")


async def _provision(pg_url: str, redis_url: str) -> None:
    store = await open_store(pg_url, redis_url).open()
    try:
        for i in range(6):
            await add_user(store, DOMAIN, f"u{i}", PASSWORD)
    finally:
        await store.close()


def _ue(layout: Layout, name: str, downloads: Path | None = None) -> RcsClient:
    return RcsClient(name, PASSWORD, DOMAIN, pcscf=(HOST, layout.kamailio), expires=600,
                     downloads=downloads)


def test_scale_out_kill_nine_loses_nothing(network: dict[str, Proc], tmp_path: Path) -> None:
    layout: Layout = network["_layout"]  # type: ignore[assignment]
    asyncio.run(_scenario(network, layout, tmp_path))


async def _phase(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _restart(procs: dict[str, Proc], *names: str) -> None:
    for name in names:
        procs[name].restart()
    for name in names:
        await asyncio.to_thread(procs[name].wait_for, "listening on")


def _total(conversations: list[Conversation]) -> int:
    return sum(len(c.acked) for c in conversations)


async def _scenario(procs: dict[str, Proc], layout: Layout, directory: Path) -> None:
    ues = [_ue(layout, f"u{i}", directory / f"downloads-u{i}") for i in range(4)]
    for ue in ues:
        await ue.start()
    received: Received = {}
    files: list[FileReceived] = []
    collectors = [asyncio.ensure_future(_collect(ue, received, files)) for ue in ues]
    pairs = [(0, 1), (1, 0), (2, 3), (3, 2), (0, 2), (3, 1)]
    conversations = [Conversation(f"c{a}{b}", ues[a], ues[b]) for a, b in pairs]
    chats = [ChatTalk("h03", ues[0], ues[3]), ChatTalk("h21", ues[2], ues[1])]
    payload = directory / "photo.bin"
    payload.write_bytes(os.urandom(24_000))
    transfer = FileTalk(ues[1], ues[0], payload)
    stop = asyncio.Event()
    talkers = [asyncio.ensure_future(t.run(stop)) for t in (*conversations, *chats, transfer)]
    began = time.monotonic()
    timeline: list[str] = []
    try:
        await _kill_phases(procs, conversations, chats)
        timeline.append(f"S-CSCF/AS kills {time.monotonic() - began:.0f} s")
        await _kill_a_pcscf(procs, layout, conversations)
        timeline.append(f"P-CSCF kill {time.monotonic() - began:.0f} s")
    finally:
        stop.set()
        # a send that was on its way to a dead node may wait for timer F (32 s)
        _, slow = await asyncio.wait(talkers, timeout=6)
        for task in slow:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        timeline.append(f"traffic stopped {time.monotonic() - began:.0f} s")
    await asyncio.sleep(3)  # the last ones on their way, the last BYEs
    total = _total(conversations)
    refused = sum(c.refused for c in conversations)
    slowest = max((max(c.latencies) for c in conversations if c.latencies), default=0.0)
    dropped = sum(ue.notifications.duplicates for ue in ues)
    resent, late = _check(conversations, received)
    unconfirmed = _check_chats(chats, received)
    reasons = sorted({r for c in conversations for rs in c.errors.values() for r in rs})
    assert all(not ue.chats for ue in ues), "a chat dialog left hanging"
    ok_files = [f for f in files if f.ok]
    assert len(ok_files) == len(files), "a file arrived with a wrong hash"
    assert transfer.confirmed > 0 and len(ok_files) >= transfer.confirmed, \
        f"confirmed {transfer.confirmed} files, {len(ok_files)} arrived"
    print(f"\nscale-out: {total} messages with a 2xx, {refused} attempts refused "
          f"({resent} of those had arrived all the same), slowest 2xx {slowest:.1f} s, "
          f"{dropped} second copies dropped by the UEs (same imdn.Message-ID), {late} "
          f"refused ones arrived after later ones; "
          f"refusals: {reasons}")
    print(f"chats: {sum(len(t.acked) for t in chats)} chat messages with an MSRP 200 in "
          f"{sum(len(t.sessions) for t in chats)} chats, none lost, "
          f"{sum(t.resent for t in chats)} sent again after no 200, {unconfirmed} arrived "
          f"without ever a 200; broken chats ended: "
          f"{sorted(set(e for t in chats for e in t.ends))}; "
          f"files: {transfer.confirmed} confirmed, {len(transfer.failed)} failed")
    await _deferred_race(ues, layout, received)
    print(f"timeline: {', '.join(timeline)}, deferred race {time.monotonic() - began:.0f} s")
    for task in collectors:
        task.cancel()
    for ue in ues:
        await ue.close()


async def _kill_phases(procs: dict[str, Proc], conversations: list[Conversation],
                       chats: list[ChatTalk]) -> None:
    """S-CSCF 1 and AS 1 killed and restarted, then S-CSCF 2 and AS 2."""
    await _phase(3)
    before = _total(conversations)
    assert before > 0, "no message got through before the kills"
    assert all(t.acked for t in chats), "no chat message before the kills"
    procs["scscf1"].kill()
    procs["as1"].kill()
    await _phase(12)
    assert _total(conversations) > before + 10, "the survivors did not carry the traffic"
    await _restart(procs, "scscf1", "as1")
    await _phase(4)
    # the restarted ones rejoined: now they alone carry everything
    procs["scscf2"].kill()
    procs["as2"].kill()
    mark, chatted = _total(conversations), sum(len(t.acked) for t in chats)
    await _phase(12)
    assert _total(conversations) > mark + 10, "the restarted S-CSCF and AS did not take over"
    assert sum(len(t.acked) for t in chats) > chatted, "no chat after the second kill"
    await _restart(procs, "scscf2", "as2")
    await _phase(3)


async def _kill_a_pcscf(procs: dict[str, Proc], layout: Layout,
                        conversations: list[Conversation]) -> None:
    """P-CSCF 1 killed: Kamailio sends new requests to P-CSCF 2 within seconds
    (its OPTIONS probes), a new UE registers there, and the UEs that were on
    P-CSCF 1 get 403 from P-CSCF 2, register again and go on."""
    procs["pcscf1"].kill()
    at_kill = {c.name: len(c.acked) for c in conversations}
    await _phase(4)
    newcomer = RcsClient("u5", PASSWORD, DOMAIN, pcscf=(HOST, layout.kamailio),
                         answer_timeout=10)
    started = time.monotonic()
    await asyncio.wait_for(newcomer.start(), 15)
    registered_in = time.monotonic() - started
    await newcomer.close()
    # a request on its way to P-CSCF 1 at the kill waits for Kamailio's RELAY_TIMER
    await _phase(22)
    stalled = [c.name for c in conversations if len(c.acked) < at_kill[c.name] + 3]
    assert not stalled, f"stalled after the P-CSCF's kill: {stalled}"
    await _restart(procs, "pcscf1")
    await _phase(2)
    print(f"\nP-CSCF 1 killed: a new UE registered in {registered_in:.1f} s, 4 s after")


async def _deferred_race(ues: list[RcsClient], layout: Layout, received: Received) -> None:
    """Kept for offline u4, then u4 registers: both ASs hear of it and race for the
    items; each arrives once, in order."""
    offline = _ue(layout, "u4")
    ids = []
    for seq in range(8):
        ids.append(await ues[0].send_message(offline.aor, f"d04:{seq}"))
    assert all(ues[0].deferred(i) for i in ids), "not kept for the offline user"
    await offline.start()
    got: Received = {}
    collector = asyncio.ensure_future(_collect(offline, got))
    try:
        deadline = time.monotonic() + 20
        while len(got.get("d04", [])) < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # a second delivery would show by now
    finally:
        collector.cancel()
        await offline.close()
    seqs = [s for s, _ in got.get("d04", [])]
    assert seqs == list(range(8)), f"deferred delivery: {seqs}"
