"""SQLite back end: the embedded default store (one file, WAL mode)."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .base import AlreadyExists, Store, StoreError
from .models import (
    Binding, Credential, DeferredMessage, Group, HistoryEntry, PcscfRegistration, Psi, PsiKind,
    PublicIdentity, RegistrationState, ScscfAssignment, ServiceProfile, Subscriber,
)

__all__ = ["DB_FILENAME", "MIGRATIONS", "SqliteStore"]

log = logging.getLogger(__name__)

DB_FILENAME = "imsbox.sqlite3"

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
)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class SqliteStore(Store):
    """Store in one SQLite file (``:memory:`` works for throw-away use).

    One connection guarded by a lock, so the object may be shared by threads.
    synchronous=FULL because accepted messages must survive a power cut too.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")  # other processes (CLI vs serve)
        self._migrate()

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> SqliteStore:
        """The store file of a data directory (created when missing)."""
        return cls(Path(data_dir) / DB_FILENAME)

    # -- plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for version, script in MIGRATIONS:
                if version in done:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                           (version, time.time()))
                log.info("store %s: applied schema migration %d", self.path, version)
            newest = max(done, default=0)
            if newest > MIGRATIONS[-1][0]:
                raise StoreError(f"store {self.path} has schema version {newest}, "
                                 f"newer than this imsbox ({MIGRATIONS[-1][0]})")

    def schema_version(self) -> int:
        return self._query("SELECT MAX(version) FROM schema_migrations")[0][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- subscribers ----------------------------------------------------------
    def add_subscriber(self, subscriber: Subscriber,
                       identities: Sequence[PublicIdentity]) -> None:
        try:
            with self._tx() as db:
                db.execute("INSERT INTO subscribers VALUES (?, ?, ?)",
                           (subscriber.private_id, subscriber.msisdn,
                            subscriber.created_at or time.time()))
                db.executemany(
                    "INSERT INTO credentials VALUES (?, ?, ?, ?, ?)",
                    [(subscriber.private_id, c.username, c.realm, c.algorithm, c.ha1)
                     for c in subscriber.credentials])
                db.executemany(
                    "INSERT INTO public_identities VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(p.uri, subscriber.private_id, p.irs_id, p.service_profile,
                      int(p.barred), int(p.default), i) for i, p in enumerate(identities)])
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(_taken(self, subscriber, identities)) from exc

    def get_subscriber(self, private_id: str) -> Subscriber | None:
        rows = self._query("SELECT * FROM subscribers WHERE private_id = ?", (private_id,))
        return self._subscriber(rows[0]) if rows else None

    def list_subscribers(self) -> list[Subscriber]:
        rows = self._query("SELECT * FROM subscribers ORDER BY private_id")
        return [self._subscriber(row) for row in rows]

    def _subscriber(self, row: sqlite3.Row) -> Subscriber:
        creds = self._query(
            "SELECT username, realm, algorithm, ha1 FROM credentials WHERE private_id = ? "
            "ORDER BY rowid", (row["private_id"],))
        return Subscriber(row["private_id"], tuple(Credential(*c) for c in creds),
                          row["msisdn"], row["created_at"])

    def remove_subscriber(self, private_id: str) -> bool:
        with self._tx() as db:
            uris = [r[0] for r in db.execute(
                "SELECT uri FROM public_identities WHERE private_id = ?", (private_id,))]
            db.executemany("DELETE FROM bindings WHERE aor = ?", [(u,) for u in uris])
            cur = db.execute("DELETE FROM subscribers WHERE private_id = ?", (private_id,))
            return cur.rowcount > 0

    def get_public_identity(self, uri: str) -> PublicIdentity | None:
        rows = self._query("SELECT * FROM public_identities WHERE uri = ?", (uri,))
        return _identity(rows[0]) if rows else None

    def public_identities(self, private_id: str) -> list[PublicIdentity]:
        rows = self._query("SELECT * FROM public_identities WHERE private_id = ? "
                           "ORDER BY irs_id, is_default DESC, position", (private_id,))
        return [_identity(row) for row in rows]

    def implicit_set(self, uri: str) -> list[PublicIdentity]:
        rows = self._query(
            "SELECT * FROM public_identities WHERE irs_id = "
            "(SELECT irs_id FROM public_identities WHERE uri = ?) "
            "ORDER BY is_default DESC, position", (uri,))
        return [_identity(row) for row in rows]

    # -- service profiles -----------------------------------------------------
    def put_service_profile(self, profile: ServiceProfile) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO service_profiles VALUES (?)", (profile.name,))
            db.execute("DELETE FROM ifcs WHERE profile = ?", (profile.name,))
            db.executemany("INSERT INTO ifcs VALUES (?, ?, ?)",
                           [(profile.name, i, doc) for i, doc in enumerate(profile.ifcs)])

    def get_service_profile(self, name: str) -> ServiceProfile | None:
        if not self._query("SELECT 1 FROM service_profiles WHERE name = ?", (name,)):
            return None
        docs = self._query("SELECT document FROM ifcs WHERE profile = ? ORDER BY position",
                           (name,))
        return ServiceProfile(name, tuple(row[0] for row in docs))

    # -- PSIs -----------------------------------------------------------------
    def put_psi(self, psi: Psi) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO psis VALUES (?, ?, ?)",
                       (psi.pattern, psi.kind.value, psi.as_uri))

    def get_psi(self, pattern: str) -> Psi | None:
        rows = self._query("SELECT * FROM psis WHERE pattern = ?", (pattern,))
        return _psi(rows[0]) if rows else None

    def list_psis(self, kind: PsiKind | None = None) -> list[Psi]:
        if kind is None:
            rows = self._query("SELECT * FROM psis ORDER BY pattern")
        else:
            rows = self._query("SELECT * FROM psis WHERE kind = ? ORDER BY pattern",
                               (kind.value,))
        return [_psi(row) for row in rows]

    def remove_psi(self, pattern: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM psis WHERE pattern = ?", (pattern,)).rowcount > 0

    # -- groups ---------------------------------------------------------------
    def put_group(self, group: Group) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?)", (group.uri, group.name))
            db.execute("DELETE FROM group_members WHERE group_uri = ?", (group.uri,))
            db.executemany("INSERT INTO group_members VALUES (?, ?, ?)",
                           [(group.uri, i, m) for i, m in enumerate(group.members)])

    def get_group(self, uri: str) -> Group | None:
        rows = self._query("SELECT * FROM groups WHERE uri = ?", (uri,))
        return self._group(rows[0]) if rows else None

    def list_groups(self) -> list[Group]:
        return [self._group(row) for row in self._query("SELECT * FROM groups ORDER BY uri")]

    def _group(self, row: sqlite3.Row) -> Group:
        members = self._query("SELECT member FROM group_members WHERE group_uri = ? "
                              "ORDER BY position", (row["uri"],))
        return Group(row["uri"], tuple(m[0] for m in members), row["name"])

    def remove_group(self, uri: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM groups WHERE uri = ?", (uri,)).rowcount > 0

    # -- S-CSCF assignment ----------------------------------------------------
    def get_assignment(self, private_id: str) -> ScscfAssignment | None:
        rows = self._query("SELECT * FROM scscf_assignments WHERE private_id = ?",
                           (private_id,))
        if not rows:
            return None
        row = rows[0]
        return ScscfAssignment(row["private_id"], row["server_name"],
                               RegistrationState(row["state"]))

    def set_assignment(self, assignment: ScscfAssignment) -> None:
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO scscf_assignments VALUES (?, ?, ?)",
                           (assignment.private_id, assignment.server_name,
                            assignment.state.value))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"no subscriber {assignment.private_id!r}") from exc

    # -- registrations --------------------------------------------------------
    def save_binding(self, aor: str, binding: Binding) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (aor, binding.key, binding.contact, binding.expires_at, binding.q,
                 binding.instance_id, binding.reg_id, binding.params,
                 json.dumps(list(binding.path)), binding.call_id, binding.cseq,
                 binding.flow, time.time()))

    def remove_binding(self, aor: str, key: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM bindings WHERE aor = ? AND binding_key = ?",
                             (aor, key))
            return cur.rowcount > 0

    def remove_bindings(self, aor: str) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM bindings WHERE aor = ?", (aor,)).rowcount

    def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        rows = self._query(
            "SELECT * FROM bindings WHERE aor = ? AND expires_at > ? "
            "ORDER BY COALESCE(q, 1.0) DESC, updated_at DESC, rowid DESC",
            (aor, _now(now)))
        return [_binding(row) for row in rows]

    def registered_aors(self, now: float | None = None) -> list[str]:
        rows = self._query("SELECT DISTINCT aor FROM bindings WHERE expires_at > ? "
                           "ORDER BY aor", (_now(now),))
        return [row[0] for row in rows]

    def expire_bindings(self, now: float | None = None) -> list[tuple[str, Binding]]:
        cutoff = _now(now)
        with self._tx() as db:
            rows = db.execute("SELECT * FROM bindings WHERE expires_at <= ?",
                              (cutoff,)).fetchall()
            db.execute("DELETE FROM bindings WHERE expires_at <= ?", (cutoff,))
        return [(row["aor"], _binding(row)) for row in rows]

    def next_binding_expiry(self) -> float | None:
        return self._query("SELECT MIN(expires_at) FROM bindings")[0][0]

    # -- P-CSCF registrations ---------------------------------------------------
    def save_pcscf_registration(self, registration: PcscfRegistration) -> None:
        r = registration
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO pcscf_registrations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (r.node, r.key, r.contact, r.flow, json.dumps(list(r.public_ids)),
                 json.dumps(list(r.service_route)), r.expires_at, time.time()))

    def remove_pcscf_registration(self, node: str, key: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM pcscf_registrations WHERE node = ? AND "
                              "contact_key = ?", (node, key)).rowcount > 0

    def pcscf_registrations(self, node: str,
                            now: float | None = None) -> list[PcscfRegistration]:
        rows = self._query("SELECT * FROM pcscf_registrations WHERE node = ? AND "
                           "expires_at > ? ORDER BY updated_at, rowid", (node, _now(now)))
        return [PcscfRegistration(
            node=row["node"], key=row["contact_key"], contact=row["contact"],
            flow=row["flow"], public_ids=tuple(json.loads(row["public_ids"])),
            service_route=tuple(json.loads(row["service_route"])),
            expires_at=row["expires_at"]) for row in rows]

    def expire_pcscf_registrations(self, now: float | None = None) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM pcscf_registrations WHERE expires_at <= ?",
                              (_now(now),)).rowcount

    # -- deferred messages ----------------------------------------------------
    def defer_message(self, message: DeferredMessage) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO deferred_messages (recipient, sender, content_type, body, meta,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message.recipient, message.sender, message.content_type,
                 bytes(message.body), message.meta, message.created_at or time.time(),
                 message.expires_at))
            return int(cur.lastrowid or 0)

    def deferred_messages(self, recipient: str, now: float | None = None,
                          limit: int | None = None) -> list[DeferredMessage]:
        rows = self._query(
            "SELECT * FROM deferred_messages WHERE recipient = ? AND expires_at > ? "
            "ORDER BY id LIMIT ?", (recipient, _now(now), -1 if limit is None else limit))
        return [_deferred(row) for row in rows]

    def remove_deferred(self, ids: Sequence[int]) -> int:
        with self._tx() as db:
            return sum(db.execute("DELETE FROM deferred_messages WHERE id = ?",
                                  (i,)).rowcount for i in ids)

    def deferred_recipients(self, now: float | None = None) -> list[str]:
        rows = self._query("SELECT DISTINCT recipient FROM deferred_messages "
                           "WHERE expires_at > ? ORDER BY recipient", (_now(now),))
        return [row[0] for row in rows]

    def expire_deferred(self, now: float | None = None) -> list[DeferredMessage]:
        cutoff = _now(now)
        with self._tx() as db:
            rows = db.execute("SELECT * FROM deferred_messages WHERE expires_at <= ? "
                              "ORDER BY id", (cutoff,)).fetchall()
            db.execute("DELETE FROM deferred_messages WHERE expires_at <= ?", (cutoff,))
        return [_deferred(row) for row in rows]

    def next_deferred_expiry(self) -> float | None:
        return self._query("SELECT MIN(expires_at) FROM deferred_messages")[0][0]

    # -- message history --------------------------------------------------------
    def add_history(self, entry: HistoryEntry) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO message_history (conversation_id, message_key, sender,"
                " recipient, content_type, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (entry.conversation_id, entry.message_key, entry.sender, entry.recipient,
                 entry.content_type, bytes(entry.body), entry.created_at or time.time()))
            return cur.rowcount == 1

    def history(self, conversation_id: str, limit: int | None = None) -> list[HistoryEntry]:
        rows = self._query(
            "SELECT * FROM message_history WHERE conversation_id = ? ORDER BY id LIMIT ?",
            (conversation_id, -1 if limit is None else limit))
        return [HistoryEntry(row["conversation_id"], row["message_key"], row["sender"],
                             row["recipient"], row["content_type"], bytes(row["body"]),
                             row["created_at"], row["id"]) for row in rows]


def _taken(store: SqliteStore, subscriber: Subscriber,
           identities: Sequence[PublicIdentity]) -> str:
    """Name the key that made an insert fail, for a useful error message."""
    if store.get_subscriber(subscriber.private_id) is not None:
        return f"subscriber {subscriber.private_id} already exists"
    for identity in identities:
        if store.get_public_identity(identity.uri) is not None:
            return f"public identity {identity.uri} is already in use"
    if subscriber.msisdn:
        return f"MSISDN {subscriber.msisdn} is already in use"
    return f"subscriber {subscriber.private_id} conflicts with an existing record"


def _identity(row: sqlite3.Row) -> PublicIdentity:
    return PublicIdentity(row["uri"], row["private_id"], row["irs_id"],
                          row["service_profile"], bool(row["barred"]),
                          bool(row["is_default"]))


def _psi(row: sqlite3.Row) -> Psi:
    return Psi(row["pattern"], row["as_uri"], PsiKind(row["kind"]))


def _binding(row: sqlite3.Row) -> Binding:
    return Binding(
        contact=row["contact"], expires_at=row["expires_at"], q=row["q"],
        instance_id=row["instance_id"], reg_id=row["reg_id"], params=row["params"],
        path=tuple(json.loads(row["path"])), call_id=row["call_id"], cseq=row["cseq"],
        flow=row["flow"])


def _deferred(row: sqlite3.Row) -> DeferredMessage:
    return DeferredMessage(
        recipient=row["recipient"], sender=row["sender"],
        content_type=row["content_type"], body=bytes(row["body"]),
        expires_at=row["expires_at"], created_at=row["created_at"], meta=row["meta"],
        id=row["id"])
