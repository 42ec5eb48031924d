"""imsbox state behind one contract: a :class:`Store` of per-role async repositories.

``open_store(location)`` picks the back end from a location string:

* a directory path (the data dir, default ``./.imsbox``): SQLite file
  ``imsbox.sqlite3`` inside it, WAL mode - the embedded default;
* ``sqlite:PATH`` (``sqlite:///abs/file.sqlite3``, ``sqlite:rel.db``) or ``sqlite::memory:``;
* ``postgresql://...`` (with a ``redis://...`` cache): reserved for the
  scale-out back end, not implemented yet - raises StoreError saying so.

The store comes back unopened: ``async with open_store(x) as store`` or
``store = await open_store(x).open()``.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    AlreadyExists, ConferenceRepository, FlowRepository, MessageRepository,
    RegistrationRepository, ServiceDataRepository, Store, StoreError, SubscriberRepository,
)
from .models import (
    Binding, Conference, ConferenceKind, Credential, DeferredMessage, Group, GroupMessage,
    HistoryEntry, Participant, ParticipantState, PcscfRegistration, Psi, PsiKind,
    PublicIdentity, RegistrationState, ScscfAssignment, ServiceProfile, Subscriber,
)
from .sqlite import DB_FILENAME, SqliteStore

__all__ = [
    "DB_FILENAME", "AlreadyExists", "Binding", "Conference", "ConferenceKind",
    "ConferenceRepository", "Credential", "DeferredMessage", "FlowRepository", "Group",
    "GroupMessage", "HistoryEntry", "MessageRepository", "Participant", "ParticipantState",
    "PcscfRegistration", "Psi", "PsiKind", "PublicIdentity", "RegistrationRepository",
    "RegistrationState", "ScscfAssignment", "ServiceDataRepository", "ServiceProfile",
    "SqliteStore", "Store", "StoreError", "Subscriber", "SubscriberRepository", "open_store",
]


def open_store(location: str | Path, cache: str | None = None) -> Store:
    """The (unopened) store at ``location`` (data dir or URL); see the module docstring."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")) or cache:
        raise StoreError(f"store {text!r}{' with cache ' + cache if cache else ''}: "
                         "the PostgreSQL/Redis back end is not available yet; "
                         "use a data directory (SQLite)")
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
