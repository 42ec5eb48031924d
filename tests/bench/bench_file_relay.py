"""File relay benchmark: a file through the messaging AS's MSRP relay (anchor._FileRelay)
in its own process; prints MB/s and the relay process's peak RSS (VmHWM from /proc).

Run:  python tests/bench/bench_file_relay.py [--size 100M]
Not the whole serve process (no SIP legs): the MSRP relay path the AS runs for a
file, sender and receiver in a second process. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from imsbox.apps.anchor import _FileRelay
from imsbox.msrp import MsrpEndpoint, MsrpUri

BLOCK = os.urandom(1 << 20)


class Source:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int) -> bytes:
        n = min(n, self.left, len(BLOCK))
        self.left -= n
        return BLOCK[:n]


class Counter:
    def __init__(self) -> None:
        self.bytes = 0

    def write_at(self, offset: int, data: bytes) -> None:
        self.bytes += len(data)


async def relay(rx_port: int) -> None:
    """The AS side: near session from the sender, far session to the receiver."""
    async with MsrpEndpoint("127.0.0.1", 0) as ep:
        far = ep.create_session([MsrpUri("msrp", "127.0.0.1", rx_port, "benchrx02")],
                                setup="active")
        await far.start()
        near = ep.create_session(session_id="benchnear2")
        relays: list[_FileRelay] = []

        def sink(req: Any) -> _FileRelay:
            relays.append(_FileRelay(req, near, far))
            return relays[-1]

        near.sink_factory = sink
        print(ep.port, flush=True)
        while not relays:
            await asyncio.sleep(0.05)
        await relays[0].task
        await asyncio.sleep(0.5)


def vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def ends(size: int) -> None:
    async with MsrpEndpoint("127.0.0.1", 0) as rx_ep, MsrpEndpoint("127.0.0.1", 0) as tx_ep:
        rx = rx_ep.create_session(session_id="benchrx02")
        counter = Counter()
        rx.sink_factory = lambda req: counter
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--role", "relay",
            "--port", str(rx_ep.port), stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        as_port = int(await proc.stdout.readline())
        tx = tx_ep.create_session([MsrpUri("msrp", "127.0.0.1", as_port, "benchnear2")],
                                  setup="active", chunk_size=65536)
        await tx.start()
        t0 = time.perf_counter()
        await tx.send_message("application/octet-stream", Source(size), size=size)
        while counter.bytes < size:
            await asyncio.sleep(0.01)
        dt = time.perf_counter() - t0
        hwm = vm_hwm_mib(proc.pid)
        await proc.wait()
        print(f"file relay {size / (1 << 20):.0f} MiB: {size / dt / 1e6:.1f} MB/s "
              f"({dt:.2f} s), relay process peak RSS {hwm:.1f} MiB, received {counter.bytes}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="100M")
    ap.add_argument("--role", choices=["relay"])
    ap.add_argument("--port", type=int)
    args = ap.parse_args()
    if args.role == "relay":
        asyncio.run(relay(args.port))
        return
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = args.size.upper().rstrip("B").rstrip("I")
    size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    asyncio.run(ends(size))


if __name__ == "__main__":
    main()
