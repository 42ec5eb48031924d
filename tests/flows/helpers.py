"""Helpers shared by the flow tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip.endpoint import Priority, ServerContext
from imsbox.sip.message import Request
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config
from imsbox.ue.client import RcsClient

DOMAIN = "ims.test"
# Every role but the conference AS: for tests that run a stand-in on its address.
CORE_ROLES = ("pcscf", "icscf", "scscf", "as", "telephony")


def alice_and_bob(tmp_path: Path, *, via_as: bool = True,
                  min_expires: int | None = None, carol: bool = False,
                  store_url: str = "", cache_url: str = "") -> Config:
    """The loopback config with alice (+15550001) and bob (+15550002) provisioned,
    and carol (+15550003) with ``carol``, passwords '<name>-secret'.  ``via_as``
    False empties the iFCs (UE to UE through the core only); ``min_expires``
    lowers the registrar's floor; ``store_url`` / ``cache_url`` go into [store]
    (a PostgreSQL store and its Redis cache instead of SQLite in the data dir)."""
    path, _ = write_loopback_config(tmp_path)
    head = "" if via_as else "ifc = []\n"
    tail = "" if min_expires is None else f"\n[registrar]\nmin_expires = {min_expires}\n"
    if store_url:
        tail += f'\n[store]\nurl = "{store_url}"\ncache = "{cache_url}"\n'
    path.write_text(head + path.read_text() + tail)
    config = load_config(path)

    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret", "+15550001")
            await add_user(store, DOMAIN, "bob", "bob-secret", "+15550002")
            if carol:
                await add_user(store, DOMAIN, "carol", "carol-secret", "+15550003")
    asyncio.run(in_store())
    return config


class RequestTap:
    """Every request a UE receives, in order (a module that serves nothing)."""

    name = "tap"
    priority = Priority.POLICY
    methods: tuple[str, ...] = ()

    def __init__(self, ue: RcsClient) -> None:
        self.requests: list[Request] = []
        ue.core.endpoint.add_module(self)

    def on_request(self, ctx: ServerContext) -> bool:
        self.requests.append(ctx.request)
        return False

    def of(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def methods_seen(self, call_id: str) -> list[str]:
        return [r.method for r in self.requests if r.call_id == call_id]

    def reinvites(self, call_id: str) -> list[Request]:
        return [r for r in self.requests
                if r.method == "INVITE" and r.call_id == call_id and r.to.tag]


def run_within(scenario: Callable[[], Awaitable[None]], limit: float) -> None:
    """Run ``scenario`` on a new loop; TimeoutError after ``limit`` seconds."""
    asyncio.run(asyncio.wait_for(scenario(), limit))


def client(config: Config, name: str, **kwargs: Any) -> RcsClient:
    """An RCS client for a provisioned user whose password is '<name>-secret'."""
    pcscf = config.pcscf
    return RcsClient(name, f"{name}-secret", DOMAIN, pcscf=(pcscf.host, pcscf.port),
                     timers=FAST_TIMERS, **kwargs)


@contextlib.asynccontextmanager
async def network_with(config: Config, *clients: RcsClient,
                       roles: Sequence[str] | None = None) -> AsyncIterator[Network]:
    """The loopback network (``roles``: only those nodes) with ``clients`` started;
    they close before it does."""
    async with Network(config, timers=FAST_TIMERS, roles=roles) as net:
        started: list[RcsClient] = []
        try:
            for ue in clients:
                started.append(await ue.start())
            yield net
        finally:
            for ue in started:
                await ue.close()


@contextlib.asynccontextmanager
async def ues(config: Config, *names: str) -> AsyncIterator[list[TestUe]]:
    """Started test UEs for provisioned users whose password is '<name>-secret'."""
    started = [await TestUe(n, f"{n}-secret", config).start() for n in names]
    try:
        yield started
    finally:
        for ue in started:
            await ue.close()


async def settle(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until ``condition`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
