"""The store contract for files kept for offline users (``store.files``), on every
back end: chunks in order, one transaction that makes a file a deferred item,
the item and its chunks removed together, and no orphan a sweep does not find."""

from __future__ import annotations

import hashlib

import pytest

from imsbox.store import FILE_CHUNK, DeferredMessage, Store, StoreError

BOB = "sip:bob@ims.test"


def item(expires_at: float = 1e10) -> DeferredMessage:
    return DeferredMessage(BOB, "sip:alice@ims.test", "message/cpim", b"cpim", expires_at,
                           meta='{"kind": "file"}')


def payload(size: int) -> bytes:
    return hashlib.shake_256(b"kept").digest(size)


async def written(store: Store, data: bytes, now: float = 100.0) -> int:
    file_id = await store.files.create(now=now)
    for seq, at in enumerate(range(0, len(data), FILE_CHUNK)):
        await store.files.put_chunk(file_id, seq, data[at:at + FILE_CHUNK], now=now)
    return file_id


async def read(store: Store, file_id: int, first: int = 0) -> bytes:
    return b"".join([chunk async for chunk in store.files.chunks(file_id, first)])


async def test_a_file_is_read_back_in_order_from_any_chunk(store: Store) -> None:
    data = payload(2 * FILE_CHUNK + 1000)
    file_id = await written(store, data)
    assert await read(store, file_id) == data
    assert await read(store, file_id, first=2) == data[2 * FILE_CHUNK:]
    assert await read(store, file_id, first=3) == b""
    stored = await store.files.get(file_id)
    assert stored is not None and (stored.size, stored.chunks) == (len(data), 3)
    assert stored.item_id is None and stored.touched_at == 100.0
    assert await store.files.get(file_id + 1000) is None


async def test_keep_makes_it_a_deferred_item_and_delivery_removes_both(store: Store) -> None:
    file_id = await written(store, payload(FILE_CHUNK + 1))
    item_id = await store.files.keep(file_id, item())
    stored = await store.files.get(file_id)
    assert stored is not None and stored.item_id == item_id
    [kept] = await store.messages.deferred(BOB, now=0.0)
    assert kept.id == item_id and kept.body == b"cpim"
    assert not await store.files.delete(file_id)    # its item owns it
    claimed = await store.messages.claim_deferred(BOB, "as-1", lease=30.0, now=10.0)
    assert await store.messages.complete_deferred(claimed) == 1
    assert await store.files.get(file_id) is None
    assert await read(store, file_id) == b""       # the chunks went with it


@pytest.mark.parametrize("how", ["remove", "expire"])
async def test_a_removed_or_expired_item_takes_its_file_along(store: Store, how: str) -> None:
    file_id = await written(store, payload(10))
    item_id = await store.files.keep(file_id, item(expires_at=50.0))
    if how == "remove":
        assert await store.messages.remove_deferred([item_id]) == 1
    else:
        assert [m.id for m in await store.messages.expire_deferred(now=60.0)] == [item_id]
    assert await store.files.get(file_id) is None and await read(store, file_id) == b""


async def test_a_file_is_kept_once_and_a_gone_one_keeps_no_item(store: Store) -> None:
    file_id = await written(store, payload(10))
    await store.files.keep(file_id, item())
    with pytest.raises(StoreError):
        await store.files.keep(file_id, item())     # already kept: no second item
    other = await written(store, payload(10))
    assert await store.files.delete(other)
    with pytest.raises(StoreError):
        await store.files.keep(other, item())
    assert len(await store.messages.deferred(BOB, now=0.0)) == 1


async def test_chunks_of_a_gone_file_or_a_taken_seq_are_refused(store: Store) -> None:
    file_id = await written(store, payload(10))
    with pytest.raises(StoreError):
        await store.files.put_chunk(file_id, 0, b"again")
    assert await store.files.delete(file_id)
    with pytest.raises(StoreError):   # a writer whose file was swept under it stops
        await store.files.put_chunk(file_id, 1, b"late")


async def test_the_sweep_removes_only_idle_files_no_item_keeps(store: Store) -> None:
    """A writer killed mid-file leaves a file no item keeps: the sweep removes it
    once idle; a file still being written and a kept one stay."""
    dead = await written(store, payload(FILE_CHUNK + 5), now=100.0)
    busy = await written(store, payload(10), now=100.0)
    await store.files.put_chunk(busy, 1, b"more", now=900.0)   # still arriving
    kept = await written(store, payload(10), now=100.0)
    await store.files.keep(kept, item())
    assert await store.files.ids() == [dead, busy, kept]
    assert await store.files.sweep(idle_since=700.0) == 1
    assert await store.files.ids() == [busy, kept]
    assert await store.files.get(dead) is None and await read(store, dead) == b""
    assert await store.files.get(busy) is not None
    assert await store.files.get(kept) is not None
    assert await store.files.sweep(idle_since=700.0) == 0
