"""SQLite store: CRUD, persistence across reopen, expiry, ordering."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from imsbox.store import (
    DB_FILENAME, AlreadyExists, Binding, Credential, DeferredMessage, Group, Psi, PsiKind,
    PublicIdentity, RegistrationState, ScscfAssignment, ServiceProfile, SqliteStore,
    StoreError, Subscriber, open_store,
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


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore.in_data_dir(tmp_path) as s:
        yield s


def test_file_is_in_data_dir_in_wal_mode_with_schema_version(tmp_path: Path) -> None:
    with SqliteStore.in_data_dir(tmp_path / "data") as s:
        assert s.schema_version() == MIGRATIONS[-1][0]
    path = tmp_path / "data" / DB_FILENAME
    assert path.exists()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations")]
    assert versions == [v for v, _ in MIGRATIONS]
    db.close()


def test_reopening_does_not_reapply_migrations(tmp_path: Path) -> None:
    SqliteStore.in_data_dir(tmp_path).close()
    with SqliteStore.in_data_dir(tmp_path) as s:
        rows = s._query("SELECT COUNT(*) FROM schema_migrations")
        assert rows[0][0] == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteStore.in_data_dir(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore.in_data_dir(tmp_path)


def test_subscriber_crud(store: SqliteStore) -> None:
    sub, ids = alice_records()
    store.add_subscriber(sub, ids)
    got = store.get_subscriber(ALICE)
    assert got == sub
    assert got.credential("alice", "SHA-256").ha1 == "b" * 64
    assert got.credential("alice", "MD5") is None
    assert [s.private_id for s in store.list_subscribers()] == [ALICE]
    assert store.get_public_identity("tel:+15550001").private_id == ALICE
    assert store.get_public_identity("sip:alice-work@ims.test").barred
    assert store.remove_subscriber(ALICE)
    assert store.get_subscriber(ALICE) is None
    assert store.get_public_identity("tel:+15550001") is None
    assert not store.remove_subscriber(ALICE)


def test_no_password_column_anywhere(store: SqliteStore) -> None:
    tables = [r[0] for r in store._query("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        cols = [r[1] for r in store._query(f"PRAGMA table_info({table})")]
        assert not any("password" in c for c in cols)


def test_duplicates_are_refused_atomically(store: SqliteStore) -> None:
    sub, ids = alice_records()
    store.add_subscriber(sub, ids)
    with pytest.raises(AlreadyExists, match="subscriber alice@ims.test"):
        store.add_subscriber(sub, ids)
    bob = Subscriber("bob@ims.test", msisdn="+15550002")
    with pytest.raises(AlreadyExists, match="tel:\\+15550001"):
        store.add_subscriber(bob, [PublicIdentity("sip:bob@ims.test", "bob@ims.test", "b"),
                                   PublicIdentity("tel:+15550001", "bob@ims.test", "b")])
    # nothing of bob was kept
    assert store.get_subscriber("bob@ims.test") is None
    assert store.get_public_identity("sip:bob@ims.test") is None
    carol = Subscriber("carol@ims.test", msisdn="+15550001")
    with pytest.raises(AlreadyExists, match="MSISDN"):
        store.add_subscriber(carol, [PublicIdentity("sip:carol@ims.test", "carol@ims.test", "c")])


def test_implicit_registration_sets(store: SqliteStore) -> None:
    sub, ids = alice_records()
    store.add_subscriber(sub, ids)
    main_set = [p.uri for p in store.implicit_set("tel:+15550001")]
    assert main_set == ["sip:alice@ims.test", "tel:+15550001",
                        "sip:+15550001@ims.test;user=phone"]
    assert [p.uri for p in store.implicit_set("sip:alice-work@ims.test")] == \
        ["sip:alice-work@ims.test"]
    assert store.implicit_set("sip:nobody@ims.test") == []
    assert len(store.public_identities(ALICE)) == 4


def test_service_profile_replace(store: SqliteStore) -> None:
    assert store.get_service_profile("default") is None
    store.put_service_profile(ServiceProfile("default", ('{"a":1}', '{"b":2}')))
    store.put_service_profile(ServiceProfile("default", ('{"c":3}',)))
    assert store.get_service_profile("default") == ServiceProfile("default", ('{"c":3}',))


def test_psis_and_groups(store: SqliteStore) -> None:
    store.put_psi(Psi("sip:conf-*@ims.test", "sip:127.0.0.1:5100", PsiKind.WILDCARD))
    store.put_psi(Psi("sip:chat@ims.test", "sip:127.0.0.1:5090"))
    store.put_psi(Psi("sip:chat@ims.test", "sip:127.0.0.1:5091"))  # replace
    assert store.get_psi("sip:chat@ims.test").as_uri == "sip:127.0.0.1:5091"
    assert [p.pattern for p in store.list_psis(PsiKind.WILDCARD)] == ["sip:conf-*@ims.test"]
    assert len(store.list_psis()) == 2
    assert store.remove_psi("sip:chat@ims.test") and store.get_psi("sip:chat@ims.test") is None

    group = Group("sip:group-x@ims.test", ("sip:b@ims.test", "sip:a@ims.test"), "friends")
    store.put_group(group)
    assert store.get_group(group.uri) == group  # member order kept
    store.put_group(Group(group.uri, ("tel:+1",)))
    assert store.get_group(group.uri).members == ("tel:+1",)
    assert [g.uri for g in store.list_groups()] == [group.uri]
    assert store.remove_group(group.uri) and store.get_group(group.uri) is None


def test_scscf_assignment(store: SqliteStore) -> None:
    sub, ids = alice_records()
    store.add_subscriber(sub, ids)
    assert store.get_assignment(ALICE) is None
    a = ScscfAssignment(ALICE, "sip:127.0.0.1:5080", RegistrationState.REGISTERED)
    store.set_assignment(a)
    assert store.get_assignment(ALICE) == a
    with pytest.raises(StoreError):
        store.set_assignment(ScscfAssignment("ghost@ims.test", "sip:x", RegistrationState.REGISTERED))
    store.remove_subscriber(ALICE)
    assert store.get_assignment(ALICE) is None


def binding(contact: str, expires_at: float, **kw: object) -> Binding:
    return Binding(contact, expires_at, **kw)  # type: ignore[arg-type]


def test_bindings_save_refresh_and_order(store: SqliteStore) -> None:
    aor = "sip:alice@ims.test"
    b1 = binding("sip:alice@10.0.0.1:5060", 1000.0, q=0.5, call_id="c1", cseq=1,
                 path=("<sip:pcscf@127.0.0.1;lr>",), flow="udp|10.0.0.1|5060",
                 params='+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"')
    b2 = binding("sip:alice@10.0.0.2:5060", 1000.0, q=0.9, instance_id="<urn:uuid:1>",
                 reg_id=1)
    store.save_binding(aor, b1)
    store.save_binding(aor, b2)
    assert store.bindings(aor, now=500.0) == [b2, b1]  # highest q first
    refreshed = binding("sip:alice@10.0.0.1:5060", 2000.0, q=0.5, call_id="c1", cseq=2)
    store.save_binding(aor, refreshed)
    got = store.bindings(aor, now=500.0)
    assert len(got) == 2 and refreshed in got
    # same instance + reg-id from a new contact address replaces the flow
    moved = binding("sip:alice@10.0.0.3:5060", 1500.0, q=0.9, instance_id="<urn:uuid:1>",
                    reg_id=1)
    store.save_binding(aor, moved)
    assert [b.contact for b in store.bindings(aor, now=500.0)] == \
        ["sip:alice@10.0.0.3:5060", "sip:alice@10.0.0.1:5060"]
    assert store.registered_aors(now=500.0) == [aor]
    assert store.remove_binding(aor, moved.key)
    assert store.remove_bindings(aor) == 1
    assert store.bindings(aor, now=500.0) == []


def test_binding_expiry(store: SqliteStore) -> None:
    aor = "sip:bob@ims.test"
    store.save_binding(aor, binding("sip:bob@1.1.1.1", 100.0))
    store.save_binding(aor, binding("sip:bob@2.2.2.2", 200.0))
    assert store.next_binding_expiry() == 100.0
    assert [b.contact for b in store.bindings(aor, now=150.0)] == ["sip:bob@2.2.2.2"]
    expired = store.expire_bindings(now=150.0)
    assert [(a, b.contact) for a, b in expired] == [(aor, "sip:bob@1.1.1.1")]
    assert store.next_binding_expiry() == 200.0
    assert store.registered_aors(now=250.0) == []
    assert binding("x", 200.0).remaining(150.4) == 49
    assert binding("x", 200.0).remaining(300.0) == 0


def test_registrations_survive_restart_until_they_expire(tmp_path: Path) -> None:
    aor = "sip:alice@ims.test"
    b = binding("sip:alice@10.0.0.1:5060", 1000.0, instance_id="<urn:uuid:9>", reg_id=2,
                path=("<sip:a;lr>", "<sip:b;lr>"), call_id="cid", cseq=7, flow="tcp|x")
    with SqliteStore.in_data_dir(tmp_path) as s:
        s.add_subscriber(*alice_records())
        s.save_binding(aor, b)
        s.defer_message(DeferredMessage("sip:bob@ims.test", aor, "text/plain", b"hi", 1000.0))
    with SqliteStore.in_data_dir(tmp_path) as s:
        assert s.get_subscriber(ALICE) is not None
        assert s.bindings(aor, now=999.0) == [b]
        assert s.bindings(aor, now=1000.0) == []
        assert [m.body for m in s.deferred_messages("sip:bob@ims.test", now=10.0)] == [b"hi"]


def test_removing_subscriber_drops_its_bindings(store: SqliteStore) -> None:
    store.add_subscriber(*alice_records())
    store.save_binding("tel:+15550001", binding("sip:a@1.1.1.1", 1000.0))
    store.save_binding("sip:other@ims.test", binding("sip:o@1.1.1.1", 1000.0))
    store.remove_subscriber(ALICE)
    assert store.bindings("tel:+15550001", now=0.0) == []
    assert len(store.bindings("sip:other@ims.test", now=0.0)) == 1


def test_deferred_messages_order_and_expiry(store: SqliteStore) -> None:
    bob = "sip:bob@ims.test"
    ids = [store.defer_message(DeferredMessage(bob, "sip:alice@ims.test", "message/cpim",
                                               f"m{i}".encode(), expires_at=100.0 + i,
                                               meta='{"id":%d}' % i))
           for i in range(3)]
    store.defer_message(DeferredMessage("sip:carol@ims.test", "sip:a@ims.test", "text/plain",
                                        b"\x00\xff", 500.0))
    assert ids == sorted(ids)
    got = store.deferred_messages(bob, now=0.0)
    assert [m.body for m in got] == [b"m0", b"m1", b"m2"]
    assert [m.id for m in got] == ids and got[1].meta == '{"id":1}'
    assert [m.body for m in store.deferred_messages(bob, now=0.0, limit=2)] == [b"m0", b"m1"]
    assert store.deferred_recipients(now=0.0) == [bob, "sip:carol@ims.test"]
    assert store.deferred_messages("sip:carol@ims.test", now=0.0)[0].body == b"\x00\xff"
    assert store.remove_deferred([ids[0]]) == 1
    assert store.remove_deferred([ids[0]]) == 0
    expired = store.expire_deferred(now=101.5)
    assert [m.body for m in expired] == [b"m1"]
    assert [m.body for m in store.deferred_messages(bob, now=101.5)] == [b"m2"]
    assert store.deferred_recipients(now=200.0) == ["sip:carol@ims.test"]


def test_store_can_be_shared_by_threads(store: SqliteStore) -> None:
    def work(n: int) -> None:
        for i in range(20):
            store.save_binding(f"sip:u{n}@ims.test", binding(f"sip:c{i}@h", 1000.0))
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.registered_aors(now=0.0)) == 4
    assert all(len(store.bindings(a, now=0.0)) == 20 for a in store.registered_aors(now=0.0))


def test_open_store_locations(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as s:
        assert isinstance(s, SqliteStore)
    assert (tmp_path / "d" / DB_FILENAME).exists()
    with open_store(f"sqlite://{tmp_path / 'x.db'}") as s:
        s.put_psi(Psi("sip:a@b", "sip:as"))
    assert (tmp_path / "x.db").exists()
    with open_store("sqlite::memory:") as s:
        assert s.list_psis() == []
    with pytest.raises(StoreError, match="PostgreSQL"):
        open_store("postgresql://db/imsbox")
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store("mysql://db")
