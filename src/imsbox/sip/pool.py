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

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Protocol

from .endpoint import ClientContext
from .headers import HeaderError
from .message import Request, Response
from .transport.base import Destination, Flow
from .ua.dialog import build_request

__all__ = ["DOWN_FOR", "InstancePool", "Prober", "is_local_failure", "keep_probing"]

log = logging.getLogger(__name__)

DOWN_FOR = 10.0      # seconds an instance that did not answer is tried last
PROBE_EVERY = 1.0    # seconds between OPTIONS probes of the other instances
PROBE_TIMEOUT = 1.0  # seconds a probe waits for any answer


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
        """``uri`` did not answer: try it last for a while (a probe answered
        clears it sooner)."""
        if uri in self.uris:
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


class Prober(Protocol):
    """What probing needs of a node: its endpoint's ``request``."""

    def request(self, request: Request, dest: Destination | None = None, *,
                branch: str | None = None, flow: Flow | None = None) -> ClientContext: ...


async def keep_probing(pool: InstancePool, endpoint: Prober, own: str,
                       every: float = PROBE_EVERY, timeout: float = PROBE_TIMEOUT) -> None:
    """OPTIONS to every other instance each ``every`` seconds: any answer (even 403
    or 404) means it is up, none within ``timeout`` marks it down. A request then
    skips a dead instance at once instead of waiting for its own timeout
    (a non-INVITE gets no 100 Trying to show the next hop is alive, RFC 4320)."""
    while True:
        await asyncio.gather(*(_probe(pool, endpoint, own, uri, timeout)
                               for uri in pool.uris if uri != own))
        await asyncio.sleep(every)


async def _probe(pool: InstancePool, endpoint: Prober, own: str, uri: str,
                 timeout: float) -> None:
    options = build_request("OPTIONS", uri, f"<{own}>", f"<{uri}>",
                            headers=[("Max-Forwards", "0")])
    client = endpoint.request(options)
    loop = asyncio.get_running_loop()
    handle = loop.call_later(timeout, client.give_up)
    try:
        response = await client.final()
    except (OSError, ValueError):
        pool.mark_down(uri)
        return
    finally:
        handle.cancel()
    if is_local_failure(response):
        if not pool.is_down(uri):
            log.warning("instance %s does not answer: tried last for now", uri)
        pool.mark_down(uri)
    elif pool.is_down(uri):
        log.info("instance %s answers again", uri)
        pool.mark_up(uri)
