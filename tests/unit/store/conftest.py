"""The store contract suite: every test that takes ``store`` runs on each back
end - SQLite (the embedded default), PostgreSQL, and PostgreSQL with the Redis
cache in front - and they must all behave the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.store import SqliteStore, Store, open_store

BACKENDS = ("sqlite", "postgresql", "postgresql+redis")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty, unopened store (the unit conftest opens and closes it)."""
    if request.param == "sqlite":
        return SqliteStore.in_data_dir(tmp_path)
    pg_url = request.getfixturevalue("pg_url")
    if request.param == "postgresql":
        return open_store(pg_url)
    return open_store(pg_url, request.getfixturevalue("redis_url"))
