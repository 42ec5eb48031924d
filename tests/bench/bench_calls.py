"""Client-level call benchmark: concurrent two-party calls with RTP through the core.

Run:  PYTHONPATH=src python3 tests/bench/bench_calls.py [--calls 200] [--ues 20] [--seconds 10]

Three processes beside this one, as a deployment runs them: ``imsbox serve``
(every node, the default iFCs: each call passes the telephony AS on both sides)
and two client processes of this script, one with ``--ues`` caller UEs and one
with as many callee UEs (``RcsClient``s, registered through the P-CSCF with
Digest, each callee answering at once, call waiting on). The callers place
``--calls`` calls (``--setup-concurrency`` INVITEs in flight at a time, PCMU,
a 1000 Hz tone each way, decoded into the jitter buffer), hold them all up for
``--seconds``, then hang up. Printed:

* setup latency (INVITE sent -> 200 OK in the caller) p50 / p90 / p99 / max;
* CPU per call from /proc/PID/stat (utime + stime) of serve, the callers and
  the callees: during setup (ms of CPU per call set up) and while every call
  streams (% of one core, and ms of CPU per second per call);
* RTP over the hold window, both directions: packets sent / expected, late
  (arrived after their playout time), lost (RFC 3550, what did not arrive),
  concealed frames, worst and mean jitter.

Bounded: ``--calls`` at most 1000, ``--seconds`` at most 120, every wait has a
timeout. Not a test (no test_ functions, no timed assertions): it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import mkdtemp
from typing import IO, Any

from imsbox.config import load_config
from imsbox.ims.provisioning import add_user
from imsbox.media import ToneSource
from imsbox.store import open_store
from imsbox.testing import LoopbackPorts, write_loopback_config
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "ims.test"
PASSWORD = "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class CountingSink:
    """Where a call's decoded audio goes: counted, not kept."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0

    def write(self, pcm: bytes) -> None:
        self.frames += 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (proc(5): fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


# -- the client processes (--role callers / callees) ------------------------------------------

def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def clients(role: str, pcscf: int, ues: int) -> list[RcsClient]:
    prefix = "a" if role == "callers" else "b"
    made = []
    for i in range(ues):
        ue = RcsClient(f"{prefix}{i}", PASSWORD, DOMAIN, pcscf=("127.0.0.1", pcscf),
                       answer_calls=None if role == "callers" else 0.0)
        ue.call_service.source = lambda: ToneSource(1000)
        ue.call_service.sink = CountingSink
        made.append(ue)
    await asyncio.gather(*(ue.start() for ue in made))
    return made


def rtp_totals(calls: list[VoiceCall]) -> dict[str, float]:
    stats = [c.rtp.update_stats() for c in calls if c.rtp is not None]
    jitters = [s.jitter_ms for s in stats] or [0.0]
    return {"sent": sum(s.packets_sent for s in stats), "received": sum(s.packets_received for s in stats),
            "late": sum(s.late for s in stats), "lost": sum(s.lost for s in stats),
            "concealed": sum(s.concealed for s in stats), "streams": len(stats),
            "jitter_max": max(jitters), "jitter_mean": statistics.fmean(jitters)}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    out = dict(after)
    for key in ("sent", "received", "late", "lost", "concealed"):
        out[key] = after[key] - before[key]
    return out


async def callers(pcscf: int, ues: int, calls: int, concurrency: int, seconds: float) -> None:
    made = await clients("callers", pcscf, ues)
    say(event="ready")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)   # go
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    placed: list[VoiceCall] = []

    async def one(n: int) -> None:
        caller = made[n % ues]
        async with gate:
            start = time.monotonic()
            call = await caller.call_service.place(f"sip:b{n % ues}@{DOMAIN}", ToneSource(1000),
                                                    CountingSink())
            placed.append(call)
            if await call.wait_answered(30.0):
                latencies.append(time.monotonic() - start)
    await asyncio.gather(*(one(n) for n in range(calls)))
    up = [c for c in placed if c.answered.is_set() and not c.ended.is_set()]
    say(event="up", answered=len(up), failed=calls - len(up), latencies=latencies)
    await asyncio.sleep(1.0)                     # warm-up: jitter buffers fill
    before = rtp_totals(up)
    say(event="hold")
    await asyncio.sleep(seconds)
    after = rtp_totals(up)
    still = sum(not c.ended.is_set() for c in up)
    say(event="held", rtp=delta(after, before), still_up=still)
    await asyncio.gather(*(c.hangup() for c in up), return_exceptions=True)
    await asyncio.gather(*(ue.close() for ue in made), return_exceptions=True)
    say(event="done")


async def callees(pcscf: int, ues: int) -> None:
    made = await clients("callees", pcscf, ues)
    say(event="ready")
    loop = asyncio.get_running_loop()
    base: dict[str, float] | None = None
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        calls = [c for ue in made for c in ue.call_service.calls.values() if c.answered.is_set()]
        if line.strip() == "mark":
            base = rtp_totals(calls)
            say(event="marked", calls=len(calls))
        elif line.strip() == "report" and base is not None:
            say(event="report", rtp=delta(rtp_totals(calls), base))
        else:
            break
    await asyncio.gather(*(ue.close() for ue in made), return_exceptions=True)
    say(event="done")


# -- the orchestrator -----------------------------------------------------------------------

class Proc:
    def __init__(self, name: str, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")])))
        self.name = name
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env)

    @property
    def stdout(self) -> IO[str]:
        assert self.p.stdout is not None
        return self.p.stdout

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def expect(self, event: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited (status {self.p.poll()}) before {event}")
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item.get("event") == event:
                return dict(item)
        raise RuntimeError(f"{self.name}: no {event} in {timeout} s")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()


def provision(workdir: Path, ues: int) -> Path:
    path, _ = write_loopback_config(workdir, LoopbackPorts())
    config = load_config(path)

    async def users() -> None:
        async with open_store(config.store_location) as store:
            for i in range(ues):
                await add_user(store, DOMAIN, f"a{i}", PASSWORD)
                await add_user(store, DOMAIN, f"b{i}", PASSWORD)
    asyncio.run(users())
    return path


def start_serve(path: Path) -> tuple[Proc, int]:
    serve = Proc("serve", [sys.executable, "-m", "imsbox.cli", "serve", "--config", str(path)])
    config = load_config(path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # the P-CSCF answers OPTIONS once it is up
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", config.pcscf.port)) == 0:
                return serve, config.pcscf.port
        time.sleep(0.2)
    serve.stop()
    raise RuntimeError("imsbox serve did not come up")


def report(calls: int, seconds: float, up: dict[str, Any], cpu: dict[str, tuple[float, float]],
           rtp_a: dict[str, float], rtp_b: dict[str, float], still: int) -> None:
    lat = [1000 * x for x in up["latencies"]]
    answered = up["answered"]
    print(f"calls: {calls} placed, {answered} answered, {up['failed']} failed, "
          f"{still} still up after the {seconds:.0f} s hold")
    print(f"setup latency (INVITE -> 200 OK) ms: p50 {percentile(lat, .5):.1f}  "
          f"p90 {percentile(lat, .9):.1f}  p99 {percentile(lat, .99):.1f}  max {max(lat or [0]):.1f}")
    print(f"{'process':<9} {'setup CPU/call':>15} {'hold CPU':>9} {'hold CPU/call':>14}")
    for name, (setup, hold) in cpu.items():
        print(f"{name:<9} {1000 * setup / max(answered, 1):>12.2f} ms {100 * hold / seconds:>8.0f}% "
              f"{1000 * hold / seconds / max(answered, 1):>9.2f} ms/s")
    for name, side in (("callers", rtp_a), ("callees", rtp_b)):
        print(f"  {name}: {side['streams']:.0f} streams, sent {side['sent']:.0f}, "
              f"received {side['received']:.0f}, expected {side['streams'] * 50 * seconds:.0f} each")
    sent = rtp_a["sent"] + rtp_b["sent"]
    received = rtp_a["received"] + rtp_b["received"]
    expected = (rtp_a["streams"] + rtp_b["streams"]) * 50 * seconds
    late, lost = rtp_a["late"] + rtp_b["late"], rtp_a["lost"] + rtp_b["lost"]
    print(f"RTP over the hold, both ways: {received / seconds:.0f} packets/s received, "
          f"sent/expected {sent / max(expected, 1):.3f}, late {100 * late / max(received, 1):.2f} %, "
          f"lost {100 * max(lost, 0) / max(sent, 1):.2f} %, concealed "
          f"{rtp_a['concealed'] + rtp_b['concealed']:.0f} frames, jitter mean "
          f"{statistics.fmean([rtp_a['jitter_mean'], rtp_b['jitter_mean']]):.2f} ms "
          f"max {max(rtp_a['jitter_max'], rtp_b['jitter_max']):.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--ues", type=int, default=20, help="caller UEs (as many callees)")
    parser.add_argument("--seconds", type=float, default=10.0, help="hold window")
    parser.add_argument("--setup-concurrency", type=int, default=20)
    parser.add_argument("--role", choices=["callers", "callees"], help=argparse.SUPPRESS)
    parser.add_argument("--pcscf", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.calls, args.seconds = min(args.calls, 1000), min(args.seconds, 120.0)
    if args.role == "callers":
        asyncio.run(callers(args.pcscf, args.ues, args.calls, args.setup_concurrency, args.seconds))
        return 0
    if args.role == "callees":
        asyncio.run(callees(args.pcscf, args.ues))
        return 0
    path = provision(Path(mkdtemp(prefix="bench-calls-")), args.ues)
    serve, pcscf = start_serve(path)
    me = [sys.executable, __file__, "--pcscf", str(pcscf), "--ues", str(args.ues)]
    a = Proc("callers", [*me, "--role", "callers", "--calls", str(args.calls), "--seconds",
                         str(args.seconds), "--setup-concurrency", str(args.setup_concurrency)])
    b = Proc("callees", [*me, "--role", "callees"])
    procs = {"serve": serve, "callers": a, "callees": b}
    try:
        a.expect("ready")
        b.expect("ready")
        start = {n: cpu_seconds(p.p.pid) for n, p in procs.items()}
        a.send("go")
        up = a.expect("up", 300)
        after_setup = {n: cpu_seconds(p.p.pid) for n, p in procs.items()}
        a.expect("hold")
        b.send("mark")
        b.expect("marked")
        hold0 = {n: cpu_seconds(p.p.pid) for n, p in procs.items()}
        held = a.expect("held", args.seconds + 60)
        hold1 = {n: cpu_seconds(p.p.pid) for n, p in procs.items()}
        b.send("report")
        rtp_b = b.expect("report")["rtp"]
        cpu = {n: (after_setup[n] - start[n], hold1[n] - hold0[n]) for n in procs}
        report(args.calls, args.seconds, up, cpu, held["rtp"], rtp_b, held["still_up"])
        a.expect("done")
        b.send("quit")
        b.expect("done")
    finally:
        for p in (a, b, serve):
            p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
