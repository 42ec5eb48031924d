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
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

from ..config import LoginLimits

__all__ = ["LoginGuard", "Source"]

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


class LoginGuard:
    """Sans-I/O: ``retry_after()`` before checking a password, then
    ``failed()`` or ``succeeded()``; the clock is the caller's."""

    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits or LoginLimits()
        bound = self.limits.max_entries
        self._accounts: _Bounded[str, _Account] = _Bounded(bound)
        self._sources: _Bounded[str, list[float]] = _Bounded(bound)   # failure times
        self._good: _Bounded[tuple[str, Source], float] = _Bounded(bound)  # success time

    def retry_after(self, account: str, source: Source, now: float) -> float | None:
        """None: check the credentials now.  Otherwise refuse without checking,
        and the caller may retry after that many seconds."""
        if self._trusted(account, source, now):
            return None
        waits = [w for w in (self._account_wait(account, now), self._source_wait(source[0], now))
                 if w > 0]
        return max(waits) if waits else None

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

    # -- the limits --------------------------------------------------------------------
    def _trusted(self, account: str, source: Source, now: float) -> bool:
        at = self._good.get((account, source))
        return at is not None and now - at < self.limits.remember_success

    def _account_wait(self, account: str, now: float) -> float:
        entry = self._accounts.get(account)
        if entry is None:
            return 0.0
        over = entry.failures - self.limits.account_free_failures
        if over < 0:
            return 0.0
        backoff = min(self.limits.account_backoff * 2.0 ** min(over, 32),
                      self.limits.account_backoff_max)
        return entry.last_failure + backoff - now

    def _source_wait(self, address: str, now: float) -> float:
        times = self._recent(address, now)
        if len(times) < self.limits.source_failures:
            return 0.0
        return times[-self.limits.source_failures] + self.limits.source_window - now

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
