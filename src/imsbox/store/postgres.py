"""PostgreSQL back end: the shared durable store of a scaled-out network.

asyncpg speaks the wire protocol on the event loop itself (no thread, no
blocking call) through a pool of connections, so several tasks' queries run
at once. Every write that touches more than one row runs in a transaction;
the server commits it before the await returns ("2xx means stored").

Several imsbox processes, on several machines, open the same database:
migrations take an advisory lock so only one applies them; deferred messages
are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and a fencing token so
two ASs never deliver one item twice. The server going away shows as
:class:`StoreUnavailable` (nodes answer 503 with Retry-After) and the pool
reconnects by itself when it is back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

import asyncpg

from .base import (
    AlreadyExists, ConferenceRepository, FileRepository, FlowRepository, LoginRepository,
    MessageRepository, NonceRepository, ParkingRepository, RegSubscriptionRepository,
    RegistrationRepository, ServiceDataRepository, Store, StoreError, StoreUnavailable,
    SubscriberRepository,
)
from .models import (
    Binding, Conference, ConferenceKind, Credential, DeferredMessage, Group, GroupMessage,
    HistoryEntry, LoginState, ParkedCall, Participant, ParticipantState, PcscfRegistration, Psi,
    PsiKind, PublicIdentity, RegistrationState, RegSubscription, ScscfAssignment, ServiceProfile,
    StoredFile, Subscriber,
)

__all__ = ["MIGRATIONS", "PostgresStore"]

Row = Any  # asyncpg.Record: untyped
Conn = Any  # asyncpg.Connection

MIGRATION_LOCK = 0x1A5B0C  # pg_advisory_xact_lock key: one migrator at a time

# Append only, like the SQLite back end's; recorded in schema_migrations.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
    CREATE TABLE subscribers (
        private_id TEXT PRIMARY KEY,
        msisdn TEXT UNIQUE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE credentials (
        private_id TEXT NOT NULL REFERENCES subscribers(private_id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
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
        barred BOOLEAN NOT NULL DEFAULT FALSE,
        is_default BOOLEAN NOT NULL DEFAULT FALSE,
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
    CREATE TABLE psis (pattern TEXT PRIMARY KEY, kind TEXT NOT NULL, as_uri TEXT NOT NULL);
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
    CREATE SEQUENCE refresh_seq;
    CREATE TABLE bindings (
        aor TEXT NOT NULL,
        binding_key TEXT NOT NULL,
        contact TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        q DOUBLE PRECISION,
        instance_id TEXT,
        reg_id INTEGER,
        params TEXT NOT NULL,
        path TEXT[] NOT NULL,
        call_id TEXT NOT NULL,
        cseq BIGINT NOT NULL,
        flow TEXT NOT NULL,
        refreshed BIGINT NOT NULL,
        PRIMARY KEY (aor, binding_key)
    );
    CREATE INDEX bindings_expiry ON bindings(expires_at);
    CREATE TABLE pcscf_registrations (
        node TEXT NOT NULL,
        contact_key TEXT NOT NULL,
        contact TEXT NOT NULL,
        flow TEXT NOT NULL,
        public_ids TEXT[] NOT NULL,
        service_route TEXT[] NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        refreshed BIGINT NOT NULL,
        PRIMARY KEY (node, contact_key)
    );
    CREATE INDEX pcscf_registrations_expiry ON pcscf_registrations(expires_at);
    CREATE SEQUENCE lease_fence;
    CREATE TABLE deferred_messages (
        id BIGSERIAL PRIMARY KEY,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BYTEA NOT NULL,
        meta TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        lease_holder TEXT,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        fence BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX deferred_recipient ON deferred_messages(recipient, id);
    CREATE INDEX deferred_expiry ON deferred_messages(expires_at);
    CREATE TABLE message_history (
        id BIGSERIAL PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        message_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (conversation_id, message_key)
    );
    CREATE TABLE conferences (
        uri TEXT PRIMARY KEY,
        creator TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION
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
        joined_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (conference, uri)
    );
    CREATE TABLE group_messages (
        id BIGSERIAL PRIMARY KEY,
        conference TEXT NOT NULL,
        message_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BYTEA NOT NULL,
        meta TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX group_messages_conference ON group_messages(conference, id);
    CREATE UNIQUE INDEX group_messages_key ON group_messages(conference, message_key)
        WHERE message_key != '';
    CREATE TABLE group_positions (
        conference TEXT NOT NULL,
        member TEXT NOT NULL,
        message_id BIGINT NOT NULL,
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
    CREATE TABLE nonce_counts (
        nonce TEXT PRIMARY KEY,
        nc BIGINT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    """),
    (2, """
    CREATE TABLE shared_secrets (
        name TEXT PRIMARY KEY,
        secret BYTEA NOT NULL
    );
    """),
    (3, """
    CREATE TABLE parked_calls (
        lot TEXT NOT NULL,
        orbit INTEGER NOT NULL,
        token TEXT NOT NULL,
        parker TEXT NOT NULL,
        parked TEXT NOT NULL,
        holder TEXT NOT NULL DEFAULT '',
        parked_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, orbit)
    );
    """),
    (4, """
    CREATE TABLE conference_owners (
        uri TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        fence BIGINT NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL
    );
    """),
    (5, """
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
        route_set TEXT[] NOT NULL,
        remote_cseq BIGINT NOT NULL,
        cseq_base BIGINT NOT NULL,
        version BIGINT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (call_id, local_tag, remote_tag)
    );
    CREATE INDEX reg_subscriptions_aor ON reg_subscriptions(aor);
    CREATE INDEX reg_subscriptions_expiry ON reg_subscriptions(expires_at);
    CREATE TABLE login_accounts (
        account TEXT PRIMARY KEY,
        failures BIGINT NOT NULL,
        last_failure DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE login_source_failures (
        address TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX login_source_failures_address ON login_source_failures(address, at);
    CREATE TABLE login_trusted (
        account TEXT NOT NULL,
        address TEXT NOT NULL,
        port INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (account, address, port)
    );
    """),
    # Files kept for offline users (store.files), as in the SQLite schema. The chunks
    # are stored EXTERNAL: out of line, never compressed (files mostly are already;
    # trying costs CPU on every chunk for nothing).
    (6, """
    CREATE TABLE deferred_files (
        id BIGSERIAL PRIMARY KEY,
        item_id BIGINT UNIQUE REFERENCES deferred_messages(id) ON DELETE CASCADE,
        created_at DOUBLE PRECISION NOT NULL,
        touched_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX deferred_files_idle ON deferred_files(touched_at) WHERE item_id IS NULL;
    CREATE TABLE deferred_file_chunks (
        file_id BIGINT NOT NULL REFERENCES deferred_files(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (file_id, seq)
    );
    ALTER TABLE deferred_file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    """),
)

# Errors that mean "the server is not there right now", not "the query is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class _Pool:
    """The asyncpg pool, every error turned into StoreError / StoreUnavailable."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._sizes = (min_size, max_size)
        self._pool: Any = None
        self._closed = False

    @property
    def where(self) -> str:
        """The URL without a password, for messages."""
        head, _, tail = self.url.rpartition("@")
        if not head:
            return self.url
        scheme, _, user = head.partition("://")
        return f"{scheme}://{user.partition(':')[0]}@{tail}"

    async def open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self._sizes[0], max_size=self._sizes[1],
                command_timeout=10, timeout=5)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"cannot reach PostgreSQL store {self.where}: {exc}; check that PostgreSQL "
                "runs there and accepts TCP connections, or fix the URL (--store or [store] "
                "url in imsbox.toml)") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(
                f"cannot open PostgreSQL store {self.where}: {exc}; check the user, password "
                "and database in the URL (--store or [store] url in imsbox.toml)") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await pool.close()
            except _UNAVAILABLE:
                pool.terminate()

    @asynccontextmanager
    async def connection(self, transaction: bool = False) -> AsyncIterator[Conn]:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")
        if self._pool is None:
            raise StoreError(f"store {self.where} is not open")
        try:
            async with self._pool.acquire() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except AlreadyExists:
            raise
        except StoreError:
            raise
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL store {self.where} unavailable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"store {self.where}: {exc}") from exc

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        async with self.connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: object) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: object) -> int:
        """Rows affected (the count of asyncpg's status line)."""
        async with self.connection() as conn:
            return _count(await conn.execute(sql, *args))


def _count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _migrate(conn: Conn, where: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                           "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        newest = max(done, default=0)
        if newest > MIGRATIONS[-1][0]:
            raise StoreError(f"store {where} has schema version {newest}, "
                             f"newer than this imsbox ({MIGRATIONS[-1][0]})")
        for version, script in MIGRATIONS:
            if version not in done:
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                   version, time.time())


# -- the store ------------------------------------------------------------------------

class PostgresStore(Store):
    """Store in a PostgreSQL database, ``postgresql://user[:pw]@host[:port]/db``."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._pool = _Pool(url, max_size=pool_size)
        self.subscribers = PgSubscribers(self._pool)
        self.registrations = PgRegistrations(self._pool)
        self.flows = PgFlows(self._pool)
        self.messages = PgMessages(self._pool)
        self.files = PgFiles(self._pool)
        self.conferences = PgConferences(self._pool)
        self.service_data = PgServiceData(self._pool)
        self.nonces = PgNonces(self._pool)
        self.parking = PgParking(self._pool)
        self.reg_subscriptions = PgRegSubscriptions(self._pool)
        self.logins = PgLogins(self._pool)

    async def open(self) -> Self:
        await self._pool.open()
        async with self._pool.connection() as conn:
            await _migrate(conn, self._pool.where)
        return self

    async def close(self) -> None:
        await self._pool.close()

    async def schema_version(self) -> int:
        return int(await self._pool.fetchval("SELECT MAX(version) FROM schema_migrations"))


# -- subscribers / HSS data -------------------------------------------------------------

class PgSubscribers(SubscriberRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def add_subscriber(self, subscriber: Subscriber,
                             identities: Sequence[PublicIdentity]) -> None:
        s = subscriber
        try:
            async with self._p.connection(transaction=True) as conn:
                await conn.execute("INSERT INTO subscribers VALUES ($1, $2, $3)",
                                   s.private_id, s.msisdn, s.created_at or time.time())
                await conn.executemany(
                    "INSERT INTO credentials VALUES ($1, $2, $3, $4, $5, $6)",
                    [(s.private_id, i, c.username, c.realm, c.algorithm, c.ha1)
                     for i, c in enumerate(s.credentials)])
                await conn.executemany(
                    "INSERT INTO public_identities VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    [(p.uri, s.private_id, p.irs_id, p.service_profile, p.barred, p.default, i)
                     for i, p in enumerate(identities)])
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            raise AlreadyExists(await self._taken(s, identities)) from exc

    async def _taken(self, s: Subscriber, identities: Sequence[PublicIdentity]) -> str:
        """Name the key that made an insert fail, for a useful error message."""
        if await self._p.fetch("SELECT 1 FROM subscribers WHERE private_id = $1", s.private_id):
            return f"subscriber {s.private_id} already exists"
        for identity in identities:
            if await self._p.fetch("SELECT 1 FROM public_identities WHERE uri = $1",
                                   identity.uri):
                return f"public identity {identity.uri} is already in use"
        if s.msisdn:
            return f"MSISDN {s.msisdn} is already in use"
        return f"subscriber {s.private_id} conflicts with an existing record"

    async def _subscribers(self, where: str, *args: object) -> list[Subscriber]:
        async with self._p.connection() as conn:
            rows = await conn.fetch(f"SELECT * FROM subscribers {where}", *args)
            creds = await conn.fetch(
                "SELECT * FROM credentials WHERE private_id = ANY($1::text[]) ORDER BY position",
                [r["private_id"] for r in rows])
        by_id: dict[str, list[Credential]] = {}
        for c in creds:
            by_id.setdefault(c["private_id"], []).append(
                Credential(c["username"], c["realm"], c["algorithm"], c["ha1"]))
        return [Subscriber(r["private_id"], tuple(by_id.get(r["private_id"], ())),
                           r["msisdn"], r["created_at"]) for r in rows]

    async def get_subscriber(self, private_id: str) -> Subscriber | None:
        # one round trip: the HSS asks this on every request it serves
        rows = await self._p.fetch(
            "SELECT s.msisdn, s.created_at, c.username, c.realm, c.algorithm, c.ha1 "
            "FROM subscribers s LEFT JOIN credentials c ON c.private_id = s.private_id "
            "WHERE s.private_id = $1 ORDER BY c.position", private_id)
        if not rows:
            return None
        credentials = tuple(Credential(r["username"], r["realm"], r["algorithm"], r["ha1"])
                            for r in rows if r["username"] is not None)
        return Subscriber(private_id, credentials, rows[0]["msisdn"], rows[0]["created_at"])

    async def list_subscribers(self) -> list[Subscriber]:
        return await self._subscribers("ORDER BY private_id")

    async def remove_subscriber(self, private_id: str) -> bool:
        async with self._p.connection(transaction=True) as conn:
            uris = [r[0] for r in await conn.fetch(
                "SELECT uri FROM public_identities WHERE private_id = $1", private_id)]
            await conn.execute("DELETE FROM bindings WHERE aor = ANY($1::text[])", uris)
            await conn.execute("DELETE FROM service_data WHERE owner = ANY($1::text[])", uris)
            return _count(await conn.execute(
                "DELETE FROM subscribers WHERE private_id = $1", private_id)) > 0

    async def get_public_identity(self, uri: str) -> PublicIdentity | None:
        rows = await self._p.fetch("SELECT * FROM public_identities WHERE uri = $1", uri)
        return _identity(rows[0]) if rows else None

    async def public_identities(self, private_id: str) -> list[PublicIdentity]:
        rows = await self._p.fetch("SELECT * FROM public_identities WHERE private_id = $1 "
                                   "ORDER BY irs_id, is_default DESC, position", private_id)
        return [_identity(row) for row in rows]

    async def implicit_set(self, uri: str) -> list[PublicIdentity]:
        rows = await self._p.fetch(
            "SELECT * FROM public_identities WHERE irs_id = "
            "(SELECT irs_id FROM public_identities WHERE uri = $1) "
            "ORDER BY is_default DESC, position", uri)
        return [_identity(row) for row in rows]

    async def put_service_profile(self, profile: ServiceProfile) -> None:
        async with self._p.connection(transaction=True) as conn:
            await conn.execute("INSERT INTO service_profiles VALUES ($1) ON CONFLICT DO NOTHING",
                               profile.name)
            # one writer of a profile at a time (every instance writes the configured
            # iFCs at start-up): the next one's DELETE then sees this one's rows
            await conn.execute("SELECT 1 FROM service_profiles WHERE name = $1 FOR UPDATE",
                               profile.name)
            await conn.execute("DELETE FROM ifcs WHERE profile = $1", profile.name)
            await conn.executemany("INSERT INTO ifcs VALUES ($1, $2, $3)",
                                   [(profile.name, i, d) for i, d in enumerate(profile.ifcs)])

    async def get_service_profile(self, name: str) -> ServiceProfile | None:
        # one round trip: the HSS asks this on every request it serves
        rows = await self._p.fetch(
            "SELECT i.document FROM service_profiles p LEFT JOIN ifcs i ON i.profile = p.name "
            "WHERE p.name = $1 ORDER BY i.position", name)
        if not rows:
            return None
        return ServiceProfile(name, tuple(r[0] for r in rows if r[0] is not None))

    async def put_psi(self, psi: Psi) -> None:
        await self._p.execute(
            "INSERT INTO psis VALUES ($1, $2, $3) ON CONFLICT (pattern) DO UPDATE SET "
            "kind = excluded.kind, as_uri = excluded.as_uri",
            psi.pattern, psi.kind.value, psi.as_uri)

    async def get_psi(self, pattern: str) -> Psi | None:
        rows = await self._p.fetch("SELECT * FROM psis WHERE pattern = $1", pattern)
        return _psi(rows[0]) if rows else None

    async def list_psis(self, kind: PsiKind | None = None) -> list[Psi]:
        if kind is None:
            rows = await self._p.fetch("SELECT * FROM psis ORDER BY pattern")
        else:
            rows = await self._p.fetch("SELECT * FROM psis WHERE kind = $1 ORDER BY pattern",
                                       kind.value)
        return [_psi(row) for row in rows]

    async def remove_psi(self, pattern: str) -> bool:
        return await self._p.execute("DELETE FROM psis WHERE pattern = $1", pattern) > 0

    async def put_group(self, group: Group) -> None:
        async with self._p.connection(transaction=True) as conn:
            await conn.execute("INSERT INTO groups VALUES ($1, $2) ON CONFLICT (uri) DO UPDATE "
                               "SET name = excluded.name", group.uri, group.name)
            await conn.execute("DELETE FROM group_members WHERE group_uri = $1", group.uri)
            await conn.executemany("INSERT INTO group_members VALUES ($1, $2, $3)",
                                   [(group.uri, i, m) for i, m in enumerate(group.members)])

    async def _groups(self, where: str, *args: object) -> list[Group]:
        async with self._p.connection() as conn:
            rows = await conn.fetch(f"SELECT * FROM groups {where}", *args)
            members = await conn.fetch(
                "SELECT * FROM group_members WHERE group_uri = ANY($1::text[]) ORDER BY position",
                [r["uri"] for r in rows])
        by_uri: dict[str, list[str]] = {}
        for m in members:
            by_uri.setdefault(m["group_uri"], []).append(m["member"])
        return [Group(r["uri"], tuple(by_uri.get(r["uri"], ())), r["name"]) for r in rows]

    async def get_group(self, uri: str) -> Group | None:
        found = await self._groups("WHERE uri = $1", uri)
        return found[0] if found else None

    async def list_groups(self) -> list[Group]:
        return await self._groups("ORDER BY uri")

    async def remove_group(self, uri: str) -> bool:
        return await self._p.execute("DELETE FROM groups WHERE uri = $1", uri) > 0

    async def get_assignment(self, private_id: str) -> ScscfAssignment | None:
        rows = await self._p.fetch("SELECT * FROM scscf_assignments WHERE private_id = $1",
                                   private_id)
        if not rows:
            return None
        return ScscfAssignment(rows[0]["private_id"], rows[0]["server_name"],
                               RegistrationState(rows[0]["state"]))

    async def set_assignment(self, assignment: ScscfAssignment) -> None:
        a = assignment
        try:
            await self._p.execute(
                "INSERT INTO scscf_assignments VALUES ($1, $2, $3) ON CONFLICT (private_id) "
                "DO UPDATE SET server_name = excluded.server_name, state = excluded.state",
                a.private_id, a.server_name, a.state.value)
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise StoreError(f"no subscriber {a.private_id!r}") from exc
            raise


def _identity(row: Row) -> PublicIdentity:
    return PublicIdentity(row["uri"], row["private_id"], row["irs_id"],
                          row["service_profile"], row["barred"], row["is_default"])


def _psi(row: Row) -> Psi:
    return Psi(row["pattern"], row["as_uri"], PsiKind(row["kind"]))


# -- registrations (S-CSCF bindings) ----------------------------------------------------

class PgRegistrations(RegistrationRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def save(self, aor: str, binding: Binding) -> None:
        b = binding
        await self._p.execute(
            "INSERT INTO bindings VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            " nextval('refresh_seq')) ON CONFLICT (aor, binding_key) DO UPDATE SET"
            " contact = excluded.contact, expires_at = excluded.expires_at, q = excluded.q,"
            " instance_id = excluded.instance_id, reg_id = excluded.reg_id,"
            " params = excluded.params, path = excluded.path, call_id = excluded.call_id,"
            " cseq = excluded.cseq, flow = excluded.flow, refreshed = excluded.refreshed",
            aor, b.key, b.contact, b.expires_at, b.q, b.instance_id, b.reg_id, b.params,
            list(b.path), b.call_id, b.cseq, b.flow)

    async def remove(self, aor: str, key: str) -> bool:
        return await self._p.execute("DELETE FROM bindings WHERE aor = $1 AND binding_key = $2",
                                     aor, key) > 0

    async def remove_all(self, aor: str) -> int:
        return await self._p.execute("DELETE FROM bindings WHERE aor = $1", aor)

    async def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        rows = await self._p.fetch(
            "SELECT * FROM bindings WHERE aor = $1 AND expires_at > $2 "
            "ORDER BY COALESCE(q, 1.0) DESC, refreshed DESC", aor, _now(now))
        return [_binding(row) for row in rows]

    async def registered_aors(self, now: float | None = None) -> list[str]:
        rows = await self._p.fetch("SELECT DISTINCT aor FROM bindings WHERE expires_at > $1 "
                                   "ORDER BY aor", _now(now))
        return [row[0] for row in rows]

    async def expire(self, now: float | None = None) -> list[tuple[str, Binding]]:
        rows = await self._p.fetch("DELETE FROM bindings WHERE expires_at <= $1 RETURNING *",
                                   _now(now))
        return [(row["aor"], _binding(row)) for row in rows]

    async def next_expiry(self) -> float | None:
        value = await self._p.fetchval("SELECT MIN(expires_at) FROM bindings")
        return None if value is None else float(value)


def _binding(row: Row) -> Binding:
    return Binding(
        contact=row["contact"], expires_at=row["expires_at"], q=row["q"],
        instance_id=row["instance_id"], reg_id=row["reg_id"], params=row["params"],
        path=tuple(row["path"]), call_id=row["call_id"], cseq=row["cseq"], flow=row["flow"])


# -- flows (P-CSCF registrations) -------------------------------------------------------

class PgFlows(FlowRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def save(self, registration: PcscfRegistration) -> None:
        r = registration
        await self._p.execute(
            "INSERT INTO pcscf_registrations VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " nextval('refresh_seq')) ON CONFLICT (node, contact_key) DO UPDATE SET"
            " contact = excluded.contact, flow = excluded.flow,"
            " public_ids = excluded.public_ids, service_route = excluded.service_route,"
            " expires_at = excluded.expires_at, refreshed = excluded.refreshed",
            r.node, r.key, r.contact, r.flow, list(r.public_ids), list(r.service_route),
            r.expires_at)

    async def remove(self, node: str, key: str) -> bool:
        return await self._p.execute("DELETE FROM pcscf_registrations WHERE node = $1 AND "
                                     "contact_key = $2", node, key) > 0

    async def registrations(self, node: str,
                            now: float | None = None) -> list[PcscfRegistration]:
        rows = await self._p.fetch("SELECT * FROM pcscf_registrations WHERE node = $1 AND "
                                   "expires_at > $2 ORDER BY refreshed", node, _now(now))
        return [PcscfRegistration(
            node=row["node"], key=row["contact_key"], contact=row["contact"], flow=row["flow"],
            public_ids=tuple(row["public_ids"]), service_route=tuple(row["service_route"]),
            expires_at=row["expires_at"]) for row in rows]

    async def expire(self, now: float | None = None) -> int:
        return await self._p.execute("DELETE FROM pcscf_registrations WHERE expires_at <= $1",
                                     _now(now))


# -- messages ---------------------------------------------------------------------------

class PgMessages(MessageRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def defer(self, message: DeferredMessage) -> int:
        async with self._p.connection() as conn:
            return await _insert_deferred(conn, message)

    async def deferred(self, recipient: str, now: float | None = None,
                       limit: int | None = None) -> list[DeferredMessage]:
        rows = await self._p.fetch(
            "SELECT * FROM deferred_messages WHERE recipient = $1 AND expires_at > $2 "
            "ORDER BY id LIMIT $3", recipient, _now(now), limit)
        return [_deferred(row) for row in rows]

    async def claim_deferred(self, recipient: str, holder: str, lease: float,
                             now: float | None = None,
                             limit: int | None = None) -> list[DeferredMessage]:
        # SKIP LOCKED: a second AS claiming at the same moment passes over the rows
        # this one locked instead of waiting and then claiming them again.
        at = _now(now)
        rows = await self._p.fetch(
            "WITH free AS (SELECT id FROM deferred_messages WHERE recipient = $1 AND"
            " expires_at > $2 AND lease_until <= $2 ORDER BY id LIMIT $3"
            " FOR UPDATE SKIP LOCKED)"
            " UPDATE deferred_messages d SET lease_holder = $4, lease_until = $5,"
            " fence = nextval('lease_fence') FROM free WHERE d.id = free.id RETURNING d.*",
            recipient, at, limit, holder, at + lease)
        return sorted((_deferred(row) for row in rows), key=lambda m: m.id or 0)

    async def complete_deferred(self, claimed: Sequence[DeferredMessage]) -> int:
        pairs = [(m.id, m.fence) for m in claimed]
        async with self._p.connection(transaction=True) as conn:
            done = 0
            for item, fence in pairs:
                done += _count(await conn.execute(
                    "DELETE FROM deferred_messages WHERE id = $1 AND fence = $2", item, fence))
            return done

    async def release_deferred(self, claimed: Sequence[DeferredMessage]) -> int:
        async with self._p.connection(transaction=True) as conn:
            done = 0
            for m in claimed:
                done += _count(await conn.execute(
                    "UPDATE deferred_messages SET lease_holder = NULL, lease_until = 0 "
                    "WHERE id = $1 AND fence = $2", m.id, m.fence))
            return done

    async def remove_deferred(self, ids: Sequence[int]) -> int:
        return await self._p.execute("DELETE FROM deferred_messages WHERE id = ANY($1::bigint[])",
                                     list(ids))

    async def deferred_recipients(self, now: float | None = None) -> list[str]:
        rows = await self._p.fetch("SELECT DISTINCT recipient FROM deferred_messages "
                                   "WHERE expires_at > $1 ORDER BY recipient", _now(now))
        return [row[0] for row in rows]

    async def expire_deferred(self, now: float | None = None) -> list[DeferredMessage]:
        rows = await self._p.fetch("DELETE FROM deferred_messages WHERE expires_at <= $1 "
                                   "RETURNING *", _now(now))
        return sorted((_deferred(row) for row in rows), key=lambda m: m.id or 0)

    async def next_deferred_expiry(self) -> float | None:
        value = await self._p.fetchval("SELECT MIN(expires_at) FROM deferred_messages")
        return None if value is None else float(value)

    async def add_history(self, entry: HistoryEntry) -> bool:
        e = entry
        added = await self._p.fetch(
            "INSERT INTO message_history (conversation_id, message_key, sender, recipient,"
            " content_type, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT DO NOTHING RETURNING id",
            e.conversation_id, e.message_key, e.sender, e.recipient, e.content_type,
            bytes(e.body), e.created_at or time.time())
        return bool(added)

    async def history(self, conversation_id: str,
                      limit: int | None = None) -> list[HistoryEntry]:
        rows = await self._p.fetch("SELECT * FROM message_history WHERE conversation_id = $1 "
                                   "ORDER BY id LIMIT $2", conversation_id, limit)
        return [HistoryEntry(r["conversation_id"], r["message_key"], r["sender"],
                             r["recipient"], r["content_type"], bytes(r["body"]),
                             r["created_at"], r["id"]) for r in rows]

    async def append_group_message(self, message: GroupMessage) -> int | None:
        m = message
        value = await self._p.fetchval(
            "INSERT INTO group_messages (conference, message_key, sender, content_type, body,"
            " meta, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT DO NOTHING RETURNING id",
            m.conference, m.message_key, m.sender, m.content_type, bytes(m.body), m.meta,
            m.created_at or time.time())
        return None if value is None else int(value)

    async def group_messages(self, conference: str, after: int = 0,
                             limit: int | None = None) -> list[GroupMessage]:
        rows = await self._p.fetch("SELECT * FROM group_messages WHERE conference = $1 AND "
                                   "id > $2 ORDER BY id LIMIT $3", conference, after, limit)
        return [_group_message(row) for row in rows]

    async def set_delivered(self, conference: str, member: str, message_id: int) -> None:
        await self._p.execute(
            "INSERT INTO group_positions VALUES ($1, $2, $3) ON CONFLICT (conference, member)"
            " DO UPDATE SET message_id = GREATEST(group_positions.message_id,"
            " excluded.message_id)", conference, member, message_id)

    async def delivered(self, conference: str, member: str) -> int:
        value = await self._p.fetchval("SELECT message_id FROM group_positions WHERE "
                                       "conference = $1 AND member = $2", conference, member)
        return 0 if value is None else int(value)

    async def undelivered(self, conference: str, member: str,
                          limit: int | None = None) -> list[GroupMessage]:
        rows = await self._p.fetch(
            "SELECT * FROM group_messages WHERE conference = $1 AND id > COALESCE("
            "(SELECT message_id FROM group_positions WHERE conference = $1 AND member = $2), 0)"
            " ORDER BY id LIMIT $3", conference, member, limit)
        return [_group_message(row) for row in rows]

    async def remove_group_log(self, conference: str) -> int:
        async with self._p.connection(transaction=True) as conn:
            await conn.execute("DELETE FROM group_positions WHERE conference = $1", conference)
            return _count(await conn.execute("DELETE FROM group_messages WHERE conference = $1",
                                             conference))


def _deferred(row: Row) -> DeferredMessage:
    return DeferredMessage(
        recipient=row["recipient"], sender=row["sender"], content_type=row["content_type"],
        body=bytes(row["body"]), expires_at=row["expires_at"], created_at=row["created_at"],
        meta=row["meta"], id=row["id"], fence=row["fence"])


def _group_message(row: Row) -> GroupMessage:
    return GroupMessage(
        conference=row["conference"], sender=row["sender"], content_type=row["content_type"],
        body=bytes(row["body"]), message_key=row["message_key"], created_at=row["created_at"],
        meta=row["meta"], id=row["id"])


async def _insert_deferred(conn: Conn, m: DeferredMessage) -> int:
    return int(await conn.fetchval(
        "INSERT INTO deferred_messages (recipient, sender, content_type, body, meta,"
        " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        m.recipient, m.sender, m.content_type, bytes(m.body), m.meta,
        m.created_at or time.time(), m.expires_at))


# -- files kept for offline users ------------------------------------------------------

# One round trip: the chunk goes in only while its file is there (not swept).
_PUT_CHUNK = """
WITH file AS (UPDATE deferred_files SET touched_at = $4 WHERE id = $1 RETURNING id)
INSERT INTO deferred_file_chunks (file_id, seq, data) SELECT id, $2, $3 FROM file
"""


class PgFiles(FileRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def create(self, now: float | None = None) -> int:
        at = _now(now)
        return int(await self._p.fetchval("INSERT INTO deferred_files (created_at, touched_at)"
                                          " VALUES ($1, $1) RETURNING id", at))

    async def put_chunk(self, file_id: int, seq: int, data: bytes,
                        now: float | None = None) -> None:
        if not await self._p.execute(_PUT_CHUNK, file_id, seq, bytes(data), _now(now)):
            raise StoreError(f"store {self._p.where}: kept file {file_id} is gone")

    async def chunks(self, file_id: int, first: int = 0) -> AsyncIterator[bytes]:
        seq = first
        while True:
            data = await self._p.fetchval("SELECT data FROM deferred_file_chunks WHERE "
                                          "file_id = $1 AND seq = $2", file_id, seq)
            if data is None:
                return
            yield bytes(data)
            seq += 1

    async def get(self, file_id: int) -> StoredFile | None:
        rows = await self._p.fetch(
            "SELECT f.id, f.item_id, f.touched_at, COUNT(c.seq) AS n, COALESCE(SUM("
            "octet_length(c.data)), 0) AS size FROM deferred_files f LEFT JOIN "
            "deferred_file_chunks c ON c.file_id = f.id WHERE f.id = $1 GROUP BY f.id", file_id)
        if not rows:
            return None
        r = rows[0]
        return StoredFile(r["id"], int(r["size"]), int(r["n"]), r["item_id"], r["touched_at"])

    async def ids(self) -> list[int]:
        return [r[0] for r in await self._p.fetch("SELECT id FROM deferred_files ORDER BY id")]

    async def keep(self, file_id: int, message: DeferredMessage) -> int:
        async with self._p.connection(transaction=True) as conn:
            item = await _insert_deferred(conn, message)
            if not _count(await conn.execute("UPDATE deferred_files SET item_id = $1 WHERE "
                                             "id = $2 AND item_id IS NULL", item, file_id)):
                raise StoreError(f"store {self._p.where}: kept file {file_id} is gone")
            return item

    async def delete(self, file_id: int) -> bool:
        return await self._p.execute("DELETE FROM deferred_files WHERE id = $1 AND item_id "
                                     "IS NULL", file_id) > 0

    async def sweep(self, idle_since: float) -> int:
        return await self._p.execute("DELETE FROM deferred_files WHERE item_id IS NULL AND "
                                     "touched_at < $1", idle_since)


# -- conferences ------------------------------------------------------------------------

class PgConferences(ConferenceRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def create(self, conference: Conference) -> None:
        try:
            async with self._p.connection(transaction=True) as conn:
                await _insert_conference(conn, conference)
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise AlreadyExists(f"conference {conference.uri} already exists") from exc
            raise

    async def put(self, conference: Conference) -> None:
        async with self._p.connection(transaction=True) as conn:
            await conn.execute("DELETE FROM conferences WHERE uri = $1", conference.uri)
            await _insert_conference(conn, conference)

    async def _conferences(self, where: str, *args: object) -> list[Conference]:
        async with self._p.connection() as conn:
            rows = await conn.fetch(f"SELECT * FROM conferences {where}", *args)
            uris = [r["uri"] for r in rows]
            admins = await conn.fetch("SELECT * FROM conference_admins WHERE conference = "
                                      "ANY($1::text[]) ORDER BY position", uris)
            people = await conn.fetch("SELECT * FROM conference_participants WHERE conference"
                                      " = ANY($1::text[]) ORDER BY position", uris)
        by_admin: dict[str, list[str]] = {}
        for a in admins:
            by_admin.setdefault(a["conference"], []).append(a["admin"])
        by_people: dict[str, list[Participant]] = {}
        for p in people:
            by_people.setdefault(p["conference"], []).append(Participant(
                p["uri"], ParticipantState(p["state"]), p["display_name"], p["joined_at"]))
        return [Conference(
            uri=r["uri"], creator=r["creator"], kind=ConferenceKind(r["kind"]),
            subject=r["subject"], admins=tuple(by_admin.get(r["uri"], ())),
            participants=tuple(by_people.get(r["uri"], ())), created_at=r["created_at"],
            expires_at=r["expires_at"]) for r in rows]

    async def get(self, uri: str) -> Conference | None:
        found = await self._conferences("WHERE uri = $1", uri)
        return found[0] if found else None

    async def conferences(self, kind: ConferenceKind | None = None) -> list[Conference]:
        if kind is None:
            return await self._conferences("ORDER BY uri")
        return await self._conferences("WHERE kind = $1 ORDER BY uri", kind.value)

    async def remove(self, uri: str) -> bool:
        return await self._p.execute("DELETE FROM conferences WHERE uri = $1", uri) > 0

    async def set_subject(self, uri: str, subject: str) -> bool:
        return await self._p.execute("UPDATE conferences SET subject = $1 WHERE uri = $2",
                                     subject, uri) > 0

    async def set_participant(self, uri: str, participant: Participant) -> bool:
        p = participant
        async with self._p.connection(transaction=True) as conn:
            # the row lock keeps two instances from giving two participants one position
            if not await conn.fetch("SELECT 1 FROM conferences WHERE uri = $1 FOR UPDATE", uri):
                return False
            await conn.execute(
                "INSERT INTO conference_participants VALUES ($1, $2, (SELECT COALESCE("
                "MAX(position) + 1, 0) FROM conference_participants WHERE conference = $1),"
                " $3, $4, $5) ON CONFLICT (conference, uri) DO UPDATE SET state = excluded.state,"
                " display_name = excluded.display_name, joined_at = excluded.joined_at",
                uri, p.uri, p.state.value, p.display_name, p.joined_at)
            return True

    async def remove_participant(self, uri: str, participant_uri: str) -> bool:
        return await self._p.execute("DELETE FROM conference_participants WHERE conference = $1"
                                     " AND uri = $2", uri, participant_uri) > 0

    async def set_expiry(self, uri: str, expires_at: float | None) -> bool:
        return await self._p.execute("UPDATE conferences SET expires_at = $1 WHERE uri = $2",
                                     expires_at, uri) > 0

    async def expire(self, now: float | None = None) -> list[Conference]:
        cutoff = _now(now)
        async with self._p.connection(transaction=True) as conn:
            gone = await self._conferences_in(conn, cutoff)
            await conn.execute("DELETE FROM conferences WHERE uri = ANY($1::text[])",
                               [c.uri for c in gone])
        return gone

    async def _conferences_in(self, conn: Conn, cutoff: float) -> list[Conference]:
        """The expired ones, locked, read on the transaction's own connection."""
        uris = [r[0] for r in await conn.fetch(
            "SELECT uri FROM conferences WHERE expires_at <= $1 ORDER BY expires_at, uri "
            "FOR UPDATE SKIP LOCKED", cutoff)]
        out = []
        for uri in uris:
            row = await conn.fetchrow("SELECT * FROM conferences WHERE uri = $1", uri)
            admins = await conn.fetch("SELECT admin FROM conference_admins WHERE conference = "
                                      "$1 ORDER BY position", uri)
            people = await conn.fetch("SELECT * FROM conference_participants WHERE "
                                      "conference = $1 ORDER BY position", uri)
            out.append(Conference(
                uri=uri, creator=row["creator"], kind=ConferenceKind(row["kind"]),
                subject=row["subject"], admins=tuple(a[0] for a in admins),
                participants=tuple(Participant(p["uri"], ParticipantState(p["state"]),
                                               p["display_name"], p["joined_at"])
                                   for p in people),
                created_at=row["created_at"], expires_at=row["expires_at"]))
        return out

    async def next_expiry(self) -> float | None:
        value = await self._p.fetchval("SELECT MIN(expires_at) FROM conferences")
        return None if value is None else float(value)

    async def claim_owner(self, uri: str, holder: str, lease: float,
                          now: float | None = None) -> int | None:
        at = _now(now)
        fence = await self._p.fetchval(_CLAIM_OWNER, uri, holder, at + lease, at)
        return None if fence is None else int(fence)

    async def renew_owner(self, uri: str, holder: str, fence: int, lease: float,
                          now: float | None = None) -> bool:
        return await self._p.execute(
            "UPDATE conference_owners SET lease_until = $1 WHERE uri = $2 AND holder = $3 "
            "AND fence = $4", _now(now) + lease, uri, holder, fence) > 0

    async def release_owner(self, uri: str, fence: int) -> bool:
        return await self._p.execute(
            "UPDATE conference_owners SET holder = '', lease_until = 0 WHERE uri = $1 "
            "AND fence = $2 AND holder != ''", uri, fence) > 0

    async def owner(self, uri: str, now: float | None = None) -> tuple[str, int] | None:
        rows = await self._p.fetch("SELECT holder, fence FROM conference_owners WHERE uri = $1"
                                   " AND lease_until > $2", uri, _now(now))
        return (rows[0]["holder"], int(rows[0]["fence"])) if rows else None


# Takes a free, expired or own lease in one statement (INSERT ... ON CONFLICT locks the
# row): the upsert's WHERE keeps another holder's live lease. A new holder: fence + 1.
_CLAIM_OWNER = """
INSERT INTO conference_owners (uri, holder, fence, lease_until) VALUES ($1, $2, 1, $3)
ON CONFLICT (uri) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until,
    fence = CASE WHEN conference_owners.holder = excluded.holder THEN conference_owners.fence
                 ELSE conference_owners.fence + 1 END
WHERE conference_owners.holder = excluded.holder OR conference_owners.lease_until <= $4
RETURNING fence
"""


async def _insert_conference(conn: Conn, c: Conference) -> None:
    await conn.execute("INSERT INTO conferences VALUES ($1, $2, $3, $4, $5, $6)",
                       c.uri, c.creator, c.kind.value, c.subject, c.created_at or time.time(),
                       c.expires_at)
    await conn.executemany("INSERT INTO conference_admins VALUES ($1, $2, $3)",
                           [(c.uri, i, a) for i, a in enumerate(c.admins)])
    await conn.executemany("INSERT INTO conference_participants VALUES ($1, $2, $3, $4, $5, $6)",
                           [(c.uri, p.uri, i, p.state.value, p.display_name, p.joined_at)
                            for i, p in enumerate(c.participants)])


# -- service data -----------------------------------------------------------------------

class PgServiceData(ServiceDataRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def get(self, owner: str, key: str) -> tuple[str, ...]:
        rows = await self._p.fetch("SELECT value FROM service_data WHERE owner = $1 AND "
                                   "key = $2 ORDER BY position", owner, key)
        return tuple(row[0] for row in rows)

    async def put(self, owner: str, key: str, values: Sequence[str]) -> None:
        async with self._p.connection(transaction=True) as conn:
            await conn.execute("DELETE FROM service_data WHERE owner = $1 AND key = $2",
                               owner, key)
            await conn.executemany("INSERT INTO service_data VALUES ($1, $2, $3, $4)",
                                   [(owner, key, i, v) for i, v in enumerate(values)])

    async def remove(self, owner: str, key: str) -> bool:
        return await self._p.execute("DELETE FROM service_data WHERE owner = $1 AND key = $2",
                                     owner, key) > 0

    async def settings(self, owner: str) -> dict[str, tuple[str, ...]]:
        rows = await self._p.fetch("SELECT key, value FROM service_data WHERE owner = $1 "
                                   "ORDER BY key, position", owner)
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(row[1])
        return {k: tuple(v) for k, v in out.items()}

    async def owners(self, key: str, value: str) -> list[str]:
        rows = await self._p.fetch("SELECT DISTINCT owner FROM service_data WHERE key = $1 "
                                   "AND value = $2 ORDER BY owner", key, value)
        return [row[0] for row in rows]


# -- Digest nonce-counts ----------------------------------------------------------------

class PgNonces(NonceRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def advance(self, nonce: str, nc: int, expires_at: float) -> bool:
        return await self._p.execute(
            "INSERT INTO nonce_counts VALUES ($1, $2, $3) ON CONFLICT (nonce) DO UPDATE SET "
            "nc = excluded.nc WHERE excluded.nc > nonce_counts.nc", nonce, nc, expires_at) == 1

    async def expire(self, now: float | None = None) -> int:
        return await self._p.execute("DELETE FROM nonce_counts WHERE expires_at <= $1",
                                     _now(now))

    async def shared_secret(self, name: str) -> bytes:
        # The first instance's key wins a race; the others read it (a loser whose
        # snapshot predates the winner's commit reads it in a second statement).
        await self._p.execute("INSERT INTO shared_secrets VALUES ($1, $2) ON CONFLICT (name) "
                              "DO NOTHING", name, secrets.token_bytes(32))
        found = await self._p.fetchval("SELECT secret FROM shared_secrets WHERE name = $1",
                                       name)
        return bytes(found)

# -- call park orbits -------------------------------------------------------------------

# The lowest orbit free when the statement starts; a claim racing for the same one
# waits on the primary key and then inserts nothing (ON CONFLICT): it tries again.
_CLAIM_ORBIT = """
INSERT INTO parked_calls (lot, orbit, token, parker, parked, holder, parked_at)
SELECT $1, o, $4, $5, $6, $7, $8 FROM generate_series($2::int, $3::int) AS o
WHERE NOT EXISTS (SELECT 1 FROM parked_calls p WHERE p.lot = $1 AND p.orbit = o)
ORDER BY o LIMIT 1
ON CONFLICT (lot, orbit) DO NOTHING
RETURNING orbit
"""


class PgParking(ParkingRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def claim(self, lot: str, first: int, last: int, token: str, parker: str,
                    parked: str, holder: str = "",
                    now: float | None = None) -> ParkedCall | None:
        at = _now(now)
        for _ in range(max(last - first + 1, 0) + 8):   # each lost race: one orbit fewer
            orbit = await self._p.fetchval(_CLAIM_ORBIT, lot, first, last, token, parker,
                                           parked, holder, at)
            if orbit is not None:
                return ParkedCall(lot, orbit, token, parker, parked, holder, at)
            taken = await self._p.fetchval(
                "SELECT COUNT(*) FROM parked_calls WHERE lot = $1 AND orbit BETWEEN $2 AND $3",
                lot, first, last)
            if taken >= last - first + 1:
                return None
        return None

    async def get(self, lot: str, orbit: int) -> ParkedCall | None:
        rows = await self._p.fetch("SELECT * FROM parked_calls WHERE lot = $1 AND orbit = $2",
                                   lot, orbit)
        return _parked(rows[0]) if rows else None

    async def take(self, lot: str, orbit: int) -> ParkedCall | None:
        rows = await self._p.fetch("DELETE FROM parked_calls WHERE lot = $1 AND orbit = $2 "
                                   "RETURNING *", lot, orbit)
        return _parked(rows[0]) if rows else None

    async def release(self, lot: str, orbit: int, token: str) -> bool:
        return await self._p.execute("DELETE FROM parked_calls WHERE lot = $1 AND orbit = $2 "
                                     "AND token = $3", lot, orbit, token) > 0

    async def parked(self, lot: str) -> list[ParkedCall]:
        rows = await self._p.fetch("SELECT * FROM parked_calls WHERE lot = $1 ORDER BY orbit",
                                   lot)
        return [_parked(row) for row in rows]


def _parked(row: Row) -> ParkedCall:
    return ParkedCall(row["lot"], row["orbit"], row["token"], row["parker"], row["parked"],
                      row["holder"], row["parked_at"])


# -- reg event subscriptions ------------------------------------------------------------

_REG_KEY = "call_id = $1 AND local_tag = $2 AND remote_tag = $3"


class PgRegSubscriptions(RegSubscriptionRepository):
    """``take`` is one UPDATE ... RETURNING: the row lock makes the increments of
    two S-CSCFs follow one another."""

    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def put(self, subscription: RegSubscription) -> None:
        s = subscription
        await self._p.execute(
            "INSERT INTO reg_subscriptions VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
            "$11, $12, $13, $14, $15) ON CONFLICT (call_id, local_tag, remote_tag) DO UPDATE "
            "SET aor = excluded.aor, event = excluded.event, "
            "remote_target = excluded.remote_target, local_target = excluded.local_target, "
            "route_set = excluded.route_set, "
            "remote_cseq = excluded.remote_cseq, expires_at = excluded.expires_at",
            s.call_id, s.local_tag, s.remote_tag, s.aor, s.event, s.resource, s.local_uri,
            s.remote_uri, s.remote_target, s.local_target, list(s.route_set), s.remote_cseq,
            s.cseq_base, s.version, s.expires_at)

    async def get(self, call_id: str, local_tag: str, remote_tag: str,
                  now: float | None = None) -> RegSubscription | None:
        rows = await self._p.fetch(f"SELECT * FROM reg_subscriptions WHERE {_REG_KEY} "
                                   "AND expires_at > $4", call_id, local_tag, remote_tag,
                                   _now(now))
        return _reg_subscription(rows[0]) if rows else None

    async def take(self, call_id: str, local_tag: str, remote_tag: str,
                   now: float | None = None) -> RegSubscription | None:
        rows = await self._p.fetch(
            f"UPDATE reg_subscriptions SET version = version + 1 WHERE {_REG_KEY} "
            "AND expires_at > $4 RETURNING *", call_id, local_tag, remote_tag, _now(now))
        return _reg_subscription(rows[0], taken=True) if rows else None

    async def take_watching(self, aor: str, now: float | None = None) -> list[RegSubscription]:
        rows = await self._p.fetch(
            "UPDATE reg_subscriptions SET version = version + 1 WHERE aor = $1 "
            "AND expires_at > $2 RETURNING *", aor, _now(now))
        return sorted((_reg_subscription(r, taken=True) for r in rows), key=lambda s: s.key)

    async def remove(self, call_id: str, local_tag: str, remote_tag: str) -> bool:
        return await self._p.execute(f"DELETE FROM reg_subscriptions WHERE {_REG_KEY}",
                                     call_id, local_tag, remote_tag) > 0

    async def expire(self, now: float | None = None) -> list[RegSubscription]:
        rows = await self._p.fetch("DELETE FROM reg_subscriptions WHERE expires_at <= $1 "
                                   "RETURNING *", _now(now))
        return sorted((_reg_subscription(r) for r in rows), key=lambda s: s.key)

    async def next_expiry(self) -> float | None:
        value = await self._p.fetchval("SELECT MIN(expires_at) FROM reg_subscriptions")
        return None if value is None else float(value)


def _reg_subscription(row: Row, taken: bool = False) -> RegSubscription:
    """``taken``: the row after take's increment, so the version taken is one lower."""
    return RegSubscription(
        row["call_id"], row["local_tag"], row["remote_tag"], row["aor"], row["event"],
        row["resource"], row["local_uri"], row["remote_uri"], row["remote_target"],
        row["local_target"], tuple(row["route_set"]), int(row["remote_cseq"]),
        int(row["cseq_base"]), int(row["version"]) - (1 if taken else 0),
        float(row["expires_at"]))


# -- failed-login counters --------------------------------------------------------------

class PgLogins(LoginRepository):
    def __init__(self, pool: _Pool) -> None:
        self._p = pool

    async def state(self, account: str, address: str, port: int,
                    since: float) -> LoginState:
        # one round trip for the three tables
        row = (await self._p.fetch(
            "SELECT (SELECT failures FROM login_accounts WHERE account = $1) AS failures, "
            "(SELECT last_failure FROM login_accounts WHERE account = $1) AS last_failure, "
            "(SELECT array_agg(at ORDER BY at) FROM login_source_failures WHERE address = $2 "
            "AND at > $4) AS times, (SELECT at FROM login_trusted WHERE account = $1 AND "
            "address = $2 AND port = $3) AS trusted", account, address, port, since))[0]
        return LoginState(int(row["failures"] or 0), float(row["last_failure"] or 0.0),
                          tuple(float(t) for t in row["times"] or ()),
                          None if row["trusted"] is None else float(row["trusted"]))

    async def failed(self, account: str, address: str, port: int, now: float, *,
                     source_window: float, keep: float) -> None:
        async with self._p.connection(transaction=True) as conn:
            await conn.execute(
                "INSERT INTO login_accounts VALUES ($1, 1, $2, $3) ON CONFLICT (account) "
                "DO UPDATE SET failures = login_accounts.failures + 1, "
                "last_failure = excluded.last_failure, expires_at = excluded.expires_at",
                account, now, now + keep)
            await conn.execute("DELETE FROM login_trusted WHERE account = $1 AND "
                               "address = $2 AND port = $3", account, address, port)
            await conn.execute("DELETE FROM login_source_failures WHERE address = $1 AND "
                               "at <= $2", address, now - source_window)
            await conn.execute("INSERT INTO login_source_failures VALUES ($1, $2, $3)",
                               address, now, now + source_window)

    async def succeeded(self, account: str, address: str, port: int, now: float, *,
                        reset_account: bool, keep: float) -> None:
        async with self._p.connection(transaction=True) as conn:
            if reset_account:
                await conn.execute("DELETE FROM login_accounts WHERE account = $1", account)
            await conn.execute(
                "INSERT INTO login_trusted VALUES ($1, $2, $3, $4, $5) ON CONFLICT "
                "(account, address, port) DO UPDATE SET at = excluded.at, "
                "expires_at = excluded.expires_at", account, address, port, now, now + keep)

    async def expire(self, now: float | None = None) -> int:
        cutoff = _now(now)
        async with self._p.connection(transaction=True) as conn:
            return sum([_count(await conn.execute(
                f"DELETE FROM {table} WHERE expires_at <= $1", cutoff))
                for table in ("login_accounts", "login_source_failures", "login_trusted")])
