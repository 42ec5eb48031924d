"""Contract parts every back end must get right for several instances sharing
one store: leased deferred delivery with fencing tokens, Digest nonce-counts,
the Redis registration cache staying consistent with the durable store, reg
event subscriptions with their versions, failed-login counters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from imsbox.store import (
    Binding, DeferredMessage, LoginState, RegSubscription, ServiceProfile, Store,
)

BOB = "sip:bob@ims.test"


def deferred(n: int) -> DeferredMessage:
    return DeferredMessage(BOB, "sip:alice@ims.test", "text/plain", f"m{n}".encode(), 1e10)


async def test_a_claimed_item_is_not_claimed_again_until_its_lease_runs_out(store: Store) -> None:
    ids = [await store.messages.defer(deferred(i)) for i in range(3)]
    first = await store.messages.claim_deferred(BOB, "as-1", lease=30.0, now=100.0, limit=2)
    assert [m.id for m in first] == ids[:2] and all(m.fence > 0 for m in first)
    second = await store.messages.claim_deferred(BOB, "as-2", lease=30.0, now=101.0)
    assert [m.id for m in second] == ids[2:]  # as-1's two are leased
    assert await store.messages.claim_deferred(BOB, "as-2", lease=30.0, now=102.0) == []
    # as-1 stalls past its lease: as-2 takes the items over with a newer fence
    taken = await store.messages.claim_deferred(BOB, "as-2", lease=30.0, now=130.5)
    assert [m.id for m in taken] == ids[:2]
    assert all(t.fence > f.fence for t, f in zip(taken, first))
    assert await store.messages.complete_deferred(first) == 0  # fenced off: as-1 deletes nothing
    assert await store.messages.complete_deferred(taken) == 2
    assert [m.id for m in await store.messages.deferred(BOB, now=130.5)] == ids[2:]


async def test_released_items_can_be_claimed_at_once(store: Store) -> None:
    await store.messages.defer(deferred(0))
    claimed = await store.messages.claim_deferred(BOB, "as-1", lease=30.0, now=10.0)
    assert await store.messages.release_deferred(claimed) == 1
    again = await store.messages.claim_deferred(BOB, "as-2", lease=30.0, now=11.0)
    assert [m.body for m in again] == [b"m0"]


async def test_concurrent_claims_share_the_items_without_overlap(store: Store) -> None:
    for i in range(20):
        await store.messages.defer(deferred(i))
    batches = await asyncio.gather(*(store.messages.claim_deferred(
        BOB, f"as-{n}", lease=30.0, now=50.0, limit=3) for n in range(8)))
    got = [m.id for batch in batches for m in batch]
    assert len(got) == len(set(got)) == 20


async def test_nonce_counts_only_advance(store: Store) -> None:
    until = time.time() + 300
    assert await store.nonces.advance("n1", 1, until)
    assert not await store.nonces.advance("n1", 1, until)  # replay
    assert await store.nonces.advance("n1", 3, until)
    assert not await store.nonces.advance("n1", 2, until)
    assert await store.nonces.advance("n2", 1, until)  # another nonce has its own count
    results = await asyncio.gather(*(store.nonces.advance("n3", 7, until) for _ in range(5)))
    assert results.count(True) == 1  # one of five racing uses wins


async def test_cached_bindings_follow_every_change(store: Store) -> None:
    aor = "sip:alice@ims.test"
    far = time.time() + 600
    assert await store.registrations.bindings(aor) == []  # a miss fills an empty copy
    a = Binding("sip:alice@10.0.0.1", far, q=0.5, path=("<sip:p;lr>",), flow="f1")
    b = Binding("sip:alice@10.0.0.2", far, instance_id="<urn:uuid:1>", reg_id=1)
    await store.registrations.save(aor, a)
    await store.registrations.save(aor, b)
    assert await store.registrations.bindings(aor) == [b, a]
    moved = Binding("sip:alice@10.0.0.3", far, instance_id="<urn:uuid:1>", reg_id=1, cseq=2)
    await store.registrations.save(aor, moved)
    assert await store.registrations.bindings(aor) == [moved, a]
    assert await store.registrations.remove(aor, a.key)
    assert await store.registrations.bindings(aor) == [moved]
    assert await store.registrations.remove_all(aor) == 1
    assert await store.registrations.bindings(aor) == []


async def test_a_shared_secret_is_made_once_and_kept(store: Store) -> None:
    racing = await asyncio.gather(*(store.nonces.shared_secret("digest") for _ in range(4)))
    assert len(set(racing)) == 1 and len(racing[0]) == 32  # every instance gets the same key
    assert await store.nonces.shared_secret("odi") != racing[0]  # each name its own key
    assert await store.nonces.shared_secret("digest") == racing[0]


async def test_instances_starting_together_write_the_service_profile_without_conflict(
        store: Store) -> None:
    """Every serve process with an HSS writes the configured iFCs at start-up."""
    profiles = [ServiceProfile("default", tuple(f'{{"ifc":{n},"i":{i}}}' for i in range(4)))
                for n in range(6)]
    await asyncio.gather(*(store.subscribers.put_service_profile(p) for p in profiles))
    assert await store.subscribers.get_service_profile("default") in profiles  # one whole
# -- call park orbits (RFC 5359 2.15) ----------------------------------------------------

LOT = "ims.test"


async def test_orbits_are_claimed_lowest_first_and_freed_by_their_call(store: Store) -> None:
    first = await store.parking.claim(LOT, 701, 703, "c1", "sip:bob@ims.test",
                                      "sip:alice@ims.test", holder="ms-1", now=5.0)
    assert first is not None and first.orbit == 701 and first.parked_at == 5.0
    second = await store.parking.claim(LOT, 701, 703, "c2", "sip:bob@ims.test", "sip:x@y")
    assert second is not None and second.orbit == 702
    assert await store.parking.get(LOT, 701) == first
    assert not await store.parking.release(LOT, 701, "c2")   # not its call: kept
    assert await store.parking.release(LOT, 701, "c1")
    again = await store.parking.claim(LOT, 701, 703, "c3", "sip:bob@ims.test", "sip:z@y")
    assert again is not None and again.orbit == 701           # the freed one first
    assert [p.orbit for p in await store.parking.parked(LOT)] == [701, 702]
    assert await store.parking.parked("other.test") == []


async def test_a_full_lot_claims_nothing_and_lots_are_apart(store: Store) -> None:
    for n in range(2):
        assert await store.parking.claim(LOT, 1, 2, f"c{n}", "sip:a@x", "sip:b@x")
    assert await store.parking.claim(LOT, 1, 2, "c9", "sip:a@x", "sip:b@x") is None
    other = await store.parking.claim("other.test", 1, 2, "c9", "sip:a@x", "sip:b@x")
    assert other is not None and other.orbit == 1


async def test_racing_claims_get_different_orbits(store: Store) -> None:
    claims = await asyncio.gather(*(store.parking.claim(
        LOT, 701, 799, f"call-{n}", "sip:bob@ims.test", f"sip:u{n}@ims.test")
        for n in range(12)))
    orbits = [c.orbit for c in claims if c is not None]
    assert len(orbits) == 12 and sorted(orbits) == list(range(701, 713))


async def test_only_one_of_racing_retrieves_takes_the_call(store: Store) -> None:
    parked = await store.parking.claim(LOT, 701, 799, "c1", "sip:bob@ims.test", "sip:a@x")
    assert parked is not None
    taken = await asyncio.gather(*(store.parking.take(LOT, parked.orbit) for _ in range(5)))
    assert [t for t in taken if t is not None] == [parked]
    assert await store.parking.get(LOT, parked.orbit) is None
    assert await store.parking.take(LOT, 755) is None          # an empty orbit


# -- conference owner leases (several conference AS instances) ---------------------------

CONF = "sip:chat-1@conf.ims.test"


async def test_a_live_owner_lease_is_not_claimed_by_another_instance(store: Store) -> None:
    fence = await store.conferences.claim_owner(CONF, "conf-1", lease=10.0, now=100.0)
    assert fence is not None
    assert await store.conferences.claim_owner(CONF, "conf-2", lease=10.0, now=105.0) is None
    assert await store.conferences.owner(CONF, now=105.0) == ("conf-1", fence)
    # the owner renews while it lives: still its own past the first lease's end
    assert await store.conferences.renew_owner(CONF, "conf-1", fence, lease=10.0, now=108.0)
    assert await store.conferences.claim_owner(CONF, "conf-2", lease=10.0, now=115.0) is None
    assert await store.conferences.claim_owner(CONF, "conf-1", lease=10.0, now=116.0) == fence
    assert await store.conferences.owner("sip:other@conf.ims.test", now=105.0) is None


async def test_an_expired_lease_is_taken_over_and_fences_the_old_owner_off(store: Store) -> None:
    old = await store.conferences.claim_owner(CONF, "conf-1", lease=10.0, now=100.0)
    assert old is not None
    assert await store.conferences.owner(CONF, now=110.5) is None    # the owner died
    new = await store.conferences.claim_owner(CONF, "conf-2", lease=10.0, now=110.5)
    assert new is not None and new > old
    # the stalled former owner wakes up: it can neither renew nor release
    assert not await store.conferences.renew_owner(CONF, "conf-1", old, lease=10.0, now=111.0)
    assert not await store.conferences.release_owner(CONF, old)
    assert await store.conferences.owner(CONF, now=111.0) == ("conf-2", new)
    assert await store.conferences.release_owner(CONF, new)
    again = await store.conferences.claim_owner(CONF, "conf-1", lease=10.0, now=112.0)
    assert again is not None and again > new                      # released: free at once


async def test_only_one_of_racing_instances_gets_the_lease(store: Store) -> None:
    at = time.time()
    fences = await asyncio.gather(*(store.conferences.claim_owner(
        CONF, f"conf-{n}", lease=30.0, now=at) for n in range(6)))
    assert len([f for f in fences if f is not None]) == 1


# -- reg event subscriptions (several S-CSCFs) ------------------------------------------

ALICE = "sip:alice@ims.test"


def reg_subscription(n: int, aor: str = ALICE, expires_at: float = 1000.0) -> RegSubscription:
    return RegSubscription(
        f"call-{n}", f"ours-{n}", f"theirs-{n}", aor, "reg", aor,
        f"<{aor}>", "<sip:pcscf.ims.test>", "sip:alice@127.0.0.1:5062",
        "sip:127.0.0.1:5080", ("<sip:127.0.0.1:5060;lr>", "<sip:orig@127.0.0.1:5061;lr>"),
        remote_cseq=1, cseq_base=5000, version=1, expires_at=expires_at)


async def test_a_reg_subscription_is_kept_and_a_refresh_updates_it(store: Store) -> None:
    sub = reg_subscription(1)
    await store.reg_subscriptions.put(sub)
    assert await store.reg_subscriptions.get(*sub.key, now=100.0) == sub
    refreshed = replace(sub, remote_cseq=2, expires_at=2000.0, version=0,
                        remote_target="sip:alice@127.0.0.1:6000")
    await store.reg_subscriptions.put(refreshed)
    # the refresh moved the expiry, CSeq and target; the version is take's alone
    assert await store.reg_subscriptions.get(*sub.key, now=1500.0) == replace(refreshed,
                                                                               version=1)
    assert await store.reg_subscriptions.get(*sub.key, now=2000.0) is None   # expired
    assert await store.reg_subscriptions.remove(*sub.key)
    assert not await store.reg_subscriptions.remove(*sub.key)
    assert await store.reg_subscriptions.get(*sub.key, now=100.0) is None


async def test_versions_are_taken_once_each_also_by_racing_instances(store: Store) -> None:
    sub = reg_subscription(1)
    await store.reg_subscriptions.put(sub)
    taken = await asyncio.gather(*(store.reg_subscriptions.take(*sub.key, now=100.0)
                                   for _ in range(8)))
    assert sorted(t.version for t in taken if t is not None) == list(range(1, 9))
    watching = await store.reg_subscriptions.take_watching(ALICE, now=100.0)
    assert [(w.key, w.version) for w in watching] == [(sub.key, 9)]
    assert (await store.reg_subscriptions.get(*sub.key, now=100.0)).version == 10  # type: ignore[union-attr]
    assert await store.reg_subscriptions.take(*sub.key, now=1000.0) is None       # expired
    assert await store.reg_subscriptions.take("nope", "a", "b", now=100.0) is None


async def test_take_watching_finds_the_watchers_of_one_set_only(store: Store) -> None:
    for n in (1, 2):
        await store.reg_subscriptions.put(reg_subscription(n))
    await store.reg_subscriptions.put(reg_subscription(3, aor="sip:bob@ims.test"))
    await store.reg_subscriptions.put(reg_subscription(4, expires_at=50.0))
    watching = await store.reg_subscriptions.take_watching(ALICE, now=100.0)
    assert [w.key for w in watching] == [reg_subscription(n).key for n in (1, 2)]
    assert all(w.version == 1 for w in watching)
    assert await store.reg_subscriptions.take_watching("sip:carol@ims.test", now=100.0) == []


async def test_expired_reg_subscriptions_are_handed_out_once(store: Store) -> None:
    await store.reg_subscriptions.put(reg_subscription(1, expires_at=50.0))
    await store.reg_subscriptions.put(reg_subscription(2, expires_at=500.0))
    assert await store.reg_subscriptions.next_expiry() == 50.0
    rounds = await asyncio.gather(*(store.reg_subscriptions.expire(now=100.0)
                                    for _ in range(3)))
    assert sorted(s.key for r in rounds for s in r) == [reg_subscription(1).key]
    assert await store.reg_subscriptions.next_expiry() == 500.0


# -- failed-login counters (LoginGuard on several S-CSCFs) -------------------------------

async def test_failed_logins_count_per_account_and_per_address(store: Store) -> None:
    now = time.time()   # Redis expires by the wall clock
    logins = store.logins
    assert await logins.state("alice", "192.0.2.1", 5060, since=now - 60) == LoginState()
    await logins.succeeded("alice", "192.0.2.1", 5060, now, reset_account=True, keep=600)
    for n in range(3):
        await logins.failed("alice", "192.0.2.9", 4000 + n, now + n, source_window=60, keep=600)
    await logins.failed("bob", "192.0.2.9", 4000, now + 3, source_window=60, keep=600)
    state = await logins.state("alice", "192.0.2.1", 5060, since=now - 60)
    assert (state.failures, state.last_failure, state.source_failures) == (3, now + 2, ())
    assert state.trusted_at == now
    other = await logins.state("carol", "192.0.2.9", 4000, since=now + 0.5)
    assert other.source_failures == (now + 1, now + 2, now + 3)   # after ``since``, in order
    assert (other.failures, other.trusted_at) == (0, None)
    # a failure from the trusted pair ends its trust; a reset forgets the failures
    await logins.failed("alice", "192.0.2.1", 5060, now + 4, source_window=60, keep=600)
    assert (await logins.state("alice", "192.0.2.1", 5060, since=now)).trusted_at is None
    await logins.succeeded("alice", "192.0.2.1", 5060, now + 5, reset_account=True, keep=600)
    state = await logins.state("alice", "192.0.2.1", 5060, since=now)
    assert (state.failures, state.trusted_at) == (0, now + 5)


async def test_login_records_go_when_their_time_is_up(store: Store) -> None:
    now = time.time()
    await store.logins.failed("alice", "192.0.2.9", 4000, now, source_window=0.2, keep=0.2)
    await store.logins.succeeded("bob", "192.0.2.1", 5060, now, reset_account=False, keep=0.2)
    await asyncio.sleep(0.3)
    await store.logins.expire(time.time())
    assert await store.logins.state("alice", "192.0.2.9", 4000, since=0) == LoginState()
    assert (await store.logins.state("bob", "192.0.2.1", 5060, since=0)).trusted_at is None
