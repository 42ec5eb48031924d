"""Session-wide throw-away back ends: one PostgreSQL and one Redis on loopback,
started on first use and stopped at the end (imsbox.testing_backends).

Their binaries come from Debian (scripts/setup.sh installs them): when they are
missing the tests that need them fail saying so, never skip.

Tests marked ``load`` (thousands of calls through a node) run one at a time
across the xdist workers: two of them at once on a 2-core machine starve each
other into overload, which is not what either measures.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Generator, Iterator

import pytest

from imsbox.testing_backends import BackendUnavailable, ThrowawayPostgres, ThrowawayRedis


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Outside pytest-timeout's timer: waiting for the other load test is not slowness."""
    run_id = getattr(item.config, "workerinput", {}).get("testrunuid")
    if run_id is None or item.get_closest_marker("load") is None:
        yield
        return
    with open(os.path.join("/tmp", f"imsbox-load-{run_id}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    try:
        server = ThrowawayPostgres().start()
    except BackendUnavailable as exc:
        pytest.fail(f"PostgreSQL for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ThrowawayRedis]:
    try:
        server = ThrowawayRedis().start()
    except BackendUnavailable as exc:
        pytest.fail(f"Redis for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: ThrowawayPostgres) -> str:
    """An empty ``imsbox`` database for this test."""
    pg_server.reset()
    return pg_server.url


@pytest.fixture
def redis_url(redis_server: ThrowawayRedis) -> str:
    """An empty Redis for this test."""
    import redis
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
