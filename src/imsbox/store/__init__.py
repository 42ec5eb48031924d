"""imsbox state behind one contract: a :class:`Store` of per-role async repositories.

``open_store(location)`` picks the back end from a location string:

* a directory path (the data dir, default ``./.imsbox``): SQLite file
  ``imsbox.sqlite3`` inside it, WAL mode - the embedded default;
* ``sqlite:PATH`` (``sqlite:///abs/file.sqlite3``, ``sqlite:rel.db``) or ``sqlite::memory:``;
* ``postgresql://user[:password]@host[:port]/database``: the shared store of a
  scaled-out network (:mod:`imsbox.store.postgres`, needs the ``postgres`` extra);
* ``cache="redis://host:port/db"``: hot shared state in Redis in front of the
  durable store (:mod:`imsbox.store.redis`, needs the ``redis`` extra).

The store comes back unopened: ``async with open_store(x) as store`` or
``store = await open_store(x).open()``.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    FILE_CHUNK, AlreadyExists, ConferenceRepository, FileRepository, FlowRepository,
    LoginRepository, MessageRepository, NonceRepository, ParkingRepository,
    RegSubscriptionRepository, RegistrationRepository, ServiceDataRepository, Store,
    StoreError, StoreUnavailable, SubscriberRepository,
)
from .models import (
    Binding, Conference, ConferenceKind, Credential, DeferredMessage, Group, GroupMessage,
    HistoryEntry, LoginState, ParkedCall, Participant, ParticipantState, PcscfRegistration, Psi,
    PsiKind, PublicIdentity, RegSubscription, RegistrationState, ScscfAssignment,
    ServiceProfile, StoredFile, Subscriber,
)
from .sqlite import DB_FILENAME, SqliteStore

__all__ = [
    "DB_FILENAME", "FILE_CHUNK", "AlreadyExists", "Binding", "Conference", "ConferenceKind",
    "ConferenceRepository", "Credential", "DeferredMessage", "FileRepository",
    "FlowRepository", "Group", "GroupMessage", "HistoryEntry", "LoginRepository",
    "LoginState", "MessageRepository", "NonceRepository", "ParkedCall",
    "ParkingRepository", "Participant", "ParticipantState",
    "PcscfRegistration", "Psi", "PsiKind", "PublicIdentity", "RegSubscription",
    "RegSubscriptionRepository", "RegistrationRepository",
    "RegistrationState", "ScscfAssignment", "ServiceDataRepository", "ServiceProfile",
    "SqliteStore", "Store", "StoreError", "StoredFile", "StoreUnavailable", "Subscriber",
    "SubscriberRepository", "open_store",
]


def open_store(location: str | Path, cache: str | None = None) -> Store:
    """The (unopened) store at ``location`` (data dir or URL); see the module docstring."""
    store = _durable(str(location))
    if not cache:
        return store
    if not cache.startswith(("redis://", "rediss://", "unix://")):
        raise StoreError(f"cache {cache!r}: expected redis://host:port/db")
    try:
        from .redis import RedisCachedStore
    except ImportError as exc:
        raise StoreError(f"cache {cache!r} needs the Redis driver: "
                         "pip install 'imsbox[redis]'") from exc
    return RedisCachedStore(store, cache)


def _durable(text: str) -> Store:
    if text.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(f"store {text.partition('@')[2] or text!r} needs the PostgreSQL "
                             "driver: pip install 'imsbox[postgres]'") from exc
        return PostgresStore(text)
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:")
        path = path.removeprefix("//")  # sqlite:///abs/file, as other tools write it
        if not path:
            raise StoreError(f"store {text!r}: expected sqlite:PATH or sqlite:///path/to/file")
        return SqliteStore(path)
    if "://" in text:
        raise StoreError(f"store {text!r}: unknown scheme; use a data directory, "
                         "sqlite:///FILE or postgresql://...")
    return SqliteStore.in_data_dir(text)
