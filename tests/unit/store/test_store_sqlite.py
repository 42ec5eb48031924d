"""SQLite store behind the async contract: CRUD, persistence across reopen, expiry,
ordering, the worker thread (concurrency, durability, a free loop), migration."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from imsbox.store import (
    DB_FILENAME, AlreadyExists, Binding, Conference, Credential, DeferredMessage, Group,
    GroupMessage, Psi, PsiKind, PublicIdentity, RegistrationState, ScscfAssignment,
    ServiceProfile, SqliteStore, Store, StoreError, Subscriber, open_store,
)
from imsbox.store.sqlite import MIGRATIONS

ALICE = "alice@ims.test"


def alice_records() -> tuple[Subscriber, list[PublicIdentity]]:
    sub = Subscriber(ALICE, (Credential(ALICE, "ims.test", "MD5", "a" * 32),
                             Credential("alice", "ims.test", "SHA-256", "b" * 64)),
                     msisdn="+15550001", created_at=100.0)
    irs = "sip:alice@ims.test"
    ids = [PublicIdentity("sip:alice@ims.test", ALICE, irs, default=True),
           PublicIdentity("tel:+15550001", ALICE, irs),
           PublicIdentity("sip:+15550001@ims.test;user=phone", ALICE, irs),
           PublicIdentity("sip:alice-work@ims.test", ALICE, "work", barred=True)]
    return sub, ids


async def opened_and_closed(store: Store) -> None:
    await (await store.open()).close()


async def test_file_is_in_data_dir_in_wal_mode_with_schema_version(tmp_path: Path) -> None:
    async with SqliteStore.in_data_dir(tmp_path / "data") as s:
        assert isinstance(s, SqliteStore)
        assert await s.schema_version() == MIGRATIONS[-1][0]
    path = tmp_path / "data" / DB_FILENAME
    assert path.exists()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations")]
    assert versions == [v for v, _ in MIGRATIONS]
    db.close()


async def test_reopening_does_not_reapply_migrations(tmp_path: Path) -> None:
    await opened_and_closed(SqliteStore.in_data_dir(tmp_path))
    async with SqliteStore.in_data_dir(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    assert db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)
    db.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    await opened_and_closed(SqliteStore.in_data_dir(tmp_path))
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        await SqliteStore.in_data_dir(tmp_path).open()


async def test_subscriber_crud(store: Store) -> None:
    sub, ids = alice_records()
    await store.subscribers.add_subscriber(sub, ids)
    got = await store.subscribers.get_subscriber(ALICE)
    assert got == sub
    assert got.credential("alice", "SHA-256").ha1 == "b" * 64
    assert got.credential("alice", "MD5") is None
    assert [s.private_id for s in await store.subscribers.list_subscribers()] == [ALICE]
    assert (await store.subscribers.get_public_identity("tel:+15550001")).private_id == ALICE
    assert (await store.subscribers.get_public_identity("sip:alice-work@ims.test")).barred
    assert await store.subscribers.remove_subscriber(ALICE)
    assert await store.subscribers.get_subscriber(ALICE) is None
    assert await store.subscribers.get_public_identity("tel:+15550001") is None
    assert not await store.subscribers.remove_subscriber(ALICE)


def test_no_password_column_anywhere(tmp_path: Path) -> None:
    asyncio.run(opened_and_closed(SqliteStore.in_data_dir(tmp_path)))  # creates the schema
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        assert not any("password" in c for c in cols)
    db.close()


async def test_duplicates_are_refused_atomically(store: Store) -> None:
    sub, ids = alice_records()
    await store.subscribers.add_subscriber(sub, ids)
    with pytest.raises(AlreadyExists, match=r"subscriber alice@ims.test"):
        await store.subscribers.add_subscriber(sub, ids)
    bob = Subscriber("bob@ims.test", msisdn="+15550002")
    with pytest.raises(AlreadyExists, match="tel:\\+15550001"):
        await store.subscribers.add_subscriber(bob, [PublicIdentity("sip:bob@ims.test", "bob@ims.test", "b"),
                                   PublicIdentity("tel:+15550001", "bob@ims.test", "b")])
    # nothing of bob was kept
    assert await store.subscribers.get_subscriber("bob@ims.test") is None
    assert await store.subscribers.get_public_identity("sip:bob@ims.test") is None
    carol = Subscriber("carol@ims.test", msisdn="+15550001")
    with pytest.raises(AlreadyExists, match="MSISDN"):
        await store.subscribers.add_subscriber(carol, [PublicIdentity("sip:carol@ims.test", "carol@ims.test", "c")])


async def test_implicit_registration_sets(store: Store) -> None:
    sub, ids = alice_records()
    await store.subscribers.add_subscriber(sub, ids)
    main_set = [p.uri for p in await store.subscribers.implicit_set("tel:+15550001")]
    assert main_set == ["sip:alice@ims.test", "tel:+15550001",
                        "sip:+15550001@ims.test;user=phone"]
    assert [p.uri for p in await store.subscribers.implicit_set("sip:alice-work@ims.test")] == \
        ["sip:alice-work@ims.test"]
    assert await store.subscribers.implicit_set("sip:nobody@ims.test") == []
    assert len(await store.subscribers.public_identities(ALICE)) == 4


async def test_service_profile_replace(store: Store) -> None:
    assert await store.subscribers.get_service_profile("default") is None
    await store.subscribers.put_service_profile(ServiceProfile("default", ('{"a":1}', '{"b":2}')))
    await store.subscribers.put_service_profile(ServiceProfile("default", ('{"c":3}',)))
    assert await store.subscribers.get_service_profile("default") == ServiceProfile("default", ('{"c":3}',))


async def test_psis_and_groups(store: Store) -> None:
    await store.subscribers.put_psi(Psi("sip:conf-*@ims.test", "sip:127.0.0.1:5100", PsiKind.WILDCARD))
    await store.subscribers.put_psi(Psi("sip:chat@ims.test", "sip:127.0.0.1:5090"))
    await store.subscribers.put_psi(Psi("sip:chat@ims.test", "sip:127.0.0.1:5091"))  # replace
    assert (await store.subscribers.get_psi("sip:chat@ims.test")).as_uri == "sip:127.0.0.1:5091"
    assert [p.pattern for p in await store.subscribers.list_psis(PsiKind.WILDCARD)] == ["sip:conf-*@ims.test"]
    assert len(await store.subscribers.list_psis()) == 2
    assert await store.subscribers.remove_psi("sip:chat@ims.test") and await store.subscribers.get_psi("sip:chat@ims.test") is None

    group = Group("sip:group-x@ims.test", ("sip:b@ims.test", "sip:a@ims.test"), "friends")
    await store.subscribers.put_group(group)
    assert await store.subscribers.get_group(group.uri) == group  # member order kept
    await store.subscribers.put_group(Group(group.uri, ("tel:+1",)))
    assert (await store.subscribers.get_group(group.uri)).members == ("tel:+1",)
    assert [g.uri for g in await store.subscribers.list_groups()] == [group.uri]
    assert await store.subscribers.remove_group(group.uri) and await store.subscribers.get_group(group.uri) is None


async def test_scscf_assignment(store: Store) -> None:
    sub, ids = alice_records()
    await store.subscribers.add_subscriber(sub, ids)
    assert await store.subscribers.get_assignment(ALICE) is None
    a = ScscfAssignment(ALICE, "sip:127.0.0.1:5080", RegistrationState.REGISTERED)
    await store.subscribers.set_assignment(a)
    assert await store.subscribers.get_assignment(ALICE) == a
    with pytest.raises(StoreError):
        await store.subscribers.set_assignment(ScscfAssignment("ghost@ims.test", "sip:x", RegistrationState.REGISTERED))
    await store.subscribers.remove_subscriber(ALICE)
    assert await store.subscribers.get_assignment(ALICE) is None


def binding(contact: str, expires_at: float, **kw: object) -> Binding:
    return Binding(contact, expires_at, **kw)  # type: ignore[arg-type]


async def test_bindings_save_refresh_and_order(store: Store) -> None:
    aor = "sip:alice@ims.test"
    b1 = binding("sip:alice@10.0.0.1:5060", 1000.0, q=0.5, call_id="c1", cseq=1,
                 path=("<sip:pcscf@127.0.0.1;lr>",), flow="udp|10.0.0.1|5060",
                 params='+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"')
    b2 = binding("sip:alice@10.0.0.2:5060", 1000.0, q=0.9, instance_id="<urn:uuid:1>",
                 reg_id=1)
    await store.registrations.save(aor, b1)
    await store.registrations.save(aor, b2)
    assert await store.registrations.bindings(aor, now=500.0) == [b2, b1]  # highest q first
    refreshed = binding("sip:alice@10.0.0.1:5060", 2000.0, q=0.5, call_id="c1", cseq=2)
    await store.registrations.save(aor, refreshed)
    got = await store.registrations.bindings(aor, now=500.0)
    assert len(got) == 2 and refreshed in got
    # same instance + reg-id from a new contact address replaces the flow
    moved = binding("sip:alice@10.0.0.3:5060", 1500.0, q=0.9, instance_id="<urn:uuid:1>",
                    reg_id=1)
    await store.registrations.save(aor, moved)
    assert [b.contact for b in await store.registrations.bindings(aor, now=500.0)] == \
        ["sip:alice@10.0.0.3:5060", "sip:alice@10.0.0.1:5060"]
    assert await store.registrations.registered_aors(now=500.0) == [aor]
    assert await store.registrations.remove(aor, moved.key)
    assert await store.registrations.remove_all(aor) == 1
    assert await store.registrations.bindings(aor, now=500.0) == []


async def test_binding_expiry(store: Store) -> None:
    aor = "sip:bob@ims.test"
    await store.registrations.save(aor, binding("sip:bob@1.1.1.1", 100.0))
    await store.registrations.save(aor, binding("sip:bob@2.2.2.2", 200.0))
    assert await store.registrations.next_expiry() == 100.0
    assert [b.contact for b in await store.registrations.bindings(aor, now=150.0)] == ["sip:bob@2.2.2.2"]
    expired = await store.registrations.expire(now=150.0)
    assert [(a, b.contact) for a, b in expired] == [(aor, "sip:bob@1.1.1.1")]
    assert await store.registrations.next_expiry() == 200.0
    assert await store.registrations.registered_aors(now=250.0) == []
    assert binding("x", 200.0).remaining(150.4) == 49
    assert binding("x", 200.0).remaining(300.0) == 0


async def test_registrations_survive_restart_until_they_expire(tmp_path: Path) -> None:
    aor = "sip:alice@ims.test"
    b = binding("sip:alice@10.0.0.1:5060", 1000.0, instance_id="<urn:uuid:9>", reg_id=2,
                path=("<sip:a;lr>", "<sip:b;lr>"), call_id="cid", cseq=7, flow="tcp|x")
    async with SqliteStore.in_data_dir(tmp_path) as s:
        await s.subscribers.add_subscriber(*alice_records())
        await s.registrations.save(aor, b)
        await s.messages.defer(DeferredMessage("sip:bob@ims.test", aor, "text/plain", b"hi", 1000.0))
    async with SqliteStore.in_data_dir(tmp_path) as s:
        assert await s.subscribers.get_subscriber(ALICE) is not None
        assert await s.registrations.bindings(aor, now=999.0) == [b]
        assert await s.registrations.bindings(aor, now=1000.0) == []
        assert [m.body for m in await s.messages.deferred("sip:bob@ims.test", now=10.0)] == [b"hi"]


async def test_removing_subscriber_drops_its_bindings(store: Store) -> None:
    await store.subscribers.add_subscriber(*alice_records())
    await store.registrations.save("tel:+15550001", binding("sip:a@1.1.1.1", 1000.0))
    await store.registrations.save("sip:other@ims.test", binding("sip:o@1.1.1.1", 1000.0))
    await store.subscribers.remove_subscriber(ALICE)
    assert await store.registrations.bindings("tel:+15550001", now=0.0) == []
    assert len(await store.registrations.bindings("sip:other@ims.test", now=0.0)) == 1


async def test_deferred_messages_order_and_expiry(store: Store) -> None:
    bob = "sip:bob@ims.test"
    ids = [await store.messages.defer(DeferredMessage(bob, "sip:alice@ims.test", "message/cpim",
                                               f"m{i}".encode(), expires_at=100.0 + i,
                                               meta=f'{{"id":{i}}}'))
           for i in range(3)]
    await store.messages.defer(DeferredMessage("sip:carol@ims.test", "sip:a@ims.test", "text/plain",
                                        b"\x00\xff", 500.0))
    assert ids == sorted(ids)
    got = await store.messages.deferred(bob, now=0.0)
    assert [m.body for m in got] == [b"m0", b"m1", b"m2"]
    assert [m.id for m in got] == ids and got[1].meta == '{"id":1}'
    assert [m.body for m in await store.messages.deferred(bob, now=0.0, limit=2)] == [b"m0", b"m1"]
    assert await store.messages.deferred_recipients(now=0.0) == [bob, "sip:carol@ims.test"]
    assert (await store.messages.deferred("sip:carol@ims.test", now=0.0))[0].body == b"\x00\xff"
    assert await store.messages.remove_deferred([ids[0]]) == 1
    assert await store.messages.remove_deferred([ids[0]]) == 0
    expired = await store.messages.expire_deferred(now=101.5)
    assert [m.body for m in expired] == [b"m1"]
    assert [m.body for m in await store.messages.deferred(bob, now=101.5)] == [b"m2"]
    assert await store.messages.deferred_recipients(now=200.0) == ["sip:carol@ims.test"]


def test_store_can_be_shared_by_threads(tmp_path: Path) -> None:
    """Each thread with its own event loop; the one worker serializes them."""
    store = SqliteStore.in_data_dir(tmp_path)
    asyncio.run(store.open())

    def work(n: int) -> None:
        async def saves() -> None:
            for i in range(20):
                await store.registrations.save(f"sip:u{n}@ims.test",
                                               binding(f"sip:c{i}@h", 1000.0))
        asyncio.run(saves())
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def check() -> None:
        aors = await store.registrations.registered_aors(now=0.0)
        assert len(aors) == 4
        assert all([len(await store.registrations.bindings(a, now=0.0)) == 20 for a in aors])
        await store.close()
    asyncio.run(check())


async def test_concurrent_writers_on_the_loop_all_land(store: Store) -> None:
    async def work(n: int) -> None:
        for i in range(20):
            await store.registrations.save(f"sip:u{n}@ims.test", binding(f"sip:c{i}@h", 1000.0))
    await asyncio.gather(*(work(n) for n in range(4)),
                         store.messages.defer(DeferredMessage("sip:b@x", "sip:a@x", "t/p",
                                                              b"x", 1000.0)))
    aors = await store.registrations.registered_aors(now=0.0)
    assert len(aors) == 4
    assert all([len(await store.registrations.bindings(a, now=0.0)) == 20 for a in aors])
    assert len(await store.messages.deferred("sip:b@x", now=0.0)) == 1


async def test_write_is_durable_when_its_await_returns(tmp_path: Path) -> None:
    async with SqliteStore.in_data_dir(tmp_path) as s:
        await s.registrations.save("sip:a@ims.test", binding("sip:a@10.0.0.1", 1000.0))
        item = await s.messages.defer(DeferredMessage("sip:b@x", "sip:a@x", "t/p", b"hi", 9e9))
        # another connection (another process would do the same) sees both at once
        other = sqlite3.connect(tmp_path / DB_FILENAME)
        try:
            assert other.execute("SELECT contact FROM bindings").fetchall() == \
                [("sip:a@10.0.0.1",)]
            assert other.execute("SELECT body FROM deferred_messages WHERE id = ?",
                                 (item,)).fetchall() == [(b"hi",)]
            assert other.execute("PRAGMA synchronous").fetchone() is not None
        finally:
            other.close()


async def test_slow_write_does_not_block_the_loop(tmp_path: Path) -> None:
    async with SqliteStore.in_data_dir(tmp_path) as s:
        # Another connection holds the write lock: our write waits in the worker.
        blocker = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def timer() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        ticking = asyncio.create_task(timer())
        write = asyncio.create_task(s.subscribers.put_psi(Psi("sip:p@x", "sip:as")))
        await asyncio.sleep(0.3)
        assert not write.done() and ticks >= 10  # the loop ran while the write waited
        blocker.execute("COMMIT")
        blocker.close()
        await asyncio.wait_for(write, 5)
        ticking.cancel()
        assert await s.subscribers.get_psi("sip:p@x") is not None


async def test_close_finishes_the_writes_under_way(tmp_path: Path) -> None:
    s = await SqliteStore.in_data_dir(tmp_path).open()
    writes = [asyncio.ensure_future(s.subscribers.put_psi(Psi(f"sip:p{i}@x", "sip:as")))
              for i in range(50)]
    await asyncio.sleep(0)  # every write submitted
    await s.close()
    await asyncio.gather(*writes)
    with pytest.raises(StoreError, match="closed"):
        await s.subscribers.list_psis()
    async with SqliteStore.in_data_dir(tmp_path) as again:
        assert len(await again.subscribers.list_psis()) == 50


async def test_unopened_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not open"):
        await SqliteStore.in_data_dir(tmp_path).subscribers.list_psis()


# The schema as imsbox created it before conferences, group chat logs and
# service data (migrations 1-3), with data in it.
SCHEMA_V3 = [v for v in MIGRATIONS if v[0] <= 3]


async def test_database_of_schema_3_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
               "applied_at REAL NOT NULL)")
    for version, script in SCHEMA_V3:
        db.executescript(script)
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
    db.execute("INSERT INTO subscribers VALUES ('alice@ims.test', '+15550001', 1.0)")
    db.execute("INSERT INTO public_identities VALUES ('sip:alice@ims.test', 'alice@ims.test',"
               " 'sip:alice@ims.test', 'default', 0, 1, 0)")
    db.execute("INSERT INTO bindings VALUES ('sip:alice@ims.test', 'sip:a@h', 'sip:a@h', 1000,"
               " NULL, NULL, NULL, '', '[]', 'c', 1, '', 5)")
    db.commit()
    db.close()
    async with SqliteStore.in_data_dir(tmp_path) as s:
        assert await s.schema_version() == MIGRATIONS[-1][0]
        assert (await s.subscribers.get_subscriber(ALICE)).msisdn == "+15550001"
        assert [b.contact for b in await s.registrations.bindings("sip:alice@ims.test",
                                                                  now=0.0)] == ["sip:a@h"]
        await s.service_data.put("sip:alice@ims.test", "forward-busy", ["sip:bob@ims.test"])
        await s.conferences.create(Conference("sip:conf-1@ims.test", "sip:alice@ims.test"))
        assert await s.messages.append_group_message(
            GroupMessage("sip:conf-1@ims.test", "sip:alice@ims.test", "text/plain", b"hi")) == 1


async def test_open_store_locations(tmp_path: Path) -> None:
    async with open_store(tmp_path / "d") as s:
        assert isinstance(s, SqliteStore)
    assert (tmp_path / "d" / DB_FILENAME).exists()
    async with open_store(f"sqlite://{tmp_path / 'x.db'}") as s:
        await s.subscribers.put_psi(Psi("sip:a@b", "sip:as"))
    assert (tmp_path / "x.db").exists()
    async with open_store(f"sqlite:{tmp_path / 'y.db'}") as s:
        assert await s.subscribers.list_psis() == []
    assert (tmp_path / "y.db").exists()
    async with open_store("sqlite::memory:") as s:
        assert await s.subscribers.list_psis() == []
    assert type(open_store("postgresql://db/imsbox")).__name__ == "PostgresStore"
    assert type(open_store(tmp_path, "redis://127.0.0.1:1/0")).__name__ == "RedisCachedStore"
    with pytest.raises(StoreError, match="expected redis://"):
        open_store(tmp_path, "memcached://x")
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store("mysql://db")


async def test_group_commit_keeps_each_write_atomic(tmp_path: Path) -> None:
    """Writes queued together share one commit; one that fails is rolled back
    alone and raises to its caller; every other one is stored when it returns
    (seen by a second connection, i.e. committed)."""
    async with SqliteStore.in_data_dir(tmp_path) as s:
        await s.subscribers.add_subscriber(*alice_records())
        good = [s.subscribers.set_assignment(ScscfAssignment(
            ALICE, f"sip:scscf{i}.ims.test", RegistrationState.REGISTERED)) for i in range(20)]
        bad = s.subscribers.set_assignment(
            ScscfAssignment("nobody@ims.test", "sip:x", RegistrationState.REGISTERED))
        profiles = [s.subscribers.put_service_profile(ServiceProfile(f"p{i}", ()))
                    for i in range(20)]
        results = await asyncio.gather(*good[:10], bad, *good[10:], *profiles,
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], StoreError)
        assert "nobody@ims.test" in str(errors[0])
        db = sqlite3.connect(tmp_path / DB_FILENAME)
        try:
            (server,) = db.execute("SELECT server_name FROM scscf_assignments").fetchone()
            assert server == "sip:scscf19.ims.test"  # the last one queued wins
            assert db.execute("SELECT COUNT(*) FROM scscf_assignments").fetchone()[0] == 1
            names = {r[0] for r in db.execute("SELECT name FROM service_profiles")}
            assert {f"p{i}" for i in range(20)} <= names
        finally:
            db.close()
