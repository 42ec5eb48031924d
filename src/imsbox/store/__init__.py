"""imsbox state behind one interface (:class:`Store`).

``open_store(location)`` picks the back end from a location string:

* a directory path (the data dir, default ``./.imsbox``): SQLite file
  ``imsbox.sqlite3`` inside it, WAL mode - the embedded default;
* ``sqlite:///path/to/file.sqlite3`` or ``sqlite::memory:``;
* ``postgresql://...`` (with a ``redis://...`` cache): reserved for the
  scale-out back end, not implemented yet - raises StoreError saying so.
"""

from __future__ import annotations

from pathlib import Path

from .base import AlreadyExists, Store, StoreError
from .models import (
    Binding, Credential, DeferredMessage, Group, HistoryEntry, PcscfRegistration, Psi, PsiKind,
    PublicIdentity, RegistrationState, ScscfAssignment, ServiceProfile, Subscriber,
)
from .sqlite import DB_FILENAME, SqliteStore

__all__ = [
    "DB_FILENAME", "AlreadyExists", "Binding", "Credential", "DeferredMessage", "Group",
    "HistoryEntry", "PcscfRegistration", "Psi", "PsiKind", "PublicIdentity",
    "RegistrationState", "ScscfAssignment", "ServiceProfile", "SqliteStore", "Store",
    "StoreError", "Subscriber", "open_store",
]


def open_store(location: str | Path, cache: str | None = None) -> Store:
    """Open the store at ``location`` (data dir or URL); see the module docstring."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")) or cache:
        raise StoreError(f"store {text!r}{' with cache ' + cache if cache else ''}: "
                         "the PostgreSQL/Redis back end is not available yet; "
                         "use a data directory (SQLite)")
    if text == "sqlite::memory:":
        return SqliteStore(":memory:")
    if text.startswith("sqlite://"):
        path = text.removeprefix("sqlite://")
        if not path:
            raise StoreError(f"store {text!r}: expected sqlite:///path/to/file")
        return SqliteStore(path)
    if "://" in text:
        raise StoreError(f"store {text!r}: unknown scheme; use a data directory, "
                         "sqlite:///FILE or postgresql://...")
    return SqliteStore.in_data_dir(text)
