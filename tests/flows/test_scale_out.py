"""Scale-out on loopback, every node its own ``imsbox serve --role`` process:

    UEs -> Kamailio dispatcher -> 2 P-CSCFs -> 1 I-CSCF -> 2 S-CSCFs -> 2 messaging ASs

all on one throw-away PostgreSQL with a Redis cache. Four UEs keep up four
pager conversations while one S-CSCF and one AS are killed with SIGKILL,
restarted, and then the other two are killed (so the restarted ones must have
rejoined to carry the traffic). Every message that got a 2xx must arrive exactly
once and in order per conversation. Then messages kept for an offline user are
delivered once each when it registers, with both ASs racing for them (leases).

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
from imsbox.ue import MessageReceived, RcsClient, SendError

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(280)]

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

    def __post_init__(self) -> None:
        take = self.ports
        self.kamailio = take()
        self.pcscf = (take(), take())
        self.icscf = take()
        self.scscf = (take(), take())
        self.messaging = (take(), take())
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


async def _collect(client: RcsClient, into: Received) -> None:
    async for event in client.events():
        if isinstance(event, MessageReceived):
            conv, _, seq = event.text.partition(":")
            into.setdefault(conv, []).append((int(seq), event.message_id))


def _check(conversations: list[Conversation], received: Received) -> int:
    """Exactly once per 2xx, in order; returns how many sends that got an error
    (and were sent again, as a new message) had arrived all the same."""
    resent = 0
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
        assert firsts == sorted(firsts), f"{conv.name}: out of order: {firsts}"
        lost = sorted(set(conv.acked) - set(seqs))
        assert not lost, f"{conv.name}: got a 2xx but never arrived: {lost}"
    return resent


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


TROUBLE = ("untrusted", "from another port", "cannot bind", "Traceback")


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
        for i in range(5):
            await add_user(store, DOMAIN, f"u{i}", PASSWORD)
    finally:
        await store.close()


def _ue(layout: Layout, name: str) -> RcsClient:
    return RcsClient(name, PASSWORD, DOMAIN, pcscf=(HOST, layout.kamailio), expires=600)


def test_scale_out_kill_nine_loses_nothing(network: dict[str, Proc]) -> None:
    layout: Layout = network["_layout"]  # type: ignore[assignment]
    asyncio.run(_scenario(network, layout))


async def _phase(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _scenario(procs: dict[str, Proc], layout: Layout) -> None:
    ues = [_ue(layout, f"u{i}") for i in range(4)]
    for ue in ues:
        await ue.start()
    received: Received = {}
    collectors = [asyncio.ensure_future(_collect(ue, received)) for ue in ues]
    pairs = [(0, 1), (1, 0), (2, 3), (3, 2), (0, 2), (3, 1)]
    conversations = [Conversation(f"c{a}{b}", ues[a], ues[b]) for a, b in pairs]
    stop = asyncio.Event()
    talkers = [asyncio.ensure_future(c.run(stop)) for c in conversations]
    try:
        await _phase(3)
        before = sum(len(c.acked) for c in conversations)
        assert before > 0, "no message got through before the kills"
        procs["scscf1"].kill()
        procs["as1"].kill()
        await _phase(12)
        after_kill = sum(len(c.acked) for c in conversations)
        assert after_kill > before + 10, "the survivors did not carry the traffic"
        procs["scscf1"].restart()
        procs["as1"].restart()
        procs["scscf1"].wait_for("listening on")
        procs["as1"].wait_for("listening on")
        await _phase(4)
        # the restarted ones rejoined: now they alone carry everything
        procs["scscf2"].kill()
        procs["as2"].kill()
        mark = sum(len(c.acked) for c in conversations)
        await _phase(12)
        assert sum(len(c.acked) for c in conversations) > mark + 10, \
            "the restarted S-CSCF and AS did not take over"
        procs["scscf2"].restart()
        procs["as2"].restart()
        procs["scscf2"].wait_for("listening on")
        procs["as2"].wait_for("listening on")
        await _phase(3)
    finally:
        stop.set()
        await asyncio.gather(*talkers, return_exceptions=True)
    await asyncio.sleep(3)  # the last ones on their way
    total = sum(len(c.acked) for c in conversations)
    refused = sum(c.refused for c in conversations)
    slowest = max((max(c.latencies) for c in conversations if c.latencies), default=0.0)
    dropped = sum(ue.notifications.duplicates for ue in ues)
    resent = _check(conversations, received)
    reasons = sorted({r for c in conversations for rs in c.errors.values() for r in rs})
    print(f"\nscale-out: {total} messages with a 2xx, {refused} attempts refused "
          f"({resent} of those had arrived all the same), slowest 2xx {slowest:.1f} s, "
          f"{dropped} second copies dropped by the UEs (same imdn.Message-ID); "
          f"refusals: {reasons}")
    await _deferred_race(ues, layout, received)
    for task in collectors:
        task.cancel()
    for ue in ues:
        await ue.close()


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
