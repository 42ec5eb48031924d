"""MSRP benchmark: loopback throughput between two processes, peak RSS, parse rate.

Run:  python tests/bench/bench_msrp.py [--size 1G] [--chunks 2048,65536]
Prints figures; it is not a test (no test_ functions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time

from imsbox.msrp import MsrpEndpoint, MsrpParser, MsrpUri, parse

BLOCK = os.urandom(1 << 20)


class SyntheticFile:
    """A read-only file of ``size`` bytes made of one repeated random block."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        off = self.left % (len(BLOCK) - n) if n < len(BLOCK) else 0
        return BLOCK[off : off + n]


class CountingSink:
    """Counts received bytes without keeping them."""

    def __init__(self) -> None:
        self.bytes = 0

    def write_at(self, offset: int, data: bytes) -> None:
        self.bytes += len(data)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def receiver() -> None:
    async with MsrpEndpoint("127.0.0.1", 0) as ep:
        session = ep.create_session(session_id="benchrx01")
        sink = CountingSink()
        session.sink_factory = lambda req: sink
        print(ep.port, flush=True)
        msg = await session.receive()
        print(json.dumps({"received": msg.size, "counted": sink.bytes, "rss_mib": rss_mib()}),
              flush=True)
        await asyncio.sleep(0.2)


async def sender(port: int, size: int, chunk: int) -> None:
    async with MsrpEndpoint("127.0.0.1", 0) as ep:
        remote = MsrpUri("msrp", "127.0.0.1", port, "benchrx01")
        session = ep.create_session(remote_path=[remote], setup="active", chunk_size=chunk)
        await session.start()
        t0 = time.perf_counter()
        await session.send_message("application/octet-stream", SyntheticFile(size), size=size)
        dt = time.perf_counter() - t0
        print(json.dumps({"seconds": dt, "mb_s": size / dt / 1e6, "rss_mib": rss_mib()}),
              flush=True)


def run_pair(size: int, chunk: int) -> tuple[dict, dict]:
    me = [sys.executable, os.path.abspath(__file__)]
    rx = subprocess.Popen([*me, "--role", "rx"], stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None
    port = int(rx.stdout.readline())
    tx = subprocess.run([*me, "--role", "tx", "--port", str(port), "--size", str(size), "--chunk", str(chunk)], stdout=subprocess.PIPE, text=True,
                        check=True)
    rx_out = json.loads(rx.stdout.readline())
    rx.wait(30)
    return json.loads(tx.stdout.strip().splitlines()[-1]), rx_out


def parse_rate(n: int = 100_000) -> tuple[float, float]:
    seed = os.path.join(os.path.dirname(__file__), "..", "fixtures", "msrp",
                        "001_03_send_hello_cpim.msrp")
    with open(seed, "rb") as f:
        one = f.read()
    stream = one * n
    t0 = time.perf_counter()
    p = MsrpParser()
    for i in range(0, len(stream), 65536):
        p.feed(stream[i : i + 65536])
    stream_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n // 5):
        parse(one)
    single_rate = (n // 5) / (time.perf_counter() - t0)
    return stream_rate, single_rate


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=size_arg, default=1 << 30)
    ap.add_argument("--chunks", default="2048,65536")
    ap.add_argument("--role", choices=["rx", "tx"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--chunk", type=int)
    args = ap.parse_args()
    if args.role == "rx":
        asyncio.run(receiver())
        return
    if args.role == "tx":
        asyncio.run(sender(args.port, args.size, args.chunk))
        return
    print(f"payload {args.size / (1 << 20):.0f} MiB over TCP loopback, sender and receiver in "
          f"separate processes")
    for chunk in (int(c) for c in args.chunks.split(",")):
        tx, rx = run_pair(args.size, chunk)
        assert rx["received"] == args.size == rx["counted"], rx
        print(f"  chunk {chunk:>6} B: {tx['mb_s']:8.1f} MB/s ({tx['seconds']:.2f} s); "
              f"peak RSS sender {tx['rss_mib']:.1f} MiB, receiver {rx['rss_mib']:.1f} MiB")
    stream_rate, single_rate = parse_rate()
    print(f"  parse: {stream_rate:,.0f} SEND msgs/s streamed (MsrpParser.feed), "
          f"{single_rate:,.0f} msgs/s via parse()")


if __name__ == "__main__":
    main()
