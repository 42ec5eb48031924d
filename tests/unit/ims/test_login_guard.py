"""LoginGuard: bounded guesses per account and per source, no lockout of the real user."""

from __future__ import annotations

import time
from pathlib import Path

from imsbox.ims.login_guard import LoginGuard, LoginLimits, SharedLoginGuard
from imsbox.store import SqliteStore

ALICE = "sip:alice@ims.test"
HOME = ("127.0.0.1", 5062)         # alice's own flow
ATTACKER = ("127.0.0.1", 40000)    # same address, another port


def guesses_allowed(guard: LoginGuard, account: str, sources: list[tuple[str, int]],
                    seconds: float, step: float = 0.01) -> int:
    """How many wrong passwords get checked when tried as fast as possible."""
    checked, now, i = 0, 0.0, 0
    while now < seconds:
        source = sources[i % len(sources)]
        i += 1
        if guard.retry_after(account, source, now) is None:
            checked += 1
            guard.failed(account, source, now)
        now += step
    return checked


def test_failures_for_another_account_do_not_touch_alice() -> None:
    guard = LoginGuard()
    for n in range(10):
        if guard.retry_after("sip:nobody@ims.test", ATTACKER, float(n)) is None:
            guard.failed("sip:nobody@ims.test", ATTACKER, float(n))
    assert guard.retry_after(ALICE, HOME, 10.0) is None


def test_account_backs_off_exponentially_after_the_free_failures() -> None:
    guard = LoginGuard(LoginLimits(account_free_failures=3, account_backoff=1.0,
                                   account_backoff_max=8.0, source_failures=1000))
    for _ in range(3):
        assert guard.retry_after(ALICE, ATTACKER, 0.0) is None
        guard.failed(ALICE, ATTACKER, 0.0)
    assert guard.retry_after(ALICE, ATTACKER, 0.5) == 0.5        # 1 s back-off
    assert guard.retry_after(ALICE, ATTACKER, 1.0) is None
    guard.failed(ALICE, ATTACKER, 1.0)
    assert guard.retry_after(ALICE, ATTACKER, 2.0) == 1.0        # 2 s back-off
    guard.failed(ALICE, ATTACKER, 3.0)
    assert guard.retry_after(ALICE, ATTACKER, 3.0) == 4.0        # 4 s
    for t in (7.0, 15.0, 23.0):
        guard.failed(ALICE, ATTACKER, t)
    assert guard.retry_after(ALICE, ATTACKER, 23.0) == 8.0       # the ceiling


def test_rotating_source_addresses_does_not_buy_guesses() -> None:
    limits = LoginLimits(account_free_failures=3, account_backoff=1.0, account_backoff_max=60.0)
    guard = LoginGuard(limits)
    sources = [(f"127.0.{i // 250}.{i % 250 + 1}", 5060) for i in range(5000)]
    # 10 s at 100 attempts/s, every one from a new address: 3 free + 1 s, 2 s, 4 s.
    assert guesses_allowed(guard, ALICE, sources, seconds=10.0) <= 6


def test_one_source_sweeping_accounts_runs_out_of_budget() -> None:
    guard = LoginGuard(LoginLimits(source_failures=20, source_window=60.0))
    checked = 0
    for n in range(200):
        account = f"sip:user{n}@ims.test"
        if guard.retry_after(account, ATTACKER, n * 0.01) is None:
            checked += 1
            guard.failed(account, ATTACKER, n * 0.01)
    assert checked == 20
    wait = guard.retry_after("sip:user999@ims.test", ATTACKER, 2.0)
    assert wait is not None and 57.0 < wait <= 60.0
    assert guard.retry_after("sip:user999@ims.test", ATTACKER, 61.0) is None  # window passed


def test_the_real_user_is_not_locked_out_by_a_guesser_on_the_same_host() -> None:
    guard = LoginGuard()
    guard.succeeded(ALICE, HOME, 0.0)                 # alice registered from her flow
    guesses_allowed(guard, ALICE, [ATTACKER], seconds=30.0)
    assert guard.retry_after(ALICE, ATTACKER, 30.0) is not None
    assert guard.retry_after(ALICE, HOME, 30.0) is None   # her refresh is checked
    guard.succeeded(ALICE, HOME, 30.0)
    assert guard.retry_after(ALICE, HOME, 31.0) is None


def test_a_failure_from_the_trusted_flow_ends_the_trust() -> None:
    guard = LoginGuard(LoginLimits(account_free_failures=0))
    guard.succeeded(ALICE, HOME, 0.0)
    guard.failed(ALICE, HOME, 1.0)
    assert guard.retry_after(ALICE, HOME, 1.0) is not None


def test_tables_stay_bounded() -> None:
    guard = LoginGuard(LoginLimits(max_entries=100))
    for n in range(10_000):
        guard.failed(f"sip:u{n}@ims.test", (f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1), 0.0)
        guard.succeeded(f"sip:v{n}@ims.test", ("127.0.0.1", n), 0.0)
    assert all(size <= 100 for size in guard.table_sizes())


async def test_the_shared_guard_decides_as_the_local_one_over_a_store(tmp_path: Path) -> None:
    """The same rules, the counts in the store (what two S-CSCFs share): the same
    attempts get the same answers."""
    limits = LoginLimits(account_free_failures=2, account_backoff=1.0, source_failures=4,
                         source_window=30.0)
    local = LoginGuard(limits)
    async with SqliteStore.in_data_dir(tmp_path) as store:
        shared = SharedLoginGuard(store.logins, limits)
        start = time.time()
        script = [(ALICE, HOME, True)] + [(ALICE, ATTACKER, False)] * 5 + \
            [("sip:bob@ims.test", ("192.0.2.7", 1000 + n), False) for n in range(5)] + \
            [(ALICE, HOME, True), (ALICE, ATTACKER, True)]
        waits = []
        for step, (account, source, ok) in enumerate(script):
            now = start + step * 0.5
            wait = local.retry_after(account, source, now)
            assert await shared.retry_after(account, source, now) == wait, step
            waits.append(wait)
            if wait is None:
                local.succeeded(account, source, now) if ok else local.failed(account, source, now)
                await (shared.succeeded if ok else shared.failed)(account, source, now)
        refused = [step for step, wait in enumerate(waits) if wait is not None]
        assert refused and 0 not in refused and len(script) - 2 not in refused  # alice's own
