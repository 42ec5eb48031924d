"""Messaging benchmark: the real IMS core and messaging AS on loopback, two RcsClients.

Run:  python tests/bench/bench_messaging.py [--messages 1000] [--window 32] [--chat 500]
                                            [--file-mib 100] [--deferred 20000]
                                            [--postgresql]
Prints a table; it is not a test (no test_ functions).

Figures, each on a fresh Network (HSS, P-CSCF, I-CSCF, S-CSCF, messaging AS in
this process, one asyncio loop, SQLite store in a temporary data dir):

* pager messages/s: alice sends N pager MESSAGEs (CPIM, delivery IMDN asked for)
  with at most ``window`` in flight; each goes UE -> P-CSCF -> S-CSCF -> AS ->
  S-CSCF -> I-CSCF -> S-CSCF -> AS -> S-CSCF -> P-CSCF -> UE. The rate is N over
  the time until bob has received all N (counted, distinct Message-IDs); the
  second rate is until alice has every delivery IMDN back (2 MESSAGEs per
  message through the whole chain).
* chat round trip: in an anchored chat (alice <-> AS <-> bob over MSRP), the
  time from alice's ``Chat.send()`` until alice holds bob's delivery IMDN for
  that message (4 MSRP hops and bob's IMDN generation); sequential, p50/p99.
* file transfer: ``send_file`` of a random file through the AS (RFC 5547 push,
  2048-byte chunks); from the call until bob reports the whole file with the
  right hash. MB = 10^6 bytes.
* ``--postgresql``: the file to an offline user (``deferred-file``) kept in a
  throw-away PostgreSQL (imsbox.testing_backends, fsync off) instead of SQLite.
* deferred store: real deferred items made by the AS (alice -> offline bob,
  pager), replicated to N rows in a fresh SQLite store; file size after close
  (WAL checkpointed) minus the empty store's -> items per GiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.store import DeferredMessage, open_store
from imsbox.ue.client import (
    ChatStarted, FileReceived, MessageReceived, MessageStatus, RcsClient,
)
from imsbox.testing import write_loopback_config
from imsbox.testing_backends import ThrowawayPostgres

DOMAIN = "ims.test"
BOB = f"sip:bob@{DOMAIN}"


@dataclass
class Row:
    metric: str
    value: str
    note: str = ""


# -- the lab ----------------------------------------------------------------------------

async def lab_config(directory: Path, store_url: str = "") -> Config:
    path, _ = write_loopback_config(directory)
    if store_url:
        path.write_text(path.read_text() + f'\n[store]\nurl = "{store_url}"\n')
    config = load_config(path)
    async with open_store(config.store_location) as store:
        await add_user(store, DOMAIN, "alice", "alice-secret")
        await add_user(store, DOMAIN, "bob", "bob-secret")
    return config


def client(config: Config, name: str, downloads: Path | None = None) -> RcsClient:
    pcscf = config.pcscf
    return RcsClient(name, f"{name}-secret", DOMAIN, pcscf=(pcscf.host, pcscf.port),
                     downloads=downloads)


@contextlib.asynccontextmanager
async def lab(directory: Path, with_bob: bool = True, store_url: str = ""
              ) -> AsyncIterator[tuple[Network, RcsClient, RcsClient]]:
    """Network + registered alice (+ bob); default SIP timers (T1 500 ms)."""
    config = await lab_config(directory, store_url)
    alice = client(config, "alice")
    bob = client(config, "bob", directory / "downloads")
    async with Network(config) as net:
        started = [await alice.start()]
        if with_bob:
            started.append(await bob.start())
        try:
            yield net, alice, bob
        finally:
            for ue in started:
                await ue.close()


# -- pager throughput -----------------------------------------------------------------------

async def count_received(bob: RcsClient, n: int, got: set[str]) -> float:
    """Wait for ``n`` distinct pager messages at bob; the time the last arrived."""
    while len(got) < n:
        event = await bob.wait_event(MessageReceived)
        assert isinstance(event, MessageReceived)
        if event.message_id:
            got.add(event.message_id)
    return time.perf_counter()


def _cpu_seconds() -> float:
    """User+system CPU of this process, all threads (the SQLite worker too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def pager_rate(directory: Path, n: int, window: int) -> list[Row]:
    async with lab(directory) as (_, alice, bob):
        got: set[str] = set()
        sem = asyncio.Semaphore(window)
        receiver = asyncio.ensure_future(count_received(bob, n, got))

        async def one(i: int) -> str:
            async with sem:
                return await alice.send_message("bob", f"benchmark message {i:06d}: "
                                                       "the quick brown fox jumps over")
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        ids = await asyncio.gather(*(one(i) for i in range(n)))
        t_delivered = await asyncio.wait_for(receiver, 120) - t0
        for mid in ids:
            await alice.wait_status(mid, MessageStatus.DELIVERED, 60)
        t_imdn = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        assert got == set(ids), "a message was lost"
    return [Row("pager CPU per message, incl. delivery IMDN back", f"{1000 * cpu / n:.1f} ms",
                "this process (every node, both UEs, the SQLite thread), user+system"),
            Row("pager messages/s, delivered", f"{n / t_delivered:,.0f}",
                f"{n} sent, {len(got)} delivered to bob, window {window}, {t_delivered:.2f} s"),
            Row("pager messages/s, incl. delivery IMDN back", f"{n / t_imdn:,.0f}",
                f"all {n} DELIVERED at alice after {t_imdn:.2f} s")]


# -- chat round trip ------------------------------------------------------------------------

async def chat_latency(directory: Path, n: int) -> list[Row]:
    async with lab(directory) as (_, alice, bob):
        chat = await alice.open_chat("bob")
        await bob.wait_event(ChatStarted, 10)
        samples = []
        for i in range(n + 20):  # the first 20 warm up
            t0 = time.perf_counter()
            mid = await chat.send(f"chat message {i}")
            await alice.wait_status(mid, MessageStatus.DELIVERED, 10)
            if i >= 20:
                samples.append((time.perf_counter() - t0) * 1000)
            if i % 100 == 0:
                bob.pending_events()
                alice.pending_events()
        await chat.close()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    note = f"{n} sequential, mean {statistics.mean(samples):.2f} ms, max {samples[-1]:.2f} ms"
    return [Row("chat RTT send->delivery IMDN p50", f"{statistics.median(samples):.2f} ms",
                note),
            Row("chat RTT send->delivery IMDN p99", f"{p99:.2f} ms", "")]


# -- file transfer ------------------------------------------------------------------------

def random_file(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            sha.update(block)
            fh.write(block)
            left -= len(block)
    return sha.hexdigest()


async def file_rate(directory: Path, mib: int) -> list[Row]:
    size = mib << 20
    source = directory / "payload.bin"
    digest = random_file(source, size)
    async with lab(directory) as (_, alice, bob):
        t0 = time.perf_counter()
        result = await alice.send_file("bob", source)
        done = await bob.wait_event(FileReceived, 300)
        elapsed = time.perf_counter() - t0
        assert result.ok, result
        assert isinstance(done, FileReceived) and done.ok and done.sha256 == digest
        Path(done.path).unlink()
    source.unlink()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [Row(f"file transfer {mib} MiB through the AS", f"{size / elapsed / 1e6:.1f} MB/s",
                f"{elapsed:.2f} s, hash checked; peak RSS of the process {rss:.0f} MiB")]


async def deferred_file_rate(directory: Path, mib: int, store_url: str = "") -> list[Row]:
    """A file to offline bob: kept by the AS, then pushed when bob registers."""
    size = mib << 20
    source = directory / "payload.bin"
    digest = random_file(source, size)
    where = "PostgreSQL" if store_url else "SQLite"
    async with lab(directory, with_bob=False, store_url=store_url) as (net, alice, _):
        t0 = time.perf_counter()
        result = await alice.send_file("bob", source)
        stored = time.perf_counter() - t0
        assert result.ok and result.deferred, result
        bob = client(net.config, "bob", directory / "downloads")
        t0 = time.perf_counter()
        await bob.start()
        try:
            done = await bob.wait_event(FileReceived, 300)
            delivered = time.perf_counter() - t0
        finally:
            await bob.close()
        assert isinstance(done, FileReceived) and done.ok and done.sha256 == digest
    return [Row(f"file {mib} MiB to an offline user, kept by the AS",
                f"{size / stored / 1e6:.1f} MB/s", f"{stored:.2f} s until the sender's "
                f"'accepted for later delivery' (rows in {where}, sha-1 check, item)"),
            Row("the same file pushed when the user registers",
                f"{size / delivered / 1e6:.1f} MB/s",
                f"{delivered:.2f} s from REGISTER to the hash-checked file")]


# -- deferred store -----------------------------------------------------------------------

async def real_deferred(directory: Path, k: int) -> list[DeferredMessage]:
    """``k`` items the AS itself stored for offline bob (pager messages from alice)."""
    async with lab(directory, with_bob=False) as (net, alice, _):
        for i in range(k):
            await alice.send_message("bob", f"while you were out #{i}: call me back "
                                            "when you land, the meeting moved to 3 pm")
        assert net.store is not None
        items = await net.store.messages.deferred(BOB)
    assert len(items) == k, len(items)
    return items


def store_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def deferred_density(directory: Path, samples: list[DeferredMessage],
                           n: int) -> list[Row]:
    path = directory / "deferred.sqlite3"
    await (await open_store(f"sqlite://{path}").open()).close()
    empty = store_size(path)
    store = await open_store(f"sqlite://{path}").open()
    t0 = time.perf_counter()
    for i in range(n):
        item = samples[i % len(samples)]
        await store.messages.defer(DeferredMessage(
            f"sip:user{i % 1000}@{DOMAIN}", item.sender, item.content_type, item.body,
            item.expires_at, item.created_at, item.meta))
    elapsed = time.perf_counter() - t0
    await store.close()
    used = store_size(path) - empty
    typical = statistics.mean(len(s.body) + len(s.meta) for s in samples)
    return [Row("deferred messages per GiB (SQLite)", f"{n / used * (1 << 30):,.0f}",
                f"{n} items, {used / n:.0f} B/item on disk, body+meta {typical:.0f} B"),
            Row("deferred inserts/s (synchronous=FULL)", f"{n / elapsed:,.0f}",
                "one transaction per item, as the AS stores them")]


# -- main -------------------------------------------------------------------------------

def print_table(rows: list[Row]) -> None:
    width = max(len(r.metric) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print(f"{'metric':<{width}}  {'value':>{vwidth}}  notes")
    print("-" * (width + vwidth + 40))
    for r in rows:
        print(f"{r.metric:<{width}}  {r.value:>{vwidth}}  {r.note}", flush=True)


async def run(args: argparse.Namespace, base: Path) -> list[Row]:
    rows: list[Row] = []
    steps = [("pager", lambda d: pager_rate(d, args.messages, args.window)),
             ("chat", lambda d: chat_latency(d, args.chat)),
             ("file", lambda d: file_rate(d, args.file_mib)),
             ("deferred-file", lambda d: deferred_file_rate(d, args.file_mib, args.store_url))]
    for name, step in steps:
        if args.only and name not in args.only:
            continue
        directory = base / name
        directory.mkdir()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += await step(directory)
    if args.only and "deferred" not in args.only:
        return rows
    directory = base / "deferred"
    directory.mkdir()
    print("running deferred ...", file=sys.stderr, flush=True)
    samples = await real_deferred(directory, 50)
    rows += await deferred_density(directory, samples, args.deferred)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="pager messages")
    parser.add_argument("--window", type=int, default=32, help="pager messages in flight")
    parser.add_argument("--chat", type=int, default=500, help="chat round trips")
    parser.add_argument("--file-mib", type=int, default=100, help="file size in MiB")
    parser.add_argument("--deferred", type=int, default=20000, help="deferred items stored")
    parser.add_argument("--only", nargs="+", metavar="STEP", default=None,
                        choices=["pager", "chat", "file", "deferred-file", "deferred"],
                        help="run only these steps")
    parser.add_argument("--postgresql", action="store_true",
                        help="deferred-file: keep the file in a throw-away PostgreSQL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with contextlib.ExitStack() as stack:
        args.store_url = ""
        if args.postgresql:
            pg = ThrowawayPostgres().start()
            stack.callback(pg.destroy)
            pg.reset()
            args.store_url = pg.url
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="imsbox-bench-"))
        rows = asyncio.run(run(args, Path(tmp)))
    print_table(rows)
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"all nodes and both UEs in one process / one asyncio loop")


if __name__ == "__main__":
    main()
