"""SQLite back end: the embedded default store (one file, WAL mode).

One worker thread owns the connection and runs the jobs in the order they
were submitted, so the event loop never waits on SQLite and writes from
concurrent tasks serialize. Each write is its own transaction, committed with
synchronous=FULL before the awaiting caller resumes ("2xx means stored").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from .base import (
    AlreadyExists, ConferenceRepository, FileRepository, FlowRepository, LoginRepository,
    MessageRepository, NonceRepository, ParkingRepository, RegSubscriptionRepository,
    RegistrationRepository, ServiceDataRepository, Store, StoreError, SubscriberRepository,
)
from .models import (
    Binding, Conference, ConferenceKind, Credential, DeferredMessage, Group, GroupMessage,
    HistoryEntry, LoginState, ParkedCall, Participant, ParticipantState, PcscfRegistration, Psi,
    PsiKind, PublicIdentity, RegistrationState, RegSubscription, ScscfAssignment, ServiceProfile,
    StoredFile, Subscriber,
)

__all__ = ["DB_FILENAME", "MIGRATIONS", "SqliteStore"]

log = logging.getLogger(__name__)

DB_FILENAME = "imsbox.sqlite3"

T = TypeVar("T")
P = ParamSpec("P")
Rows = list[sqlite3.Row]

# Call park orbits: the primary key is what makes an orbit hold one call.
PARKED_CALLS = """
    CREATE TABLE parked_calls (
        lot TEXT NOT NULL,
        orbit INTEGER NOT NULL,
        token TEXT NOT NULL,
        parker TEXT NOT NULL,
        parked TEXT NOT NULL,
        holder TEXT NOT NULL DEFAULT '',
        parked_at REAL NOT NULL,
        PRIMARY KEY (lot, orbit)
    );
    """

# Append only: each entry is (version, script). Applied scripts are recorded in
# schema_migrations, so an existing file is upgraded in place.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
    CREATE TABLE subscribers (
        private_id TEXT PRIMARY KEY,
        msisdn TEXT UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE credentials (
        private_id TEXT NOT NULL REFERENCES subscribers(private_id) ON DELETE CASCADE,
        username TEXT NOT NULL,
        realm TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        ha1 TEXT NOT NULL,
        PRIMARY KEY (private_id, username, realm, algorithm)
    );
    CREATE TABLE public_identities (
        uri TEXT PRIMARY KEY,
        private_id TEXT NOT NULL REFERENCES subscribers(private_id) ON DELETE CASCADE,
        irs_id TEXT NOT NULL,
        service_profile TEXT NOT NULL,
        barred INTEGER NOT NULL DEFAULT 0,
        is_default INTEGER NOT NULL DEFAULT 0,
        position INTEGER NOT NULL
    );
    CREATE INDEX public_identities_private ON public_identities(private_id);
    CREATE INDEX public_identities_irs ON public_identities(irs_id);
    CREATE TABLE service_profiles (name TEXT PRIMARY KEY);
    CREATE TABLE ifcs (
        profile TEXT NOT NULL REFERENCES service_profiles(name) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (profile, position)
    );
    CREATE TABLE psis (
        pattern TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        as_uri TEXT NOT NULL
    );
    CREATE TABLE groups (uri TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '');
    CREATE TABLE group_members (
        group_uri TEXT NOT NULL REFERENCES groups(uri) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        member TEXT NOT NULL,
        PRIMARY KEY (group_uri, position)
    );
    CREATE TABLE scscf_assignments (
        private_id TEXT PRIMARY KEY REFERENCES subscribers(private_id) ON DELETE CASCADE,
        server_name TEXT,
        state TEXT NOT NULL
    );
    CREATE TABLE bindings (
        aor TEXT NOT NULL,
        binding_key TEXT NOT NULL,
        contact TEXT NOT NULL,
        expires_at REAL NOT NULL,
        q REAL,
        instance_id TEXT,
        reg_id INTEGER,
        params TEXT NOT NULL,
        path TEXT NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        flow TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (aor, binding_key)
    );
    CREATE INDEX bindings_expiry ON bindings(expires_at);
    CREATE TABLE deferred_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        meta TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX deferred_recipient ON deferred_messages(recipient, id);
    CREATE INDEX deferred_expiry ON deferred_messages(expires_at);
    """),
    (2, """
    CREATE TABLE pcscf_registrations (
        node TEXT NOT NULL,
        contact_key TEXT NOT NULL,
        contact TEXT NOT NULL,
        flow TEXT NOT NULL,
        public_ids TEXT NOT NULL,
        service_route TEXT NOT NULL,
        expires_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (node, contact_key)
    );
    CREATE INDEX pcscf_registrations_expiry ON pcscf_registrations(expires_at);
    """),
    (3, """
    CREATE TABLE message_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        message_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (conversation_id, message_key)
    );
    """),
    (4, """
    CREATE TABLE conferences (
        uri TEXT PRIMARY KEY,
        creator TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL
    );
    CREATE INDEX conferences_expiry ON conferences(expires_at);
    CREATE TABLE conference_admins (
        conference TEXT NOT NULL REFERENCES conferences(uri) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        admin TEXT NOT NULL,
        PRIMARY KEY (conference, position)
    );
    CREATE TABLE conference_participants (
        conference TEXT NOT NULL REFERENCES conferences(uri) ON DELETE CASCADE,
        uri TEXT NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL,
        display_name TEXT NOT NULL,
        joined_at REAL NOT NULL,
        PRIMARY KEY (conference, uri)
    );
    CREATE TABLE group_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conference TEXT NOT NULL,
        message_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        meta TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX group_messages_conference ON group_messages(conference, id);
    CREATE UNIQUE INDEX group_messages_key ON group_messages(conference, message_key)
        WHERE message_key != '';
    CREATE TABLE group_positions (
        conference TEXT NOT NULL,
        member TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        PRIMARY KEY (conference, member)
    );
    CREATE TABLE service_data (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        position INTEGER NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (owner, key, position)
    );
    CREATE INDEX service_data_value ON service_data(key, value);
    """),
    (5, """
    ALTER TABLE deferred_messages ADD COLUMN lease_holder TEXT;
    ALTER TABLE deferred_messages ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE deferred_messages ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE nonce_counts (
        nonce TEXT PRIMARY KEY,
        nc INTEGER NOT NULL,
        expires_at REAL NOT NULL
    );
    """),
    (6, """
    CREATE TABLE shared_secrets (
        name TEXT PRIMARY KEY,
        secret BLOB NOT NULL
    );
    """),
    (7, PARKED_CALLS),
    (8, """
    CREATE TABLE conference_owners (
        uri TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        fence INTEGER NOT NULL,
        lease_until REAL NOT NULL
    );
    """),
    (9, """
    CREATE TABLE reg_subscriptions (
        call_id TEXT NOT NULL,
        local_tag TEXT NOT NULL,
        remote_tag TEXT NOT NULL,
        aor TEXT NOT NULL,
        event TEXT NOT NULL,
        resource TEXT NOT NULL,
        local_uri TEXT NOT NULL,
        remote_uri TEXT NOT NULL,
        remote_target TEXT NOT NULL,
        local_target TEXT NOT NULL,
        route_set TEXT NOT NULL,
        remote_cseq INTEGER NOT NULL,
        cseq_base INTEGER NOT NULL,
        version INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (call_id, local_tag, remote_tag)
    );
    CREATE INDEX reg_subscriptions_aor ON reg_subscriptions(aor);
    CREATE INDEX reg_subscriptions_expiry ON reg_subscriptions(expires_at);
    CREATE TABLE login_accounts (
        account TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_failure REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE login_source_failures (
        address TEXT NOT NULL,
        at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX login_source_failures_address ON login_source_failures(address, at);
    CREATE TABLE login_trusted (
        account TEXT NOT NULL,
        address TEXT NOT NULL,
        port INTEGER NOT NULL,
        at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (account, address, port)
    );
    """),
    # Files kept for offline users (store.files): a file row owned by its deferred
    # item once kept (the cascade removes file and chunks with the item);
    # AUTOINCREMENT so a swept file's id is never reused under a late writer.
    (10, """
    CREATE TABLE deferred_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER UNIQUE REFERENCES deferred_messages(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        touched_at REAL NOT NULL
    );
    CREATE INDEX deferred_files_idle ON deferred_files(touched_at);
    CREATE TABLE deferred_file_chunks (
        file_id INTEGER NOT NULL REFERENCES deferred_files(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (file_id, seq)
    );
    """),
)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _limit(limit: int | None) -> int:
    return -1 if limit is None else limit


# -- the connection and its thread ------------------------------------------------------

class _Connection:
    """The SQLite connection, used only by its one worker thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="imsbox-store")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        # Group commit: writes waiting for the worker, and whether a drain of
        # them is already queued on it (see write).
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
        self._draining = False
        self._lock = threading.Lock()

    async def call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on the worker thread; its result (or error) once it is done."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        return await asyncio.wrap_future(self._executor.submit(self._run, job))

    def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StoreError(f"store {self.path} is not open")
        try:
            return job(self._db)
        except sqlite3.Error as exc:  # callers see StoreError only, never sqlite3
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def read(self, sql: str, args: Sequence[object] = ()) -> Rows:
        return await self.call(lambda db: db.execute(sql, args).fetchall())

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """``job`` in a transaction committed (synchronous=FULL) before this
        returns: "2xx means stored" holds.  Writes that arrive while the
        worker is busy are committed together, one fsync for the lot (group
        commit); each runs in its own savepoint, so one that fails is rolled
        back alone and raises to its caller only.  A read queued after a write
        sees it."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        future: Future[T] = Future()
        with self._lock:
            self._writes.append((job, future))
            start, self._draining = not self._draining, True
        if start:
            self._executor.submit(self._drain)
        return await asyncio.wrap_future(future)

    def _drain(self) -> None:
        """On the worker: every write queued so far, in one transaction."""
        with self._lock:
            queued, self._writes, self._draining = self._writes, [], False
        # A write whose caller was cancelled before it ran is not done (as a
        # cancelled executor job); the others can no longer be cancelled.
        batch = [item for item in queued if item[1].set_running_or_notify_cancel()]
        if not batch:
            return
        db = self._db
        if db is None:
            _fail_all(batch, StoreError(f"store {self.path} is not open"))
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            _fail_all(batch, StoreError(f"store {self.path}: {exc}"))
            return
        outcomes = [self._in_savepoint(db, job) for job, _ in batch]
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            _fail_all(batch, StoreError(f"store {self.path}: {exc}"))
            return
        for (_, future), (value, error) in zip(batch, outcomes, strict=True):
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _in_savepoint(self, db: sqlite3.Connection, job: Callable[[sqlite3.Connection], Any],
                      ) -> tuple[Any, Exception | None]:
        db.execute("SAVEPOINT write_job")
        try:
            value = job(db)
        except Exception as exc:
            db.execute("ROLLBACK TO write_job")
            db.execute("RELEASE write_job")
            if isinstance(exc, sqlite3.Error):  # callers see StoreError only
                error: Exception = StoreError(f"store {self.path}: {exc}")
                error.__cause__ = exc
                return None, error
            return None, exc
        db.execute("RELEASE write_job")
        return value, None

    async def open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        await asyncio.wrap_future(self._executor.submit(self._connect))

    def _connect(self) -> None:
        if self._db is not None:
            return
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # accepted messages survive a power cut
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")  # other processes (CLI vs serve)
            _transaction(db, lambda _: _migrate(db, self.path))
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
            raise
        self._db = db

    async def close(self) -> None:
        """Jobs already submitted finish first, then the connection closes."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wrap_future(self._executor.submit(self._disconnect))
        finally:
            self._executor.shutdown(wait=False)

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _fail_all(batch: Sequence[tuple[object, Future[Any]]], error: Exception) -> None:
    for _, future in batch:
        future.set_exception(error)


def _transaction(db: sqlite3.Connection, job: Callable[[sqlite3.Connection], T]) -> T:
    """IMMEDIATE takes the write lock up front (no upgrade deadlock with readers)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = job(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _migrate(db: sqlite3.Connection, path: str) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
               "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    newest = max(done, default=0)
    if newest > MIGRATIONS[-1][0]:
        raise StoreError(f"store {path} has schema version {newest}, "
                         f"newer than this imsbox ({MIGRATIONS[-1][0]})")
    for version, script in MIGRATIONS:
        if version in done:
            continue
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
        # DEBUG: provisioning commands print what they did, not schema chatter.
        log.debug("store %s: applied schema migration %d", path, version)


# -- the store ------------------------------------------------------------------------

class SqliteStore(Store):
    """Store in one SQLite file (``:memory:`` works for throw-away use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connection = _Connection(self.path)
        self.subscribers = SqliteSubscribers(self._connection)
        self.registrations = SqliteRegistrations(self._connection)
        self.flows = SqliteFlows(self._connection)
        self.messages = SqliteMessages(self._connection)
        self.files = SqliteFiles(self._connection)
        self.conferences = SqliteConferences(self._connection)
        self.service_data = SqliteServiceData(self._connection)
        self.nonces = SqliteNonces(self._connection)
        self.parking = SqliteParking(self._connection)
        self.reg_subscriptions = SqliteRegSubscriptions(self._connection)
        self.logins = SqliteLogins(self._connection)

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> SqliteStore:
        """The store file of a data directory (created when missing)."""
        return cls(Path(data_dir) / DB_FILENAME)

    async def open(self) -> Self:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        await self._connection.open()
        return self

    async def close(self) -> None:
        await self._connection.close()

    async def schema_version(self) -> int:
        rows = await self._connection.read("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0])


# -- subscribers / HSS data -------------------------------------------------------------

def _bumps_generation(
        method: Callable[Concatenate[SqliteSubscribers, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SqliteSubscribers, P], Coroutine[Any, Any, T]]:
    """A write to what user profiles are made of: bump the generation after
    it (also after a failed one), see SubscriberRepository.profile_generation."""
    async def write(self: SqliteSubscribers, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._generation += 1
    write.__name__ = method.__name__
    write.__doc__ = method.__doc__
    return write


class SqliteSubscribers(SubscriberRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection
        self._generation = 0

    def profile_generation(self) -> int | None:
        return self._generation

    @_bumps_generation
    async def add_subscriber(self, subscriber: Subscriber,
                             identities: Sequence[PublicIdentity]) -> None:
        def job(db: sqlite3.Connection) -> None:
            try:
                _transaction(db, lambda _: _insert_subscriber(db, subscriber, identities))
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(_taken(db, subscriber, identities)) from exc
        await self._c.call(job)

    async def get_subscriber(self, private_id: str) -> Subscriber | None:
        found = await self._c.call(lambda db: _subscribers(
            db, "SELECT * FROM subscribers WHERE private_id = ?", (private_id,)))
        return found[0] if found else None

    async def list_subscribers(self) -> list[Subscriber]:
        return await self._c.call(lambda db: _subscribers(
            db, "SELECT * FROM subscribers ORDER BY private_id"))

    @_bumps_generation
    async def remove_subscriber(self, private_id: str) -> bool:
        def job(db: sqlite3.Connection) -> bool:
            uris = [(r[0],) for r in db.execute(
                "SELECT uri FROM public_identities WHERE private_id = ?", (private_id,))]
            db.executemany("DELETE FROM bindings WHERE aor = ?", uris)
            db.executemany("DELETE FROM service_data WHERE owner = ?", uris)
            cur = db.execute("DELETE FROM subscribers WHERE private_id = ?", (private_id,))
            return cur.rowcount > 0
        return await self._c.write(job)

    async def get_public_identity(self, uri: str) -> PublicIdentity | None:
        rows = await self._c.read("SELECT * FROM public_identities WHERE uri = ?", (uri,))
        return _identity(rows[0]) if rows else None

    async def public_identities(self, private_id: str) -> list[PublicIdentity]:
        rows = await self._c.read("SELECT * FROM public_identities WHERE private_id = ? "
                                  "ORDER BY irs_id, is_default DESC, position", (private_id,))
        return [_identity(row) for row in rows]

    async def implicit_set(self, uri: str) -> list[PublicIdentity]:
        rows = await self._c.read(
            "SELECT * FROM public_identities WHERE irs_id = "
            "(SELECT irs_id FROM public_identities WHERE uri = ?) "
            "ORDER BY is_default DESC, position", (uri,))
        return [_identity(row) for row in rows]

    # -- service profiles -----------------------------------------------------
    @_bumps_generation
    async def put_service_profile(self, profile: ServiceProfile) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO service_profiles VALUES (?)", (profile.name,))
            db.execute("DELETE FROM ifcs WHERE profile = ?", (profile.name,))
            db.executemany("INSERT INTO ifcs VALUES (?, ?, ?)",
                           [(profile.name, i, doc) for i, doc in enumerate(profile.ifcs)])
        await self._c.write(job)

    async def get_service_profile(self, name: str) -> ServiceProfile | None:
        def job(db: sqlite3.Connection) -> ServiceProfile | None:
            if not db.execute("SELECT 1 FROM service_profiles WHERE name = ?",
                              (name,)).fetchall():
                return None
            docs = db.execute("SELECT document FROM ifcs WHERE profile = ? ORDER BY position",
                              (name,)).fetchall()
            return ServiceProfile(name, tuple(row[0] for row in docs))
        return await self._c.call(job)

    # -- PSIs -----------------------------------------------------------------
    @_bumps_generation
    async def put_psi(self, psi: Psi) -> None:
        await self._c.write(lambda db: db.execute(
            "INSERT OR REPLACE INTO psis VALUES (?, ?, ?)",
            (psi.pattern, psi.kind.value, psi.as_uri)))

    async def get_psi(self, pattern: str) -> Psi | None:
        rows = await self._c.read("SELECT * FROM psis WHERE pattern = ?", (pattern,))
        return _psi(rows[0]) if rows else None

    async def list_psis(self, kind: PsiKind | None = None) -> list[Psi]:
        if kind is None:
            rows = await self._c.read("SELECT * FROM psis ORDER BY pattern")
        else:
            rows = await self._c.read("SELECT * FROM psis WHERE kind = ? ORDER BY pattern",
                                      (kind.value,))
        return [_psi(row) for row in rows]

    @_bumps_generation
    async def remove_psi(self, pattern: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM psis WHERE pattern = ?", (pattern,)).rowcount > 0)

    # -- groups ---------------------------------------------------------------
    @_bumps_generation
    async def put_group(self, group: Group) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?)", (group.uri, group.name))
            db.execute("DELETE FROM group_members WHERE group_uri = ?", (group.uri,))
            db.executemany("INSERT INTO group_members VALUES (?, ?, ?)",
                           [(group.uri, i, m) for i, m in enumerate(group.members)])
        await self._c.write(job)

    async def get_group(self, uri: str) -> Group | None:
        found = await self._c.call(lambda db: _groups(
            db, "SELECT * FROM groups WHERE uri = ?", (uri,)))
        return found[0] if found else None

    async def list_groups(self) -> list[Group]:
        return await self._c.call(lambda db: _groups(db, "SELECT * FROM groups ORDER BY uri"))

    @_bumps_generation
    async def remove_group(self, uri: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM groups WHERE uri = ?", (uri,)).rowcount > 0)

    # -- S-CSCF assignment ----------------------------------------------------
    async def get_assignment(self, private_id: str) -> ScscfAssignment | None:
        rows = await self._c.read("SELECT * FROM scscf_assignments WHERE private_id = ?",
                                  (private_id,))
        if not rows:
            return None
        row = rows[0]
        return ScscfAssignment(row["private_id"], row["server_name"],
                               RegistrationState(row["state"]))

    async def set_assignment(self, assignment: ScscfAssignment) -> None:
        def job(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT OR REPLACE INTO scscf_assignments VALUES (?, ?, ?)",
                    (assignment.private_id, assignment.server_name, assignment.state.value))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"no subscriber {assignment.private_id!r}") from exc
        await self._c.write(job)


def _insert_subscriber(db: sqlite3.Connection, subscriber: Subscriber,
                       identities: Sequence[PublicIdentity]) -> None:
    db.execute("INSERT INTO subscribers VALUES (?, ?, ?)",
               (subscriber.private_id, subscriber.msisdn, subscriber.created_at or time.time()))
    db.executemany("INSERT INTO credentials VALUES (?, ?, ?, ?, ?)",
                   [(subscriber.private_id, c.username, c.realm, c.algorithm, c.ha1)
                    for c in subscriber.credentials])
    db.executemany("INSERT INTO public_identities VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(p.uri, subscriber.private_id, p.irs_id, p.service_profile,
                     int(p.barred), int(p.default), i) for i, p in enumerate(identities)])


def _taken(db: sqlite3.Connection, subscriber: Subscriber,
           identities: Sequence[PublicIdentity]) -> str:
    """Name the key that made an insert fail, for a useful error message."""
    def exists(sql: str, key: str) -> bool:
        return bool(db.execute(sql, (key,)).fetchall())
    if exists("SELECT 1 FROM subscribers WHERE private_id = ?", subscriber.private_id):
        return f"subscriber {subscriber.private_id} already exists"
    for identity in identities:
        if exists("SELECT 1 FROM public_identities WHERE uri = ?", identity.uri):
            return f"public identity {identity.uri} is already in use"
    if subscriber.msisdn:
        return f"MSISDN {subscriber.msisdn} is already in use"
    return f"subscriber {subscriber.private_id} conflicts with an existing record"


def _subscribers(db: sqlite3.Connection, sql: str,
                 args: Sequence[object] = ()) -> list[Subscriber]:
    out = []
    for row in db.execute(sql, args).fetchall():
        creds = db.execute(
            "SELECT username, realm, algorithm, ha1 FROM credentials WHERE private_id = ? "
            "ORDER BY rowid", (row["private_id"],)).fetchall()
        out.append(Subscriber(row["private_id"], tuple(Credential(*c) for c in creds),
                              row["msisdn"], row["created_at"]))
    return out


def _groups(db: sqlite3.Connection, sql: str, args: Sequence[object] = ()) -> list[Group]:
    out = []
    for row in db.execute(sql, args).fetchall():
        members = db.execute("SELECT member FROM group_members WHERE group_uri = ? "
                             "ORDER BY position", (row["uri"],)).fetchall()
        out.append(Group(row["uri"], tuple(m[0] for m in members), row["name"]))
    return out


def _identity(row: sqlite3.Row) -> PublicIdentity:
    return PublicIdentity(row["uri"], row["private_id"], row["irs_id"],
                          row["service_profile"], bool(row["barred"]),
                          bool(row["is_default"]))


def _psi(row: sqlite3.Row) -> Psi:
    return Psi(row["pattern"], row["as_uri"], PsiKind(row["kind"]))


# -- registrations (S-CSCF bindings) ----------------------------------------------------

class SqliteRegistrations(RegistrationRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def save(self, aor: str, binding: Binding) -> None:
        await self._c.write(lambda db: db.execute(
            "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (aor, binding.key, binding.contact, binding.expires_at, binding.q,
             binding.instance_id, binding.reg_id, binding.params,
             json.dumps(list(binding.path)), binding.call_id, binding.cseq,
             binding.flow, time.time())))

    async def remove(self, aor: str, key: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM bindings WHERE aor = ? AND binding_key = ?", (aor, key)).rowcount > 0)

    async def remove_all(self, aor: str) -> int:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM bindings WHERE aor = ?", (aor,)).rowcount)

    async def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        rows = await self._c.read(
            "SELECT * FROM bindings WHERE aor = ? AND expires_at > ? "
            "ORDER BY COALESCE(q, 1.0) DESC, updated_at DESC, rowid DESC", (aor, _now(now)))
        return [_binding(row) for row in rows]

    async def registered_aors(self, now: float | None = None) -> list[str]:
        rows = await self._c.read("SELECT DISTINCT aor FROM bindings WHERE expires_at > ? "
                                  "ORDER BY aor", (_now(now),))
        return [row[0] for row in rows]

    async def expire(self, now: float | None = None) -> list[tuple[str, Binding]]:
        cutoff = _now(now)

        def job(db: sqlite3.Connection) -> Rows:
            rows = db.execute("SELECT * FROM bindings WHERE expires_at <= ?",
                              (cutoff,)).fetchall()
            db.execute("DELETE FROM bindings WHERE expires_at <= ?", (cutoff,))
            return rows
        return [(row["aor"], _binding(row)) for row in await self._c.write(job)]

    async def next_expiry(self) -> float | None:
        rows = await self._c.read("SELECT MIN(expires_at) FROM bindings")
        return rows[0][0]  # type: ignore[no-any-return]


def _binding(row: sqlite3.Row) -> Binding:
    return Binding(
        contact=row["contact"], expires_at=row["expires_at"], q=row["q"],
        instance_id=row["instance_id"], reg_id=row["reg_id"], params=row["params"],
        path=tuple(json.loads(row["path"])), call_id=row["call_id"], cseq=row["cseq"],
        flow=row["flow"])


# -- flows (P-CSCF registrations) -------------------------------------------------------

class SqliteFlows(FlowRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def save(self, registration: PcscfRegistration) -> None:
        r = registration
        await self._c.write(lambda db: db.execute(
            "INSERT OR REPLACE INTO pcscf_registrations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.node, r.key, r.contact, r.flow, json.dumps(list(r.public_ids)),
             json.dumps(list(r.service_route)), r.expires_at, time.time())))

    async def remove(self, node: str, key: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM pcscf_registrations WHERE node = ? AND contact_key = ?",
            (node, key)).rowcount > 0)

    async def registrations(self, node: str,
                            now: float | None = None) -> list[PcscfRegistration]:
        rows = await self._c.read("SELECT * FROM pcscf_registrations WHERE node = ? AND "
                                  "expires_at > ? ORDER BY updated_at, rowid",
                                  (node, _now(now)))
        return [PcscfRegistration(
            node=row["node"], key=row["contact_key"], contact=row["contact"],
            flow=row["flow"], public_ids=tuple(json.loads(row["public_ids"])),
            service_route=tuple(json.loads(row["service_route"])),
            expires_at=row["expires_at"]) for row in rows]

    async def expire(self, now: float | None = None) -> int:
        cutoff = _now(now)
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM pcscf_registrations WHERE expires_at <= ?", (cutoff,)).rowcount)


# -- messages ---------------------------------------------------------------------------

class SqliteMessages(MessageRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    # -- deferred messages ----------------------------------------------------
    async def defer(self, message: DeferredMessage) -> int:
        return await self._c.write(lambda db: _insert_deferred(db, message))

    async def deferred(self, recipient: str, now: float | None = None,
                       limit: int | None = None) -> list[DeferredMessage]:
        rows = await self._c.read(
            "SELECT * FROM deferred_messages WHERE recipient = ? AND expires_at > ? "
            "ORDER BY id LIMIT ?", (recipient, _now(now), _limit(limit)))
        return [_deferred(row) for row in rows]

    async def claim_deferred(self, recipient: str, holder: str, lease: float,
                             now: float | None = None,
                             limit: int | None = None) -> list[DeferredMessage]:
        at = _now(now)

        def job(db: sqlite3.Connection) -> Rows:
            # one transaction under the write lock: no other process claims between
            # the SELECT and the UPDATE; the fence grows with every claim of a row
            ids = [r[0] for r in db.execute(
                "SELECT id FROM deferred_messages WHERE recipient = ? AND expires_at > ? AND "
                "lease_until <= ? ORDER BY id LIMIT ?", (recipient, at, at, _limit(limit)))]
            db.executemany("UPDATE deferred_messages SET lease_holder = ?, lease_until = ?, "
                           "fence = fence + 1 WHERE id = ?", [(holder, at + lease, i) for i in ids])
            return [db.execute("SELECT * FROM deferred_messages WHERE id = ?", (i,)).fetchone()
                    for i in ids]
        return [_deferred(row) for row in await self._c.write(job)]

    async def complete_deferred(self, claimed: Sequence[DeferredMessage]) -> int:
        return await self._c.write(lambda db: sum(
            db.execute("DELETE FROM deferred_messages WHERE id = ? AND fence = ?",
                       (m.id, m.fence)).rowcount for m in claimed))

    async def release_deferred(self, claimed: Sequence[DeferredMessage]) -> int:
        return await self._c.write(lambda db: sum(
            db.execute("UPDATE deferred_messages SET lease_holder = NULL, lease_until = 0 "
                       "WHERE id = ? AND fence = ?", (m.id, m.fence)).rowcount for m in claimed))

    async def remove_deferred(self, ids: Sequence[int]) -> int:
        return await self._c.write(lambda db: sum(
            db.execute("DELETE FROM deferred_messages WHERE id = ?", (i,)).rowcount
            for i in ids))

    async def deferred_recipients(self, now: float | None = None) -> list[str]:
        rows = await self._c.read("SELECT DISTINCT recipient FROM deferred_messages "
                                  "WHERE expires_at > ? ORDER BY recipient", (_now(now),))
        return [row[0] for row in rows]

    async def expire_deferred(self, now: float | None = None) -> list[DeferredMessage]:
        cutoff = _now(now)

        def job(db: sqlite3.Connection) -> Rows:
            rows = db.execute("SELECT * FROM deferred_messages WHERE expires_at <= ? "
                              "ORDER BY id", (cutoff,)).fetchall()
            db.execute("DELETE FROM deferred_messages WHERE expires_at <= ?", (cutoff,))
            return rows
        return [_deferred(row) for row in await self._c.write(job)]

    async def next_deferred_expiry(self) -> float | None:
        rows = await self._c.read("SELECT MIN(expires_at) FROM deferred_messages")
        return rows[0][0]  # type: ignore[no-any-return]

    # -- message history --------------------------------------------------------
    async def add_history(self, entry: HistoryEntry) -> bool:
        e = entry
        cur = await self._c.write(lambda db: db.execute(
            "INSERT OR IGNORE INTO message_history (conversation_id, message_key, sender,"
            " recipient, content_type, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (e.conversation_id, e.message_key, e.sender, e.recipient, e.content_type,
             bytes(e.body), e.created_at or time.time())))
        return cur.rowcount == 1

    async def history(self, conversation_id: str,
                      limit: int | None = None) -> list[HistoryEntry]:
        rows = await self._c.read(
            "SELECT * FROM message_history WHERE conversation_id = ? ORDER BY id LIMIT ?",
            (conversation_id, _limit(limit)))
        return [HistoryEntry(row["conversation_id"], row["message_key"], row["sender"],
                             row["recipient"], row["content_type"], bytes(row["body"]),
                             row["created_at"], row["id"]) for row in rows]

    # -- group chat -------------------------------------------------------------
    async def append_group_message(self, message: GroupMessage) -> int | None:
        m = message
        cur = await self._c.write(lambda db: db.execute(
            "INSERT OR IGNORE INTO group_messages (conference, message_key, sender,"
            " content_type, body, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (m.conference, m.message_key, m.sender, m.content_type, bytes(m.body), m.meta,
             m.created_at or time.time())))
        return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None

    async def group_messages(self, conference: str, after: int = 0,
                             limit: int | None = None) -> list[GroupMessage]:
        rows = await self._c.read(
            "SELECT * FROM group_messages WHERE conference = ? AND id > ? ORDER BY id LIMIT ?",
            (conference, after, _limit(limit)))
        return [_group_message(row) for row in rows]

    async def set_delivered(self, conference: str, member: str, message_id: int) -> None:
        await self._c.write(lambda db: db.execute(
            "INSERT INTO group_positions VALUES (?, ?, ?) ON CONFLICT (conference, member) "
            "DO UPDATE SET message_id = MAX(message_id, excluded.message_id)",
            (conference, member, message_id)))

    async def delivered(self, conference: str, member: str) -> int:
        rows = await self._c.read("SELECT message_id FROM group_positions WHERE "
                                  "conference = ? AND member = ?", (conference, member))
        return int(rows[0][0]) if rows else 0

    async def undelivered(self, conference: str, member: str,
                          limit: int | None = None) -> list[GroupMessage]:
        rows = await self._c.read(
            "SELECT * FROM group_messages WHERE conference = ? AND id > COALESCE("
            "(SELECT message_id FROM group_positions WHERE conference = ? AND member = ?), 0)"
            " ORDER BY id LIMIT ?", (conference, conference, member, _limit(limit)))
        return [_group_message(row) for row in rows]

    async def remove_group_log(self, conference: str) -> int:
        def job(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM group_positions WHERE conference = ?", (conference,))
            return db.execute("DELETE FROM group_messages WHERE conference = ?",
                              (conference,)).rowcount
        return await self._c.write(job)


def _insert_deferred(db: sqlite3.Connection, m: DeferredMessage) -> int:
    cur = db.execute(
        "INSERT INTO deferred_messages (recipient, sender, content_type, body, meta,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (m.recipient, m.sender, m.content_type, bytes(m.body), m.meta,
         m.created_at or time.time(), m.expires_at))
    return int(cur.lastrowid or 0)


def _deferred(row: sqlite3.Row) -> DeferredMessage:
    return DeferredMessage(
        recipient=row["recipient"], sender=row["sender"],
        content_type=row["content_type"], body=bytes(row["body"]),
        expires_at=row["expires_at"], created_at=row["created_at"], meta=row["meta"],
        id=row["id"], fence=row["fence"])


def _group_message(row: sqlite3.Row) -> GroupMessage:
    return GroupMessage(
        conference=row["conference"], sender=row["sender"],
        content_type=row["content_type"], body=bytes(row["body"]),
        message_key=row["message_key"], created_at=row["created_at"], meta=row["meta"],
        id=row["id"])


# -- files kept for offline users ------------------------------------------------------

class SqliteFiles(FileRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def create(self, now: float | None = None) -> int:
        at = _now(now)
        cur = await self._c.write(lambda db: db.execute(
            "INSERT INTO deferred_files (created_at, touched_at) VALUES (?, ?)", (at, at)))
        return int(cur.lastrowid or 0)

    async def put_chunk(self, file_id: int, seq: int, data: bytes,
                        now: float | None = None) -> None:
        at = _now(now)

        def job(db: sqlite3.Connection) -> None:
            if not db.execute("UPDATE deferred_files SET touched_at = ? WHERE id = ?",
                              (at, file_id)).rowcount:
                raise StoreError(f"store {self._c.path}: kept file {file_id} is gone")
            db.execute("INSERT INTO deferred_file_chunks VALUES (?, ?, ?)",
                       (file_id, seq, bytes(data)))
        await self._c.write(job)

    async def chunks(self, file_id: int, first: int = 0) -> AsyncIterator[bytes]:
        seq = first
        while True:
            rows = await self._c.read("SELECT data FROM deferred_file_chunks WHERE file_id = ?"
                                      " AND seq = ?", (file_id, seq))
            if not rows:
                return
            yield bytes(rows[0][0])
            seq += 1

    async def get(self, file_id: int) -> StoredFile | None:
        rows = await self._c.read(
            "SELECT f.id, f.item_id, f.touched_at, COUNT(c.seq), COALESCE(SUM(LENGTH(c.data)),"
            " 0) FROM deferred_files f LEFT JOIN deferred_file_chunks c ON c.file_id = f.id"
            " WHERE f.id = ? GROUP BY f.id", (file_id,))
        if not rows:
            return None
        r = rows[0]
        return StoredFile(r[0], int(r[4]), int(r[3]), r[1], r[2])

    async def ids(self) -> list[int]:
        return [r[0] for r in await self._c.read("SELECT id FROM deferred_files ORDER BY id")]

    async def keep(self, file_id: int, message: DeferredMessage) -> int:
        def job(db: sqlite3.Connection) -> int:
            item = _insert_deferred(db, message)
            if not db.execute("UPDATE deferred_files SET item_id = ? WHERE id = ? AND "
                              "item_id IS NULL", (item, file_id)).rowcount:
                raise StoreError(f"store {self._c.path}: kept file {file_id} is gone")
            return item
        return await self._c.write(job)

    async def delete(self, file_id: int) -> bool:
        cur = await self._c.write(lambda db: db.execute(
            "DELETE FROM deferred_files WHERE id = ? AND item_id IS NULL", (file_id,)))
        return cur.rowcount > 0

    async def sweep(self, idle_since: float) -> int:
        cur = await self._c.write(lambda db: db.execute(
            "DELETE FROM deferred_files WHERE item_id IS NULL AND touched_at < ?",
            (idle_since,)))
        return int(cur.rowcount)


# -- conferences ------------------------------------------------------------------------

class SqliteConferences(ConferenceRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def create(self, conference: Conference) -> None:
        def job(db: sqlite3.Connection) -> None:
            try:
                _transaction(db, lambda _: _insert_conference(db, conference))
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"conference {conference.uri} already exists") from exc
        await self._c.call(job)

    async def put(self, conference: Conference) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM conferences WHERE uri = ?", (conference.uri,))
            _insert_conference(db, conference)
        await self._c.write(job)

    async def get(self, uri: str) -> Conference | None:
        found = await self._c.call(lambda db: _conferences(
            db, "SELECT * FROM conferences WHERE uri = ?", (uri,)))
        return found[0] if found else None

    async def conferences(self, kind: ConferenceKind | None = None) -> list[Conference]:
        if kind is None:
            return await self._c.call(lambda db: _conferences(
                db, "SELECT * FROM conferences ORDER BY uri"))
        return await self._c.call(lambda db: _conferences(
            db, "SELECT * FROM conferences WHERE kind = ? ORDER BY uri", (kind.value,)))

    async def remove(self, uri: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM conferences WHERE uri = ?", (uri,)).rowcount > 0)

    async def set_subject(self, uri: str, subject: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "UPDATE conferences SET subject = ? WHERE uri = ?", (subject, uri)).rowcount > 0)

    async def set_participant(self, uri: str, participant: Participant) -> bool:
        def job(db: sqlite3.Connection) -> bool:
            if not db.execute("SELECT 1 FROM conferences WHERE uri = ?", (uri,)).fetchall():
                return False
            p = participant
            db.execute(
                "INSERT INTO conference_participants VALUES (?, ?, (SELECT COALESCE("
                "MAX(position) + 1, 0) FROM conference_participants WHERE conference = ?),"
                " ?, ?, ?) ON CONFLICT (conference, uri) DO UPDATE SET state = excluded.state,"
                " display_name = excluded.display_name, joined_at = excluded.joined_at",
                (uri, p.uri, uri, p.state.value, p.display_name, p.joined_at))
            return True
        return await self._c.write(job)

    async def remove_participant(self, uri: str, participant_uri: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM conference_participants WHERE conference = ? AND uri = ?",
            (uri, participant_uri)).rowcount > 0)

    async def set_expiry(self, uri: str, expires_at: float | None) -> bool:
        return await self._c.write(lambda db: db.execute(
            "UPDATE conferences SET expires_at = ? WHERE uri = ?",
            (expires_at, uri)).rowcount > 0)

    async def expire(self, now: float | None = None) -> list[Conference]:
        cutoff = _now(now)

        def job(db: sqlite3.Connection) -> list[Conference]:
            gone = _conferences(db, "SELECT * FROM conferences WHERE expires_at <= ? "
                                    "ORDER BY expires_at, uri", (cutoff,))
            db.execute("DELETE FROM conferences WHERE expires_at <= ?", (cutoff,))
            return gone
        return await self._c.write(job)

    async def next_expiry(self) -> float | None:
        rows = await self._c.read("SELECT MIN(expires_at) FROM conferences")
        return rows[0][0]  # type: ignore[no-any-return]

    async def claim_owner(self, uri: str, holder: str, lease: float,
                          now: float | None = None) -> int | None:
        at = _now(now)
        row = await self._c.write(lambda db: db.execute(
            _CLAIM_OWNER, (uri, holder, at + lease, at)).fetchone())
        return None if row is None else int(row[0])

    async def renew_owner(self, uri: str, holder: str, fence: int, lease: float,
                          now: float | None = None) -> bool:
        until = _now(now) + lease
        return await self._c.write(lambda db: db.execute(
            "UPDATE conference_owners SET lease_until = ? WHERE uri = ? AND holder = ? "
            "AND fence = ?", (until, uri, holder, fence)).rowcount > 0)

    async def release_owner(self, uri: str, fence: int) -> bool:
        return await self._c.write(lambda db: db.execute(
            "UPDATE conference_owners SET holder = '', lease_until = 0 WHERE uri = ? "
            "AND fence = ? AND holder != ''", (uri, fence)).rowcount > 0)

    async def owner(self, uri: str, now: float | None = None) -> tuple[str, int] | None:
        rows = await self._c.read("SELECT holder, fence FROM conference_owners WHERE uri = ? "
                                  "AND lease_until > ?", (uri, _now(now)))
        return (rows[0][0], int(rows[0][1])) if rows else None


# Takes a free, expired or own lease in one statement: the WHERE of the upsert keeps a
# live lease of another holder (then no row comes back). A new holder gets fence + 1.
_CLAIM_OWNER = """
INSERT INTO conference_owners (uri, holder, fence, lease_until) VALUES (?1, ?2, 1, ?3)
ON CONFLICT (uri) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until,
    fence = CASE WHEN conference_owners.holder = excluded.holder THEN conference_owners.fence
                 ELSE conference_owners.fence + 1 END
WHERE conference_owners.holder = excluded.holder OR conference_owners.lease_until <= ?4
RETURNING fence
"""


def _insert_conference(db: sqlite3.Connection, c: Conference) -> None:
    db.execute("INSERT INTO conferences VALUES (?, ?, ?, ?, ?, ?)",
               (c.uri, c.creator, c.kind.value, c.subject, c.created_at or time.time(),
                c.expires_at))
    db.executemany("INSERT INTO conference_admins VALUES (?, ?, ?)",
                   [(c.uri, i, a) for i, a in enumerate(c.admins)])
    db.executemany("INSERT INTO conference_participants VALUES (?, ?, ?, ?, ?, ?)",
                   [(c.uri, p.uri, i, p.state.value, p.display_name, p.joined_at)
                    for i, p in enumerate(c.participants)])


def _conferences(db: sqlite3.Connection, sql: str,
                 args: Sequence[object] = ()) -> list[Conference]:
    out = []
    for row in db.execute(sql, args).fetchall():
        uri = row["uri"]
        admins = db.execute("SELECT admin FROM conference_admins WHERE conference = ? "
                            "ORDER BY position", (uri,)).fetchall()
        participants = db.execute("SELECT * FROM conference_participants WHERE "
                                  "conference = ? ORDER BY position", (uri,)).fetchall()
        out.append(Conference(
            uri=uri, creator=row["creator"], kind=ConferenceKind(row["kind"]),
            subject=row["subject"], admins=tuple(a[0] for a in admins),
            participants=tuple(Participant(p["uri"], ParticipantState(p["state"]),
                                           p["display_name"], p["joined_at"])
                               for p in participants),
            created_at=row["created_at"], expires_at=row["expires_at"]))
    return out


# -- service data -----------------------------------------------------------------------

class SqliteServiceData(ServiceDataRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def get(self, owner: str, key: str) -> tuple[str, ...]:
        rows = await self._c.read("SELECT value FROM service_data WHERE owner = ? AND key = ?"
                                  " ORDER BY position", (owner, key))
        return tuple(row[0] for row in rows)

    async def put(self, owner: str, key: str, values: Sequence[str]) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM service_data WHERE owner = ? AND key = ?", (owner, key))
            db.executemany("INSERT INTO service_data VALUES (?, ?, ?, ?)",
                           [(owner, key, i, v) for i, v in enumerate(values)])
        await self._c.write(job)

    async def remove(self, owner: str, key: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM service_data WHERE owner = ? AND key = ?", (owner, key)).rowcount > 0)

    async def settings(self, owner: str) -> dict[str, tuple[str, ...]]:
        rows = await self._c.read("SELECT key, value FROM service_data WHERE owner = ? "
                                  "ORDER BY key, position", (owner,))
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(row[1])
        return {k: tuple(v) for k, v in out.items()}

    async def owners(self, key: str, value: str) -> list[str]:
        rows = await self._c.read("SELECT DISTINCT owner FROM service_data WHERE key = ? "
                                  "AND value = ? ORDER BY owner", (key, value))
        return [row[0] for row in rows]


# -- Digest nonce-counts ----------------------------------------------------------------

class SqliteNonces(NonceRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def advance(self, nonce: str, nc: int, expires_at: float) -> bool:
        return await self._c.write(lambda db: db.execute(
            "INSERT INTO nonce_counts VALUES (?, ?, ?) ON CONFLICT (nonce) DO UPDATE SET "
            "nc = excluded.nc WHERE excluded.nc > nonce_counts.nc",
            (nonce, nc, expires_at)).rowcount == 1)

    async def expire(self, now: float | None = None) -> int:
        cutoff = _now(now)
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM nonce_counts WHERE expires_at <= ?", (cutoff,)).rowcount)

    async def shared_secret(self, name: str) -> bytes:
        fresh = secrets.token_bytes(32)

        def get_or_make(db: sqlite3.Connection) -> bytes:
            db.execute("INSERT INTO shared_secrets VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                       (name, fresh))
            return bytes(db.execute("SELECT secret FROM shared_secrets WHERE name = ?",
                                    (name,)).fetchone()[0])
        return await self._c.write(get_or_make)

# -- call park orbits -------------------------------------------------------------------

class SqliteParking(ParkingRepository):
    """Claims run in one IMMEDIATE transaction (the write lock first), so the free
    orbit found is still free at the INSERT, also against other processes."""

    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def claim(self, lot: str, first: int, last: int, token: str, parker: str,
                    parked: str, holder: str = "",
                    now: float | None = None) -> ParkedCall | None:
        at = _now(now)

        def job(db: sqlite3.Connection) -> ParkedCall | None:
            taken = {row[0] for row in db.execute(
                "SELECT orbit FROM parked_calls WHERE lot = ? AND orbit BETWEEN ? AND ?",
                (lot, first, last))}
            orbit = next((o for o in range(first, last + 1) if o not in taken), None)
            if orbit is None:
                return None
            call = ParkedCall(lot, orbit, token, parker, parked, holder, at)
            db.execute("INSERT INTO parked_calls VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (lot, orbit, token, parker, parked, holder, at))
            return call
        return await self._c.write(job)

    async def get(self, lot: str, orbit: int) -> ParkedCall | None:
        rows = await self._c.read("SELECT * FROM parked_calls WHERE lot = ? AND orbit = ?",
                                  (lot, orbit))
        return _parked(rows[0]) if rows else None

    async def take(self, lot: str, orbit: int) -> ParkedCall | None:
        def job(db: sqlite3.Connection) -> ParkedCall | None:
            row = db.execute("DELETE FROM parked_calls WHERE lot = ? AND orbit = ? "
                             "RETURNING *", (lot, orbit)).fetchone()
            return _parked(row) if row is not None else None
        return await self._c.write(job)

    async def release(self, lot: str, orbit: int, token: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            "DELETE FROM parked_calls WHERE lot = ? AND orbit = ? AND token = ?",
            (lot, orbit, token)).rowcount > 0)

    async def parked(self, lot: str) -> list[ParkedCall]:
        rows = await self._c.read("SELECT * FROM parked_calls WHERE lot = ? ORDER BY orbit",
                                  (lot,))
        return [_parked(row) for row in rows]


def _parked(row: sqlite3.Row) -> ParkedCall:
    return ParkedCall(row["lot"], row["orbit"], row["token"], row["parker"], row["parked"],
                      row["holder"], row["parked_at"])


# -- reg event subscriptions ------------------------------------------------------------

_REG_KEY = "call_id = ? AND local_tag = ? AND remote_tag = ?"


class SqliteRegSubscriptions(RegSubscriptionRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def put(self, subscription: RegSubscription) -> None:
        s = subscription
        await self._c.write(lambda db: db.execute(
            "INSERT INTO reg_subscriptions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (call_id, local_tag, remote_tag) DO UPDATE SET aor = excluded.aor, "
            "event = excluded.event, remote_target = excluded.remote_target, "
            "local_target = excluded.local_target, "
            "route_set = excluded.route_set, remote_cseq = excluded.remote_cseq, "
            "expires_at = excluded.expires_at",
            (s.call_id, s.local_tag, s.remote_tag, s.aor, s.event, s.resource, s.local_uri,
             s.remote_uri, s.remote_target, s.local_target, json.dumps(list(s.route_set)),
             s.remote_cseq, s.cseq_base, s.version, s.expires_at)))

    async def get(self, call_id: str, local_tag: str, remote_tag: str,
                  now: float | None = None) -> RegSubscription | None:
        rows = await self._c.read(f"SELECT * FROM reg_subscriptions WHERE {_REG_KEY} "
                                  "AND expires_at > ?", (call_id, local_tag, remote_tag,
                                                         _now(now)))
        return _reg_subscription(rows[0]) if rows else None

    async def take(self, call_id: str, local_tag: str, remote_tag: str,
                   now: float | None = None) -> RegSubscription | None:
        cutoff = _now(now)
        rows = await self._c.write(lambda db: db.execute(
            f"UPDATE reg_subscriptions SET version = version + 1 WHERE {_REG_KEY} "
            "AND expires_at > ? RETURNING *", (call_id, local_tag, remote_tag, cutoff)
        ).fetchall())
        return _reg_subscription(rows[0], taken=True) if rows else None

    async def take_watching(self, aor: str, now: float | None = None) -> list[RegSubscription]:
        cutoff = _now(now)
        rows = await self._c.write(lambda db: db.execute(
            "UPDATE reg_subscriptions SET version = version + 1 WHERE aor = ? "
            "AND expires_at > ? RETURNING *", (aor, cutoff)).fetchall())
        return sorted((_reg_subscription(r, taken=True) for r in rows), key=lambda s: s.key)

    async def remove(self, call_id: str, local_tag: str, remote_tag: str) -> bool:
        return await self._c.write(lambda db: db.execute(
            f"DELETE FROM reg_subscriptions WHERE {_REG_KEY}",
            (call_id, local_tag, remote_tag)).rowcount > 0)

    async def expire(self, now: float | None = None) -> list[RegSubscription]:
        cutoff = _now(now)
        rows = await self._c.write(lambda db: db.execute(
            "DELETE FROM reg_subscriptions WHERE expires_at <= ? RETURNING *",
            (cutoff,)).fetchall())
        return sorted((_reg_subscription(r) for r in rows), key=lambda s: s.key)

    async def next_expiry(self) -> float | None:
        rows = await self._c.read("SELECT MIN(expires_at) FROM reg_subscriptions")
        return rows[0][0]  # type: ignore[no-any-return]


def _reg_subscription(row: sqlite3.Row, taken: bool = False) -> RegSubscription:
    """``taken``: the row after take's increment, so the version taken is one lower."""
    return RegSubscription(
        row["call_id"], row["local_tag"], row["remote_tag"], row["aor"], row["event"],
        row["resource"], row["local_uri"], row["remote_uri"], row["remote_target"],
        row["local_target"], tuple(json.loads(row["route_set"])), row["remote_cseq"],
        row["cseq_base"], row["version"] - (1 if taken else 0), row["expires_at"])


# -- failed-login counters --------------------------------------------------------------

class SqliteLogins(LoginRepository):
    def __init__(self, connection: _Connection) -> None:
        self._c = connection

    async def state(self, account: str, address: str, port: int,
                    since: float) -> LoginState:
        def job(db: sqlite3.Connection) -> LoginState:
            row = db.execute("SELECT failures, last_failure FROM login_accounts WHERE "
                             "account = ?", (account,)).fetchone()
            times = [r[0] for r in db.execute(
                "SELECT at FROM login_source_failures WHERE address = ? AND at > ? "
                "ORDER BY at", (address, since))]
            trusted = db.execute("SELECT at FROM login_trusted WHERE account = ? AND "
                                 "address = ? AND port = ?", (account, address, port)).fetchone()
            return LoginState(row[0] if row else 0, row[1] if row else 0.0, tuple(times),
                              trusted[0] if trusted else None)
        return await self._c.call(job)

    async def failed(self, account: str, address: str, port: int, now: float, *,
                     source_window: float, keep: float) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO login_accounts VALUES (?, 1, ?, ?) ON CONFLICT (account) "
                       "DO UPDATE SET failures = failures + 1, last_failure = excluded."
                       "last_failure, expires_at = excluded.expires_at",
                       (account, now, now + keep))
            db.execute("DELETE FROM login_trusted WHERE account = ? AND address = ? AND "
                       "port = ?", (account, address, port))
            db.execute("DELETE FROM login_source_failures WHERE address = ? AND at <= ?",
                       (address, now - source_window))
            db.execute("INSERT INTO login_source_failures VALUES (?, ?, ?)",
                       (address, now, now + source_window))
        await self._c.write(job)

    async def succeeded(self, account: str, address: str, port: int, now: float, *,
                        reset_account: bool, keep: float) -> None:
        def job(db: sqlite3.Connection) -> None:
            if reset_account:
                db.execute("DELETE FROM login_accounts WHERE account = ?", (account,))
            db.execute("INSERT INTO login_trusted VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                       "(account, address, port) DO UPDATE SET at = excluded.at, "
                       "expires_at = excluded.expires_at",
                       (account, address, port, now, now + keep))
        await self._c.write(job)

    async def expire(self, now: float | None = None) -> int:
        cutoff = _now(now)

        def job(db: sqlite3.Connection) -> int:
            return sum(db.execute(f"DELETE FROM {table} WHERE expires_at <= ?",
                                  (cutoff,)).rowcount
                       for table in ("login_accounts", "login_source_failures",
                                     "login_trusted"))
        return await self._c.write(job)
