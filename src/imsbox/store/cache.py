"""A short-lived in-process copy of the HSS reads, in front of a shared store.

Every request a node serves asks the HSS for the same few things (the public
identity, its implicit set, the subscription, the service profile with its
iFCs): four PostgreSQL round trips per hop, a dozen per pager message. They
change only when someone provisions, so :class:`CachedSubscribers` answers them
from memory for ``ttl`` seconds. A write through this process drops the whole
copy at once; a write by another process (``imsbox user add`` on another
machine) is seen after at most ``ttl`` seconds. S-CSCF assignments are never
cached: they move when an S-CSCF fails over, and every instance must see that
at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .base import SubscriberRepository
from .models import (
    Group, Psi, PsiKind, PublicIdentity, ScscfAssignment, ServiceProfile, Subscriber,
)

__all__ = ["CachedSubscribers"]

T = TypeVar("T")

MAX_ENTRIES = 20000  # then the copy starts again from empty (an hour's users, at most)


class CachedSubscribers(SubscriberRepository):
    """``durable``'s subscriber data, its per-request reads kept ``ttl`` seconds."""

    def __init__(self, durable: SubscriberRepository, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._durable = durable
        self.ttl = ttl
        self._clock = clock
        self._kept: dict[tuple[str, str], tuple[float, Any]] = {}
        self._generation = 0  # bumped by every write: a read that raced one is not kept

    async def _read(self, what: str, key: str, load: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        hit = self._kept.get((what, key))
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        generation = self._generation
        value = await load()
        if generation == self._generation:
            if len(self._kept) >= MAX_ENTRIES:
                self._kept.clear()
            self._kept[(what, key)] = (now + self.ttl, value)
        return value

    def _changed(self) -> None:
        self._generation += 1
        self._kept.clear()

    # -- the cached reads ------------------------------------------------------------
    async def get_subscriber(self, private_id: str) -> Subscriber | None:
        return await self._read("subscriber", private_id,
                                lambda: self._durable.get_subscriber(private_id))

    async def get_public_identity(self, uri: str) -> PublicIdentity | None:
        return await self._read("identity", uri, lambda: self._durable.get_public_identity(uri))

    async def public_identities(self, private_id: str) -> list[PublicIdentity]:
        return list(await self._read("identities", private_id,
                                     lambda: self._durable.public_identities(private_id)))

    async def implicit_set(self, uri: str) -> list[PublicIdentity]:
        return list(await self._read("implicit", uri, lambda: self._durable.implicit_set(uri)))

    async def get_service_profile(self, name: str) -> ServiceProfile | None:
        return await self._read("profile", name,
                                lambda: self._durable.get_service_profile(name))

    async def get_psi(self, pattern: str) -> Psi | None:
        return await self._read("psi", pattern, lambda: self._durable.get_psi(pattern))

    async def get_group(self, uri: str) -> Group | None:
        return await self._read("group", uri, lambda: self._durable.get_group(uri))

    # -- read through, never cached ----------------------------------------------------
    async def list_subscribers(self) -> list[Subscriber]:
        return await self._durable.list_subscribers()

    async def list_psis(self, kind: PsiKind | None = None) -> list[Psi]:
        return await self._durable.list_psis(kind)

    async def list_groups(self) -> list[Group]:
        return await self._durable.list_groups()

    async def get_assignment(self, private_id: str) -> ScscfAssignment | None:
        return await self._durable.get_assignment(private_id)

    async def set_assignment(self, assignment: ScscfAssignment) -> None:
        await self._durable.set_assignment(assignment)

    # -- writes: through, then the copy is dropped ----------------------------------------
    async def add_subscriber(self, subscriber: Subscriber,
                             identities: Sequence[PublicIdentity]) -> None:
        try:
            await self._durable.add_subscriber(subscriber, identities)
        finally:
            self._changed()

    async def remove_subscriber(self, private_id: str) -> bool:
        try:
            return await self._durable.remove_subscriber(private_id)
        finally:
            self._changed()

    async def put_service_profile(self, profile: ServiceProfile) -> None:
        try:
            await self._durable.put_service_profile(profile)
        finally:
            self._changed()

    async def put_psi(self, psi: Psi) -> None:
        try:
            await self._durable.put_psi(psi)
        finally:
            self._changed()

    async def remove_psi(self, pattern: str) -> bool:
        try:
            return await self._durable.remove_psi(pattern)
        finally:
            self._changed()

    async def put_group(self, group: Group) -> None:
        try:
            await self._durable.put_group(group)
        finally:
            self._changed()

    async def remove_group(self, uri: str) -> bool:
        try:
            return await self._durable.remove_group(uri)
        finally:
            self._changed()
