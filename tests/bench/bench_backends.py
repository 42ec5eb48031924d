"""Store back-end benchmark: one process on SQLite vs on PostgreSQL + Redis.

Run:  PYTHONPATH=src python tests/bench/bench_backends.py [--messages 500] [--window 32]
                                                         [--registers 600] [--ues 8]
Prints a table; it is not a test (no test_ functions).

For each back end a fresh Network (HSS, P-CSCF, I-CSCF, S-CSCF, messaging AS in
this process, one asyncio loop, default SIP timers) on loopback:

* SQLite: the embedded store in a temporary data dir;
* PostgreSQL + Redis: throw-away servers (imsbox.testing_backends: Debian's
  postgres with fsync off, redis-server without persistence) on loopback,
  the store ``postgresql://`` with the ``redis://`` cache.

Figures:

* REGISTER/s: ``--ues`` UEs each re-register in a loop (REGISTER, 401, REGISTER
  with Digest, 200: two transactions, counted as one registration) until
  ``--registers`` registrations succeeded in all; registrations over the time.
* pager messages/s: alice sends ``--messages`` pager MESSAGEs to bob (CPIM,
  delivery IMDN asked for) through the messaging AS, at most ``--window`` in
  flight; the rate until bob has all of them (distinct Message-IDs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.store import open_store
from imsbox.testing import TestUe, write_loopback_config
from imsbox.testing_backends import ThrowawayPostgres, ThrowawayRedis
from imsbox.ue.client import MessageReceived, RcsClient

DOMAIN = "ims.test"


async def lab_config(directory: Path, store_url: str, cache_url: str, ues: int) -> Config:
    path, _ = write_loopback_config(directory)
    if store_url:
        path.write_text(path.read_text() + f'\n[store]\nurl = "{store_url}"\n'
                                           f'cache = "{cache_url}"\n')
    config = load_config(path)
    async with open_store(config.store_location) as store:
        for name in ["alice", "bob", *(f"ue{i}" for i in range(ues))]:
            await add_user(store, DOMAIN, name, f"{name}-secret")
    return config


async def register_rate(config: Config, total: int, ues: int) -> float:
    done = 0

    async def loop(ue: TestUe) -> None:
        nonlocal done
        while done < total:
            reg = await ue.register()
            assert reg.ok, reg.statuses
            done += 1

    started = [await TestUe(f"ue{i}", f"ue{i}-secret", config).start() for i in range(ues)]
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(ue) for ue in started))
        return done / (time.perf_counter() - t0)
    finally:
        for ue in started:
            await ue.close()


async def pager_rate(config: Config, n: int, window: int) -> float:
    pcscf = config.pcscf
    alice, bob = (RcsClient(name, f"{name}-secret", DOMAIN, pcscf=(pcscf.host, pcscf.port))
                  for name in ("alice", "bob"))
    await alice.start()
    await bob.start()
    try:
        got: set[str] = set()

        async def receive() -> float:
            while len(got) < n:
                event = await bob.wait_event(MessageReceived)
                if isinstance(event, MessageReceived) and event.message_id:
                    got.add(event.message_id)
            return time.perf_counter()

        sem = asyncio.Semaphore(window)

        async def one(i: int) -> str:
            async with sem:
                return await alice.send_message("bob", f"benchmark message {i:06d}")
        receiver = asyncio.ensure_future(receive())
        t0 = time.perf_counter()
        ids = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = await asyncio.wait_for(receiver, 300) - t0
        assert got == set(ids), "a message was lost"
        return n / elapsed
    finally:
        await alice.close()
        await bob.close()


async def measure(directory: Path, args: argparse.Namespace, store_url: str = "",
                  cache_url: str = "") -> tuple[float, float]:
    config = await lab_config(directory, store_url, cache_url, args.ues)
    async with Network(config):
        registers = await register_rate(config, args.registers, args.ues)
        pagers = await pager_rate(config, args.messages, args.window)
    return registers, pagers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="pager messages")
    parser.add_argument("--window", type=int, default=32, help="pager messages in flight")
    parser.add_argument("--registers", type=int, default=600, help="registrations")
    parser.add_argument("--ues", type=int, default=8, help="UEs registering at once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imsbox-bench-") as tmp:
        base = Path(tmp)
        (base / "sqlite").mkdir()
        print("running sqlite ...", file=sys.stderr, flush=True)
        rows.append(("SQLite", *asyncio.run(measure(base / "sqlite", args))))
        pg, cache = ThrowawayPostgres().start(), ThrowawayRedis().start()
        try:
            (base / "pg").mkdir()
            print("running postgresql+redis ...", file=sys.stderr, flush=True)
            rows.append(("PostgreSQL + Redis", *asyncio.run(
                measure(base / "pg", args, pg.url, cache.url))))
        finally:
            pg.destroy()
            cache.destroy()
    print(f"{'store':<20} {'REGISTER/s':>11} {'pager msg/s':>12}")
    for name, registers, pagers in rows:
        print(f"{name:<20} {registers:>11.0f} {pagers:>12.0f}")
    (_, r0, p0), (_, r1, p1) = rows
    print(f"\nshared back ends cost: REGISTER {100 * (1 - r1 / r0):+.0f} %, "
          f"pager {100 * (1 - p1 / p0):+.0f} % (positive = slower)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; every node and the UEs "
          f"in one process / one asyncio loop; PostgreSQL and Redis in their own processes")


if __name__ == "__main__":
    main()
