"""A file kept for an offline user lives in the shared store, not on the machine of
the AS that received it (docs/scale-out.md): two messaging AS instances
(``[messaging_as] pool``) on one PostgreSQL (+ Redis) store, each with its own
store connection and data directory. AS B receives alice's file for offline bob
and is then stopped and its data directory deleted; bob registers and AS A
pushes the file from the store, byte for byte (SHA-256)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tracemalloc
import zlib
from pathlib import Path

import pytest

from helpers import DOMAIN, alice_and_bob, client
from test_deferred_files import file_sent_to_offline_bob, kept_files

from imsbox.apps.messaging import MessagingAs
from imsbox.config import Config, load_config
from imsbox.serve import Network
from imsbox.store import FILE_CHUNK, open_store
from imsbox.testing import FAST_TIMERS, LoopbackPorts
from imsbox.ue.client import FileReceived

pytestmark = pytest.mark.timeout(120)
ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
SIZE = 12 << 20     # 48 rows
WAIT = 30.0


def two_instances(tmp_path: Path, pg_url: str, redis_url: str) -> tuple[Config, Config]:
    """The network's config (AS A in it) and AS B's (own port, own data directory);
    the pool is ordered so that alice, the served user of her file transfer, hashes
    to B: B anchors it."""
    config = alice_and_bob(tmp_path, store_url=pg_url, cache_url=redis_url)
    path = tmp_path / "imsbox.toml"
    a, b = config.messaging_as.port, LoopbackPorts()()
    pool = [f"127.0.0.1:{a}", f"127.0.0.1:{b}"]
    if zlib.crc32(ALICE.encode()) % 2 == 0:
        pool.reverse()
    section = f'[messaging_as]\nhost = "127.0.0.1"\nport = {a}\n'
    text = path.read_text()
    assert section in text
    path.write_text(text.replace(section, section + f"pool = {pool!r}\n".replace("'", '"')))
    b_path = tmp_path / "b.toml"
    b_path.write_text(path.read_text().replace(f"port = {a}\npool", f"port = {b}\npool")
                      .replace(f'data_dir = "{config.data_dir}"',
                               f'data_dir = "{tmp_path / "b-data"}"'))
    return load_config(path), load_config(b_path)


def a_big_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "video.bin"
    block = hashlib.shake_256(b"offline").digest(1 << 20)
    with path.open("wb") as fh:
        for n in range(SIZE >> 20):
            fh.write(bytes([n]) + block[1:])
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


async def anchored_by(instance: MessagingAs, other: MessagingAs, seen: list[str]) -> None:
    """Which instance holds an anchored session while the file is being sent."""
    while True:
        seen += ["B"] * bool(instance.anchors) + ["A"] * bool(other.anchors)
        await asyncio.sleep(0.01)


def test_a_file_kept_by_one_as_is_pushed_by_the_other_from_the_store(
        tmp_path: Path, pg_url: str, redis_url: str) -> None:
    config, b_config = two_instances(tmp_path, pg_url, redis_url)
    source, sha256 = a_big_file(tmp_path)
    alice = client(config, "alice")

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS) as net:
            as_a = net.nodes["as"]
            assert isinstance(as_a, MessagingAs) and len(as_a.config.messaging_as.pool) == 2
            b_store = await open_store(pg_url, redis_url).open()   # B's own connections
            as_b = MessagingAs(b_config, b_store, timers=FAST_TIMERS)
            await as_b.start()
            await alice.start()
            try:
                seen: list[str] = []
                watch = asyncio.ensure_future(anchored_by(as_b, as_a, seen))
                tracemalloc.start()
                try:
                    await file_sent_to_offline_bob(alice, source)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                    watch.cancel()
                assert set(seen) == {"B"}, "AS B was to anchor alice's transfer"
                # never the whole file in memory (every node and both UEs count here)
                assert peak < SIZE * 3 // 4, f"peak {peak >> 20} MiB while keeping the file"
                [kept] = await kept_files(b_store)
                assert (kept.size, kept.chunks) == (SIZE, SIZE // FILE_CHUNK)
                [item] = await b_store.messages.deferred(BOB, 0.0)
                assert kept.item_id == item.id
            finally:
                await as_b.close()          # B is gone, and so is its machine's disk
                await b_store.close()
            assert not (b_config.data_dir / "deferred-files").exists()
            shutil.rmtree(b_config.data_dir, ignore_errors=True)

            bob = client(config, "bob", downloads=tmp_path / "downloads")
            await bob.start()
            try:
                done = await bob.wait_event(FileReceived, WAIT)
                assert isinstance(done, FileReceived) and done.ok, done
                assert (done.size, done.sha256) == (SIZE, sha256)   # from A, out of the store
                assert net.store is not None
                async with asyncio.timeout(10):   # delivered: item and rows gone together
                    while await net.store.messages.deferred(BOB, 0.0) or \
                            await net.store.files.ids():
                        await asyncio.sleep(0.05)
            finally:
                await bob.close()
                await alice.close()

    asyncio.run(asyncio.wait_for(scenario(), 110))
