"""Brute-force protection for Digest logins that no stranger can turn into a lockout.

Two limits, both counted on failed logins only:

* per **account** (the public identity being registered): a few free
  failures, then each further attempt must wait a back-off that doubles per
  failure up to a ceiling.  Attempts inside the back-off are refused without
  checking the password, so guesses per account are bounded whatever the
  number of source addresses.
* per **source address**: a budget of failures per window.  An exhausted
  source is refused for every account, which stops one host sweeping many
  accounts.

A refused login is not a lockout for the real user: an (account, source
address and port) pair that logged in successfully is remembered and skips
both limits, so a re-registration from the user's own flow keeps working
while somebody else guesses from elsewhere (the same IP with another port
included); such a refresh does not reset the account's back-off.  Memory
is bounded: each table keeps at most ``max_entries`` keys and forgets the
oldest.

The rules (:class:`LoginRules`) look at one :class:`~imsbox.store.LoginState`
and are sans-I/O.  :class:`LoginGuard` keeps the counts in this process;
:class:`SharedLoginGuard` keeps them in the store (``Store.logins``: SQLite /
PostgreSQL, or Redis with ``--cache``), so the limits hold across every
S-CSCF of a pool: failures counted on one instance hold back the next
attempt on another.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

from ..config import LoginLimits
from ..store import LoginRepository, LoginState

__all__ = ["LoginGuard", "LoginRules", "SharedLoginGuard", "Source"]

K = TypeVar("K")
V = TypeVar("V")

Source = tuple[str, int]   # (address, port) of the UE as the P-CSCF saw it


@dataclass(slots=True)
class _Account:
    failures: int = 0
    last_failure: float = 0.0


class _Bounded(OrderedDict[K, V]):
    """An LRU table: touching a key makes it newest; past the bound the oldest goes."""

    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = bound

    def touch(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.bound:
            self.popitem(last=False)


class LoginRules:
    """The limits applied to one attempt's :class:`LoginState`; no I/O, no clock."""

    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits or LoginLimits()

    def trusted(self, state: LoginState, now: float) -> bool:
        """This (account, source) logged in lately: no limit applies."""
        return state.trusted_at is not None and now - state.trusted_at < \
            self.limits.remember_success

    def retry_after(self, state: LoginState, now: float) -> float | None:
        """None: check the credentials now; otherwise the seconds to wait."""
        if self.trusted(state, now):
            return None
        waits = [w for w in (self.account_wait(state, now), self.source_wait(state, now))
                 if w > 0]
        return max(waits) if waits else None

    def account_wait(self, state: LoginState, now: float) -> float:
        over = state.failures - self.limits.account_free_failures
        if state.failures == 0 or over < 0:
            return 0.0
        backoff = min(self.limits.account_backoff * 2.0 ** min(over, 32),
                      self.limits.account_backoff_max)
        return state.last_failure + backoff - now

    def source_wait(self, state: LoginState, now: float) -> float:
        window = self.limits.source_window
        recent = [t for t in state.source_failures if now - t < window]
        if len(recent) < self.limits.source_failures:
            return 0.0
        return recent[-self.limits.source_failures] + window - now

    @property
    def keep(self) -> float:
        """How long an account's failures are kept after the last one: past the
        back-off ceiling they no longer hold anybody back at once."""
        return max(self.limits.account_backoff_max * 4, 3600.0)


class SharedLoginGuard:
    """The rules over counts in the store, so every S-CSCF on it applies one
    limit; the same calls as :class:`LoginGuard`, awaited."""

    def __init__(self, logins: LoginRepository, limits: LoginLimits | None = None) -> None:
        self.rules = LoginRules(limits)
        self.logins = logins

    async def _state(self, account: str, source: Source, now: float) -> LoginState:
        return await self.logins.state(account, source[0], source[1],
                                       since=now - self.rules.limits.source_window)

    async def retry_after(self, account: str, source: Source, now: float) -> float | None:
        return self.rules.retry_after(await self._state(account, source, now), now)

    async def failed(self, account: str, source: Source, now: float) -> None:
        await self.logins.failed(account, source[0], source[1], now,
                                 source_window=self.rules.limits.source_window,
                                 keep=self.rules.keep)

    async def succeeded(self, account: str, source: Source, now: float) -> None:
        # as LoginGuard.succeeded: a trusted pair's refresh leaves the failures alone
        trusted = self.rules.trusted(await self._state(account, source, now), now)
        await self.logins.succeeded(account, source[0], source[1], now,
                                    reset_account=not trusted,
                                    keep=self.rules.limits.remember_success)


class LoginGuard:
    """Sans-I/O: ``retry_after()`` before checking a password, then
    ``failed()`` or ``succeeded()``; the clock is the caller's."""

    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits or LoginLimits()
        self.rules = LoginRules(self.limits)
        bound = self.limits.max_entries
        self._accounts: _Bounded[str, _Account] = _Bounded(bound)
        self._sources: _Bounded[str, list[float]] = _Bounded(bound)   # failure times
        self._good: _Bounded[tuple[str, Source], float] = _Bounded(bound)  # success time

    def retry_after(self, account: str, source: Source, now: float) -> float | None:
        """None: check the credentials now.  Otherwise refuse without checking,
        and the caller may retry after that many seconds."""
        return self.rules.retry_after(self._state(account, source, now), now)

    def _state(self, account: str, source: Source, now: float) -> LoginState:
        entry = self._accounts.get(account)
        return LoginState(entry.failures if entry else 0, entry.last_failure if entry else 0.0,
                          tuple(self._recent(source[0], now)), self._good.get((account, source)))

    def failed(self, account: str, source: Source, now: float) -> None:
        entry = self._accounts.get(account) or _Account()
        entry.failures += 1
        entry.last_failure = now
        self._accounts.touch(account, entry)
        self._good.pop((account, source), None)
        times = self._recent(source[0], now)
        times.append(now)
        self._sources.touch(source[0], times)

    def succeeded(self, account: str, source: Source, now: float) -> None:
        # A refresh from a trusted pair leaves the account's failures alone:
        # otherwise every re-registration of the real user would hand a
        # guesser elsewhere a fresh set of free failures.
        if not self._trusted(account, source, now):
            self._accounts.pop(account, None)
        self._good.touch((account, source), now)

    def table_sizes(self) -> tuple[int, int, int]:
        """(accounts, sources, trusted pairs) tracked: for tests and monitoring."""
        return len(self._accounts), len(self._sources), len(self._good)

    # -- the tables ----------------------------------------------------------------------
    def _trusted(self, account: str, source: Source, now: float) -> bool:
        at = self._good.get((account, source))
        return at is not None and now - at < self.limits.remember_success

    def _recent(self, address: str, now: float) -> list[float]:
        times = self._sources.get(address)
        if times is None:
            return []
        window = self.limits.source_window
        # Keep only what the budget needs: the failures inside the window.
        recent = [t for t in times if now - t < window][-self.limits.source_failures:]
        if len(recent) != len(times):
            self._sources[address] = recent
        return recent
