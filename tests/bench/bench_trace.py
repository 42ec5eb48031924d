"""Trace benchmark: what the trace feed costs the network.

Run:  python tests/bench/bench_trace.py [--messages 500] [--window 32] [--rounds 3]
Prints a table; it is not a test.

Pager messages/s (alice -> bob through P-CSCF, S-CSCF, messaging AS, I-CSCF ...,
delivery IMDN asked for; the rate until bob has all N, as in bench_messaging)
on a fresh Network per run, in four modes:

* ``off``: no trace feed at all (``Network(feed=False)``);
* ``feed, nobody attached``: the feed open as ``imsbox serve`` runs it, no subscriber
  (each node's tracer returns after one test of an empty list);
* ``imsbox trace --plain``: the real CLI attached in a subprocess, building its
  ladder of every message as they come (printed at the end, to /dev/null);
* ``imsbox trace --pcap``: the same writing pcapng, bounded with ``--count``.

The modes run interleaved, ``rounds`` times each; the table shows the median and the
cost against ``off``. The host is shared: read the spread as well as the median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_messaging import client, count_received, lab_config

from imsbox.serve import Network

SRC = Path(__file__).resolve().parents[2] / "src"
MODES = ("off", "feed, nobody attached", "imsbox trace --plain", "imsbox trace --pcap")


@contextlib.asynccontextmanager
async def subscriber(net: Network, data_dir: Path, mode: str, n: int,
                     out: Path) -> AsyncIterator[None]:
    if not mode.startswith("imsbox trace"):
        yield
        return
    args = ["--plain"] if mode.endswith("--plain") else \
        ["--pcap", str(out), "--count", str(n * 40)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imsbox.cli", "trace", "--data", str(data_dir), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stderr is not None
    line = await proc.stderr.readline()
    assert b"attached" in line, line
    feed = net.trace_feed
    assert feed is not None
    while feed.attached < 1:
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        summary = (await proc.stderr.read()).decode().strip()
        await proc.wait()
        print(f"    {mode}: {summary.splitlines()[-1] if summary else '?'}", file=sys.stderr)


async def pager_rate(directory: Path, mode: str, n: int, window: int) -> tuple[float, float]:
    """(messages/s, CPU ms per message of this process: network and both UEs)."""
    config = await lab_config(directory)
    alice, bob = client(config, "alice"), client(config, "bob")
    async with Network(config, feed=mode != "off") as net:
        started = [await alice.start(), await bob.start()]
        try:
            async with subscriber(net, config.data_dir, mode, n, directory / "t.pcapng"):
                got: set[str] = set()
                sem = asyncio.Semaphore(window)
                receiver = asyncio.ensure_future(count_received(bob, n, got))

                async def one(i: int) -> str:
                    async with sem:
                        return await alice.send_message(
                            "bob", f"benchmark message {i:06d}: the quick brown fox")
                t0, cpu0 = time.perf_counter(), time.process_time()
                await asyncio.gather(*(one(i) for i in range(n)))
                elapsed = await asyncio.wait_for(receiver, 120) - t0
                cpu = time.process_time() - cpu0
        finally:
            for ue in started:
                await ue.close()
    return n / elapsed, cpu * 1000 / n


class _Flow:
    transport, local, remote, conn_id = "udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070), None


async def tracer_cost(directory: Path, calls: int = 200_000) -> tuple[float, float]:
    """ns per SIP tracer call: nobody attached, and one subscriber reading."""
    from imsbox.trace.feed import TraceFeed, attach

    data = b"MESSAGE sip:bob@ims.test SIP/2.0\r\n" + b"X-Pad: 0123456789\r\n" * 40 + b"\r\n"
    feed = await TraceFeed(directory / "bench.sock").start()
    try:
        trace, flow = feed.sip_tracer("pcscf"), _Flow()
        t0 = time.perf_counter()
        for _ in range(calls):
            trace("out", data, flow)
        idle = (time.perf_counter() - t0) / calls * 1e9
        _, events = await attach([feed.path])
        await anext(events)  # the hello

        async def drain() -> None:
            async for _ in events:
                pass
        reader = asyncio.create_task(drain())
        n = calls // 20
        t0 = time.perf_counter()
        for i in range(n):
            trace("out", data, flow)
            if i % 256 == 0:
                await asyncio.sleep(0)  # let the reader run, as the loop would
        busy = (time.perf_counter() - t0) / n * 1e9
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await events.aclose()
    finally:
        await feed.close()
    return idle, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            with tempfile.TemporaryDirectory(prefix="imsbox-bt-") as tmp:
                rate, cpu = asyncio.run(pager_rate(Path(tmp), mode, args.messages,
                                                   args.window))
                rates[mode].append(rate)
                cpus[mode].append(cpu)
    with tempfile.TemporaryDirectory(prefix="imsbox-bt-") as tmp:
        idle, busy = asyncio.run(tracer_cost(Path(tmp)))
    print(f"SIP tracer call (1 KB message): nobody attached {idle:,.0f} ns, "
          f"one subscriber attached {busy / 1000:,.1f} us (encode + write, reader in-process)")
    base = statistics.median(rates["off"])
    base_cpu = statistics.median(cpus["off"])
    print(f"pager messages/s, {args.messages} messages, window {args.window}, "
          f"{args.rounds} rounds (median; min-max); CPU of the network's process per message")
    print(f"{'mode':<24} {'msg/s':>7} {'vs off':>8} {'spread':>10} {'CPU ms/msg':>11} {'vs off':>8}")
    for mode in MODES:
        value, cpu = statistics.median(rates[mode]), statistics.median(cpus[mode])
        spread = f"{min(rates[mode]):,.0f}-{max(rates[mode]):,.0f}"
        print(f"{mode:<24} {value:>7,.0f} {(value / base - 1) * 100:>+7.1f}% {spread:>10} "
              f"{cpu:>11.2f} {(cpu / base_cpu - 1) * 100:>+7.1f}%")


if __name__ == "__main__":
    main()
