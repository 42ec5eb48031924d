"""Memory soak: registrations and pager MESSAGEs through the core, RSS and tracemalloc.

Run:  python tests/bench/bench_soak.py [--registrations 10000] [--messages 100000]
                                       [--window 32] [--t1 0.2] [--quick] [--top 12]
Prints figures; it is not a test (no test_ functions).

One process, one asyncio loop: the whole ``imsbox serve`` network (P-CSCF,
I-CSCF, S-CSCF with the HSS, messaging / conference / telephony AS, media
server; embedded SQLite store in a temporary data dir) on loopback, and light
UEs built on our SIP layer (``SipEndpoint`` + ``ue.register.Registration``, no
RcsClient) that keep nothing per user between exchanges.

* phase 1 registers N users (Digest MD5: REGISTER, 401, REGISTER, 200; the
  S-CSCF's third-party REGISTERs to the ASs) through the P-CSCF, at most
  ``window`` at a time, spread over ``--sockets`` UE sockets;
* phase 2 de-registers them (Expires: 0, Digest again);
* phase 3 registers alice and bob and sends M plain-text pager MESSAGEs alice
  -> bob (UE -> P -> S(orig) -> I -> S(term) -> P -> UE; no CPM header, so no AS
  in the path), ``window`` in flight, bob answering 200.

After each phase the benchmark waits until the transactions have timed out
(Timer J/K = 64*T1: ``--t1`` shortens every node's T1, T2 and T4 together),
runs ``gc.collect()`` and prints RSS (VmRSS) and the traced Python heap
against the baseline taken after a warm-up, per registration held, with the
source lines that grew most; during phase 3 every 10 %.  The node counters
(transactions held, P-CSCF registrations, HSS profile cache, ...) show which
map holds what.  tracemalloc slows the run about 2x; ``--no-trace`` leaves it
off (RSS only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from imsbox.config import load_config  # noqa: E402
from imsbox.ims.provisioning import add_user  # noqa: E402
from imsbox.serve import Network  # noqa: E402
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint  # noqa: E402
from imsbox.sip.message import Response, new_tag  # noqa: E402
from imsbox.sip.transaction import TimerValues  # noqa: E402
from imsbox.sip.transport.base import Destination  # noqa: E402
from imsbox.sip.ua.dialog import build_request  # noqa: E402
from imsbox.store import open_store  # noqa: E402
from imsbox.testing import write_loopback_config  # noqa: E402
from imsbox.ue.register import Registration  # noqa: E402

DOMAIN = "ims.test"
PASSWORD = "soak-secret"
HOST = "127.0.0.1"
WARMUP = 200  # registrations before the baseline: code paths, caches of fixed size


# -- measuring ----------------------------------------------------------------------------

def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_parts() -> str:
    """Anonymous memory (heap, SQLite's cache, thread arenas) vs mapped files."""
    extra = ""
    if tracemalloc.is_tracing():
        extra = f", tracemalloc's own {tracemalloc.get_tracemalloc_memory() / 2**20:.1f} MiB"
    return (f"RssAnon {rss_bytes('RssAnon') / 2**20:.1f} MiB, RssFile "
            f"{rss_bytes('RssFile') / 2**20:.1f} MiB{extra}")


@dataclass
class Sample:
    label: str
    rss: int
    traced: int
    snapshot: tracemalloc.Snapshot | None


def sample(label: str) -> Sample:
    gc.collect()
    if not tracemalloc.is_tracing():
        return Sample(label, rss_bytes(), 0, None)
    snapshot = tracemalloc.take_snapshot().filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, "<unknown>"),
    ))
    return Sample(label, rss_bytes(), tracemalloc.get_traced_memory()[0], snapshot)


def mib(n: float) -> str:
    return f"{n / 2**20:7.1f} MiB"


def report(now: Sample, base: Sample, per: int, unit: str, top: int) -> None:
    """RSS and heap against ``base``; per ``unit`` when ``per`` > 0; top lines."""
    rss, heap = now.rss - base.rss, now.traced - base.traced
    line = (f"  [{now.label}] RSS {mib(now.rss)} ({rss / 2**20:+.1f} MiB vs {base.label}, "
            f"{rss / base.rss:+.1%})")
    if now.snapshot is not None:
        line += f"; traced heap {heap / 2**20:+.1f} MiB"
    if per:
        line += f"; per {unit}: RSS {rss / per / 1024:+.2f} KB"
        if now.snapshot is not None:
            line += f", heap {heap / per / 1024:+.2f} KB"
    print(line, flush=True)
    if now.snapshot is None or base.snapshot is None or top <= 0:
        return
    deep = tracemalloc.get_traceback_limit() > 1  # --frames: who allocated it
    stats = now.snapshot.compare_to(base.snapshot, "traceback" if deep else "lineno")
    stats = [s for s in stats if s.size_diff > 0][:top]
    for stat in stats:
        frame = stat.traceback[0]
        name = _short(frame.filename)
        each = f"{stat.size_diff / per:8.0f} B/{unit}" if per else ""
        print(f"      {stat.size_diff / 1024:+10.1f} KB {stat.count_diff:+8d} blocks {each}  "
              f"{name}:{frame.lineno}", flush=True)
        for caller in list(stat.traceback)[1:] if deep else []:
            print(f"{'':40}<- {_short(caller.filename)}:{caller.lineno}")


def _short(filename: str) -> str:
    for marker in ("/src/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def node_counts(net: Network) -> str:
    """What the nodes hold now: transactions per node and the per-user maps."""
    parts = []
    for role, node in net.nodes.items():
        parts.append(f"{role} txns {len(node.endpoint.layer)}")
    pcscf, scscf, msg = (net.nodes.get(r) for r in ("pcscf", "scscf", "as"))
    if pcscf is not None:
        parts.append(f"P-CSCF regs {len(pcscf.registrations)}")  # type: ignore[attr-defined]
    if net.hss is not None:
        parts.append(f"HSS profiles {len(net.hss._profiles)}")
    if scscf is not None:
        registrar = scscf.registrar  # type: ignore[attr-defined]
        parts.append(f"S-CSCF aor locks {len(registrar._aor_locks)}, nonces "
                     f"{len(registrar.auth._seen)}, login guard {registrar.guard.table_sizes()}")
    if msg is not None:
        parts.append(f"AS registered {len(msg.registered)}")  # type: ignore[attr-defined]
    return "; ".join(parts)


# -- light UEs ------------------------------------------------------------------------------

class Ues:
    """``sockets`` UDP endpoints; user i registers from socket i % sockets."""

    def __init__(self, timers: TimerValues, pcscf: Destination, sockets: int) -> None:
        self.timers = timers
        self.pcscf = pcscf
        self.endpoints = [SipEndpoint(timers) for _ in range(sockets)]
        self.ports: list[int] = []

    async def start(self) -> Ues:
        for endpoint in self.endpoints:
            self.ports.append((await endpoint.listen("udp", HOST, 0))[1])
        return self

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.close()

    def registration(self, user: str, index: int, cseq: int) -> tuple[SipEndpoint,
                                                                      Registration]:
        """Made fresh for each exchange: same Call-ID and tag every time (RFC 3261
        10.2.4), so nothing of the user is kept here between exchanges."""
        slot = index % len(self.endpoints)
        reg = Registration(f"sip:{user}@{DOMAIN}", f"sip:{user}@{HOST}:{self.ports[slot]}",
                           self.pcscf, call_id=f"soak-{user}", tag=f"t-{user}",
                           username=f"{user}@{DOMAIN}", cseq=cseq)
        return self.endpoints[slot], reg


async def windowed(count: int, window: int, one: Callable[[int], Awaitable[bool]]) -> int:
    """Run ``one(i)`` for i < count, ``window`` at a time; failures counted."""
    sem = asyncio.Semaphore(window)
    failed = 0

    async def run(i: int) -> None:
        nonlocal failed
        try:
            failed += not await one(i)
        finally:
            sem.release()

    tasks = set()
    for i in range(count):
        await sem.acquire()
        task = asyncio.ensure_future(run(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return failed


async def register_all(ues: Ues, users: list[str], expires: int, cseq: int,
                       window: int, offset: int = 0) -> int:
    async def one(i: int) -> bool:
        endpoint, reg = ues.registration(users[i], offset + i, cseq)
        response = await reg.send(endpoint, PASSWORD, expires, attempts=1)
        return 200 <= response.status < 300
    return await windowed(len(users), window, one)


# -- the benchmark ------------------------------------------------------------------------

async def provision(store_location: str, users: Iterable[str]) -> None:
    async with open_store(store_location) as store:
        batch: list[str] = []
        for name in itertools.chain(users, [None]):  # type: ignore[list-item]
            if name is not None:
                batch.append(name)
            if len(batch) >= 200 or (name is None and batch):
                # concurrent adds share the SQLite group commits
                await asyncio.gather(*(add_user(store, DOMAIN, n, PASSWORD) for n in batch))
                batch = []


async def settle(timers: TimerValues, net: Network) -> float:
    """Wait until every node's transactions have timed out (at most 64*T1 + 2 s)."""
    t0 = time.monotonic()
    deadline = t0 + 64 * timers.t1 + 2
    while time.monotonic() < deadline:
        if all(len(n.endpoint.layer) == 0 for n in net.nodes.values()):
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(0.3)  # the last timers' callbacks
    return time.monotonic() - t0


async def soak(args: argparse.Namespace, directory: Path) -> int:
    path, _ = write_loopback_config(directory)
    config = load_config(path)
    users = [f"u{i:06d}" for i in range(args.registrations + WARMUP)]
    t0 = time.monotonic()
    await provision(config.store_location, [*users, "alice", "bob"])
    print(f"provisioned {len(users) + 2} subscribers in {time.monotonic() - t0:.1f} s",
          flush=True)
    t = args.t1
    timers = TimerValues(t1=t, t2=min(4.0, 8 * t), t4=min(5.0, 10 * t))
    failures = 0
    async with Network(config, timers=timers) as net:
        pcscf = Destination("udp", config.pcscf.host, config.pcscf.port)
        ues = await Ues(timers, pcscf, args.sockets).start()
        try:
            if args.trace:
                tracemalloc.start(args.frames)
            warm, rest = users[:WARMUP], users[WARMUP:]
            failures += await register_all(ues, warm, 3600, 0, args.window)
            failures += await register_all(ues, warm, 0, 2, args.window)
            await settle(timers, net)
            base = sample("baseline")
            print(f"baseline after {WARMUP} warm-up registrations: RSS {mib(base.rss)}; "
                  f"{node_counts(net)}", flush=True)
            failures += await phase_register(args, net, ues, rest, base, timers)
            failures += await phase_messages(args, net, ues, base, timers)
        finally:
            await ues.close()
    return failures


async def phase_register(args: argparse.Namespace, net: Network, ues: Ues, users: list[str],
                         base: Sample, timers: TimerValues) -> int:
    n = len(users)
    print(f"\nphase 1: {n} registrations (Digest), window {args.window}", flush=True)
    t0, cpu0 = time.monotonic(), time.process_time()
    failed = 0
    for k in range(4):  # in quarters, RSS after each (no snapshot: cheap)
        part = users[n * k // 4:n * (k + 1) // 4]
        failed += await register_all(ues, part, 3600, 0, args.window,
                                     offset=WARMUP + n * k // 4)
        print(f"  {n * (k + 1) // 4:6d} registered: RSS {mib(rss_bytes())} ({rss_parts()}); "
              f"transactions held {sum(len(x.endpoint.layer) for x in net.nodes.values())}",
              flush=True)
    took, cpu = time.monotonic() - t0, time.process_time() - cpu0
    print(f"  {n - failed} registered, {failed} failed, {took:.1f} s ({n / took:.0f}/s, "
          f"CPU {1000 * cpu / n:.1f} ms per registration, whole process)", flush=True)
    txns = sum(len(x.endpoint.layer) for x in net.nodes.values())
    if txns and args.trace:
        # what the transactions waiting for Timer J/K hold (RSS's high-water mark)
        report(sample("registered, transactions held"), base, txns, "transaction", args.top)
    waited = await settle(timers, net)
    held = sample("registered")
    print(f"  after {waited:.1f} s for the transactions to time out: {node_counts(net)}; "
          f"{rss_parts()}")
    report(held, base, n, "registration", args.top)

    print(f"\nphase 2: {n} de-registrations (Expires: 0, Digest)", flush=True)
    t0 = time.monotonic()
    failed_out = await register_all(ues, users, 0, 2, args.window, offset=WARMUP)
    print(f"  {n - failed_out} de-registered, {failed_out} failed, "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    waited = await settle(timers, net)
    gone = sample("de-registered")
    print(f"  after {waited:.1f} s: {node_counts(net)}")
    report(gone, base, n, "registration", args.top)
    return failed + failed_out


async def phase_messages(args: argparse.Namespace, net: Network, ues: Ues, base: Sample,
                         timers: TimerValues) -> int:
    m = args.messages
    alice_ep, bob_ep = SipEndpoint(timers), SipEndpoint(timers)
    received = 0

    def answer(ctx: ServerContext) -> None:
        nonlocal received
        received += ctx.request.method == "MESSAGE"
        if ctx.txn is not None:
            ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))

    bob_ep.add_module(HandlerModule(answer))
    try:
        routes = {}
        for name, endpoint in (("alice", alice_ep), ("bob", bob_ep)):
            port = (await endpoint.listen("udp", HOST, 0))[1]
            reg = Registration(f"sip:{name}@{DOMAIN}", f"sip:{name}@{HOST}:{port}", ues.pcscf,
                               username=f"{name}@{DOMAIN}")
            response = await reg.send(endpoint, PASSWORD, 3600, attempts=1)
            if response.status != 200:
                raise RuntimeError(f"cannot register {name}: {response.status}")
            routes[name] = reg.route()
        await settle(timers, net)
        start = sample("before messages")
        print(f"\nphase 3: {m} pager MESSAGEs alice -> bob through the core, window "
              f"{args.window}; RSS {mib(start.rss)}; {node_counts(net)}", flush=True)

        async def one(i: int) -> bool:
            request = build_request(
                "MESSAGE", f"sip:bob@{DOMAIN}", f"<sip:alice@{DOMAIN}>", f"<sip:bob@{DOMAIN}>",
                route=routes["alice"], body=f"soak message {i:07d}".encode(),
                content_type="text/plain")
            response = await alice_ep.request(request).final()
            return response.status == 200

        t0, cpu0 = time.monotonic(), time.process_time()
        failed, done, paused = 0, 0, 0.0
        for k in range(1, 11):
            # in tenths, each drained before its sample: a snapshot stalls the loop
            # for seconds, which must not time out messages in flight
            upto = m * k // 10
            failed += await windowed(upto - done, args.window,
                                     lambda i, first=done: one(first + i))
            done = upto
            took = time.monotonic() - t0 - paused
            t_sample = time.monotonic()
            now = sample(f"{done} sent")
            print(f"  {done:7d} messages, {took:6.1f} s, {done / took:5.0f}/s: "
                  f"{node_counts(net)}", flush=True)
            report(now, start, done, "message", 3)
            paused += time.monotonic() - t_sample
        # the samples' own time (snapshots, gc) left out
        took, cpu = time.monotonic() - t0 - paused, time.process_time() - cpu0 - paused
        print(f"  {m - failed} answered 200, {failed} failed, bob received {received}, "
              f"{took:.1f} s, CPU {1000 * cpu / m:.2f} ms per message (whole process)")
        waited = await settle(timers, net)
        end = sample("messages done")
        print(f"  after {waited:.1f} s for the transactions to time out: {node_counts(net)}")
        report(end, start, m, "message", args.top)
        report(end, base, 0, "", 0)
        return failed
    finally:
        await alice_ep.close()
        await bob_ep.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=32, help="exchanges in flight")
    parser.add_argument("--sockets", type=int, default=20, help="UE sockets for phase 1-2")
    parser.add_argument("--t1", type=float, default=0.2,
                        help="SIP T1 of every node (Timer J = 64*T1)")
    parser.add_argument("--top", type=int, default=12, help="tracemalloc lines shown")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames")
    parser.add_argument("--no-trace", dest="trace", action="store_false",
                        help="RSS only, no tracemalloc")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 registrations and 10,000 messages")
    args = parser.parse_args()
    if args.quick:
        args.registrations, args.messages = 2000, 10_000
    with tempfile.TemporaryDirectory(prefix="imsbox-soak-") as tmp:
        t0 = time.monotonic()
        failures = asyncio.run(soak(args, Path(tmp)))
    print(f"\ndone in {time.monotonic() - t0:.0f} s; {failures} failed exchanges; "
          f"pid {os.getpid()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
