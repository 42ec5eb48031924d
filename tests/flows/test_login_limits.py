"""Failed logins through the whole core: no lockout by a stranger, bounded
guessing from rotating source addresses (LoginGuard in the S-CSCF's registrar,
keyed on the UE flow the P-CSCF saw; docs/security.md)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(60)
DOMAIN = "ims.test"


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)   # the documented LoginLimits defaults

    async def main() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
        async with Network(config, timers=FAST_TIMERS):
            await scenario(config)
    asyncio.run(asyncio.wait_for(main(), 50))


def test_wrong_logins_for_a_made_up_user_do_not_lock_alice_out(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        stranger = await TestUe("nobody", "guess", config).start()
        try:
            for _ in range(5):   # checked, then held back: never a 2xx
                assert (await stranger.register()).final.status == 403
        finally:
            await stranger.close()
        alice = await TestUe("alice", "alice-secret", config).start()   # same 127.0.0.1
        try:
            assert (await alice.register()).statuses == [401, 200]
        finally:
            await alice.close()
    run(tmp_path, scenario)


async def guess(config: Config, host: str, password: str) -> bool:
    """One wrong password for alice from ``host``; True if the registrar checked it."""
    attacker = await TestUe("alice", password, config, host=host).start()
    try:
        reg = await attacker.register()
    finally:
        await attacker.close()
    assert not reg.ok
    if reg.statuses == [401, 403]:
        assert reg.final.headers.get("Retry-After") is None
        return True
    # Refused before any challenge or password check, with a time to come back.
    assert reg.statuses == [403], reg.statuses
    assert int(reg.final.headers.get("Retry-After") or 0) >= 1
    return False


def test_rotating_source_addresses_do_not_multiply_guesses(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice = await TestUe("alice", "alice-secret", config).start()
        try:
            assert (await alice.register()).ok
            checked, start = 0, time.monotonic()
            for n in range(30):
                checked += await guess(config, f"127.0.{n // 200}.{10 + n % 200}",
                                       f"guess-{n}")
                if n % 10 == 9:
                    # Alice re-registering from her own flow is never held back.
                    assert (await alice.register()).statuses == [401, 200]
            # 3 free failures, then a back-off of 1, 2, 4 ... s for the account:
            # t seconds of guessing from 30 addresses check 3 + log2(t + 1) + 1.
            elapsed = time.monotonic() - start
            assert 3 <= checked <= 4 + math.log2(elapsed + 1), (checked, elapsed)
            print(f"{checked} of 30 guesses checked in {elapsed:.1f} s")
        finally:
            await alice.close()
    run(tmp_path, scenario)
