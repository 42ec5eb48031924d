"""Several instances of one role: pick one per key, fail over to the others.

A :class:`InstancePool` holds the SIP URIs of the instances of one network
function (``[scscf] pool``, ``[messaging_as] pool`` in imsbox.toml). A node that
sends to the role asks :meth:`InstancePool.order` for the instances in the order
to try them: the key's own instance first (a stable hash of, say, the served
user, so one user's traffic keeps going to one instance while it is up), then
the others; an instance that did not answer (:meth:`InstancePool.mark_down`)
goes last for ``down_for`` seconds, so the next requests do not wait for it
again. This is the I-CSCF's and S-CSCF's choice of TS 23.380 restoration: the
state every instance needs is in the shared store, so any live one can serve.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable

from .headers import HeaderError
from .message import Response

__all__ = ["DOWN_FOR", "InstancePool", "is_local_failure"]

DOWN_FOR = 10.0  # seconds an instance that did not answer is tried last


class InstancePool:
    """The instances (SIP URIs, as configured) of one role, in configured order."""

    def __init__(self, uris: Iterable[str], *, down_for: float = DOWN_FOR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.uris = tuple(dict.fromkeys(uris))
        self.down_for = down_for
        self.clock = clock
        self._down: dict[str, float] = {}   # uri -> until

    def __len__(self) -> int:
        return len(self.uris)

    def __contains__(self, uri: object) -> bool:
        return uri in self.uris

    def order(self, key: str = "", first: str | None = None) -> list[str]:
        """Every instance, in the order to try: ``first`` (when it is one of ours,
        e.g. the S-CSCF the HSS assigned) else the key's hash, then round from there;
        instances marked down after the live ones."""
        if not self.uris:
            return []
        hashed = zlib.crc32(key.encode()) % len(self.uris)
        start = self.uris.index(first) if first in self.uris else hashed
        ring = list(self.uris[start:] + self.uris[:start])
        now = self.clock()
        return [u for u in ring if self._down.get(u, 0.0) <= now] + \
            [u for u in ring if self._down.get(u, 0.0) > now]

    def next_after(self, tried: Iterable[str], key: str = "",
                   first: str | None = None) -> str | None:
        """The first instance of :meth:`order` not in ``tried``; None when all were."""
        done = set(tried)
        return next((u for u in self.order(key, first) if u not in done), None)

    def mark_down(self, uri: str) -> None:
        """``uri`` did not answer: try it last for a while."""
        self._down[uri] = self.clock() + self.down_for

    def mark_up(self, uri: str) -> None:
        self._down.pop(uri, None)

    def is_down(self, uri: str) -> bool:
        return self._down.get(uri, 0.0) > self.clock()


def is_local_failure(response: Response) -> bool:
    """A 408/500/503 our own transaction made up (no To-tag: no UAS answered):
    the next hop is down or unreachable, so another instance may take the request."""
    if response.status not in (408, 500, 503):
        return False
    try:
        return response.to.tag is None
    except HeaderError:  # a broken To: not ours either way
        return False
