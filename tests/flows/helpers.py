"""Helpers shared by the flow tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from imsbox.config import Config
from imsbox.serve import Network
from imsbox.ue.client import RcsClient
from imsbox.testing import FAST_TIMERS, TestUe

DOMAIN = "ims.test"
# Every role but the conference AS: for tests that run a stand-in on its address.
CORE_ROLES = ("pcscf", "icscf", "scscf", "as")


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
