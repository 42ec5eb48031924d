"""Hostile or mistaken UEs against the in-process IMS core, over loopback UDP.

Only authenticated subscribers send into the network, and identities asserted
to the core come from the P-CSCF, never from a UE (PRODUCT.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(30)
DOMAIN = "ims.test"


@contextlib.asynccontextmanager
async def core(config: Config, *names: str) -> AsyncIterator[list[TestUe]]:
    """The network plus started (not registered) UEs; passwords are NAME-secret."""
    async with Network(config, timers=FAST_TIMERS):
        started = [await TestUe(n, f"{n}-secret", config).start() for n in names]
        try:
            yield started
        finally:
            for ue in started:
                await ue.close()


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)
    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(in_store())
    asyncio.run(asyncio.wait_for(scenario(config), 20))


def test_wrong_password_and_unknown_user_get_the_same_answers(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with core(config, "alice", "mallory") as (alice, mallory):
            wrong = await alice.register(password="guess")
            unknown = await mallory.register()
            assert wrong.statuses == [401, 403], wrong.statuses
            # No way to tell an existing user from a made-up one.
            assert unknown.statuses == wrong.statuses, unknown.statuses
            assert unknown.final.reason == wrong.final.reason
            assert alice.registration is None
            # and the right password still works afterwards
            assert (await alice.register()).statuses == [401, 200]
    run(tmp_path, scenario)


def test_spoofed_p_asserted_identity_never_reaches_the_far_ue(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with core(config, "alice", "bob") as (alice, bob):
            assert (await alice.register()).ok and (await bob.register()).ok
            spoof = [("P-Asserted-Identity", "<sip:admin@ims.test>"),
                     ("P-Asserted-Identity", "<tel:+15559999>")]
            response = await alice.message("sip:bob@ims.test", "trust me", spoof).final()
            assert response.status == 200
            message = await asyncio.wait_for(bob.requests.get(), 5)
            pai = message.headers.get_all("P-Asserted-Identity")
            assert pai and all("admin" not in v and "15559999" not in v for v in pai), pai
            assert "sip:alice@ims.test" in pai[0]
    run(tmp_path, scenario)


def test_request_from_unregistered_ue_is_forbidden(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with core(config, "alice", "bob") as (alice, bob):
            assert (await bob.register()).ok
            response = await alice.message("sip:bob@ims.test", "let me in").final()
            assert response.status == 403
            call = await alice.call("sip:bob@ims.test", b"")
            final = await call.wait_final()
            assert final is not None and final.status == 403
            await asyncio.sleep(0.2)
            assert bob.requests.empty() and bob.ua is not None and bob.ua.incoming.empty()
    run(tmp_path, scenario)


def test_max_forwards_exhausted_gets_483(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with core(config, "alice", "bob") as (alice, bob):
            assert (await alice.register()).ok and (await bob.register()).ok
            at_pcscf = await alice.message("sip:bob@ims.test", "x",
                                           [("Max-Forwards", "0")]).final()
            assert at_pcscf.status == 483
            # P-CSCF, S-CSCF and I-CSCF each take one: the terminating S-CSCF gets 0.
            inside = await alice.message("sip:bob@ims.test", "x",
                                         [("Max-Forwards", "3")]).final()
            assert inside.status == 483
            await asyncio.sleep(0.2)
            assert bob.requests.empty()
    run(tmp_path, scenario)
