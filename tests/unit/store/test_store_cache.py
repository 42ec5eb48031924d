"""The in-process copy of the HSS reads (imsbox.store.cache) in front of a store
another process writes too: kept ``ttl`` seconds, dropped by a write of ours."""

from __future__ import annotations

from pathlib import Path

from imsbox.store import PublicIdentity, ScscfAssignment, SqliteStore, Subscriber
from imsbox.store.cache import CachedSubscribers
from imsbox.store.models import RegistrationState

ALICE, BOB = "sip:alice@ims.test", "sip:bob@ims.test"


def user(name: str) -> tuple[Subscriber, list[PublicIdentity]]:
    uri = f"sip:{name}@ims.test"
    return Subscriber(f"{name}@ims.test"), [PublicIdentity(uri, f"{name}@ims.test", uri,
                                                           default=True)]


async def test_reads_are_kept_for_ttl_and_dropped_by_a_write_of_ours(tmp_path: Path) -> None:
    now = [100.0]
    async with SqliteStore.in_data_dir(tmp_path) as ours, \
            SqliteStore.in_data_dir(tmp_path) as other_process:
        cached = CachedSubscribers(ours.subscribers, ttl=1.0, clock=lambda: now[0])
        await cached.add_subscriber(*user("alice"))
        assert (await cached.get_public_identity(ALICE)) is not None
        assert await cached.get_public_identity(BOB) is None

        await other_process.subscribers.add_subscriber(*user("bob"))
        assert await cached.get_public_identity(BOB) is None  # within the second: the copy
        now[0] += 1.01
        assert (await cached.get_public_identity(BOB)) is not None  # then the store's

        await other_process.subscribers.remove_subscriber("bob@ims.test")
        await cached.remove_subscriber("alice@ims.test")  # ours: the copy goes at once
        assert await cached.get_public_identity(ALICE) is None
        assert await cached.get_public_identity(BOB) is None


async def test_assignments_are_never_cached(tmp_path: Path) -> None:
    async with SqliteStore.in_data_dir(tmp_path) as ours, \
            SqliteStore.in_data_dir(tmp_path) as other_process:
        cached = CachedSubscribers(ours.subscribers, ttl=60.0)
        await cached.add_subscriber(*user("alice"))
        assert await cached.get_assignment("alice@ims.test") is None
        moved = ScscfAssignment("alice@ims.test", "sip:127.0.0.1:5081",
                                RegistrationState.REGISTERED)
        await other_process.subscribers.set_assignment(moved)  # another S-CSCF took over
        assert await cached.get_assignment("alice@ims.test") == moved
