"""Redis in front of the durable store: hot state every instance shares.

``RedisCachedStore(durable, "redis://host:port/db")`` is a :class:`Store` whose
``registrations`` read the S-CSCF bindings from Redis (one hash per AOR,
filled from the durable store on a miss, written through on every change)
and whose ``nonces`` keep Digest nonce-counts in Redis only (an atomic Lua
compare-and-set, expiring with the nonce) and whose ``logins`` keep the
LoginGuard's failed-login counters in Redis only (expiring with their window);
its ``subscribers`` keep the HSS
reads of every request a second in this process (:mod:`imsbox.store.cache`). Everything else is the durable
store's (PostgreSQL or SQLite), which stays the source of truth: a Redis
restart loses nothing but the nonce-counts, whose nonces then get a fresh
challenge, and the login counters (a guesser gets a fresh budget once). Reg
event subscriptions stay in the durable store: they must outlive a Redis
restart and their versions must never go back.

redis-py's asyncio client (with hiredis parsing replies) never blocks the
loop. Redis being away shows as :class:`StoreUnavailable`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Self, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import (
    LoginRepository, NonceRepository, RegistrationRepository, Store, StoreError, StoreUnavailable,
)
from .cache import CachedSubscribers
from .models import Binding, LoginState

__all__ = ["RedisCachedStore"]

T = TypeVar("T")

PREFIX = "imsbox:"
FILLED = "\x00filled"  # field that marks an AOR's hash as a full copy of the store
CACHE_TTL = 300  # seconds a filled AOR stays cached without activity

# Write through only into a hash that is a full copy: never create a partial one.
_PUT_IF_FILLED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 0
"""
_DEL_IF_FILLED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return redis.call('HDEL', KEYS[1], ARGV[2])
end
return 0
"""
# Fill only where no other instance filled (or wrote) first.
_FILL = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 0
"""
# nonce-count: accept only a higher one (RFC 7616 3.4.6), atomically across instances.
_ADVANCE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > last then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return 1
end
return 0
"""
# A failed login, atomically: the account's count, the address's window, the pair's trust.
_LOGIN_FAILED = """
redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
return 0
"""


class _Redis:
    """The client, every error turned into StoreError / StoreUnavailable."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, retry_on_timeout=False)

    async def call(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis cache {self.url} unavailable: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"Redis cache {self.url}: {exc}") from exc

    async def script(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.call(self.client.eval(source, len(keys), *keys, *args))


class RedisCachedStore(Store):
    """``durable`` for everything that must survive, Redis for the hot shared part."""

    def __init__(self, durable: Store, url: str) -> None:
        self.durable = durable
        self._redis = _Redis(url)
        # the HSS reads of every request, kept a second in this process (store.cache)
        self.subscribers = CachedSubscribers(durable.subscribers)
        self.flows = durable.flows
        self.messages = durable.messages
        self.files = durable.files       # big and durable: the store's, never Redis
        self.conferences = durable.conferences
        self.service_data = durable.service_data
        self.parking = durable.parking   # orbits are few and must be durable: the store's
        self.registrations = RedisRegistrations(durable.registrations, self._redis)
        self.nonces = RedisNonces(self._redis, durable.nonces)
        # durable: outlive a Redis restart, versions never go back (an atomic UPDATE)
        self.reg_subscriptions = durable.reg_subscriptions
        self.logins = RedisLogins(self._redis)

    async def open(self) -> Self:
        await self.durable.open()
        try:
            await self._redis.call(self._redis.client.ping())
        except StoreError as exc:
            await self.durable.close()
            raise type(exc)(f"{exc}; check that Redis runs there, or fix the URL (--cache "
                            "or [store] cache in imsbox.toml)") from exc
        return self

    async def close(self) -> None:
        try:
            await self._redis.client.aclose()
        finally:
            await self.durable.close()


def _key(aor: str) -> str:
    return f"{PREFIX}reg:{aor}"


def _dump(binding: Binding, refreshed: float) -> str:
    b = binding
    return json.dumps([b.contact, b.expires_at, b.q, b.instance_id, b.reg_id, b.params,
                       list(b.path), b.call_id, b.cseq, b.flow, refreshed])


def _load(text: str | bytes) -> tuple[Binding, float]:
    (contact, expires_at, q, instance_id, reg_id, params, path, call_id, cseq, flow,
     refreshed) = json.loads(text)
    return Binding(contact, expires_at, q, instance_id, reg_id, params, tuple(path), call_id,
                   cseq, flow), refreshed


class RedisRegistrations(RegistrationRepository):
    """Bindings read from Redis, the durable store written first (write-through)."""

    def __init__(self, durable: RegistrationRepository, redis: _Redis) -> None:
        self._durable = durable
        self._r = redis
        self._seq = 0

    def _stamp(self) -> float:
        """Refresh order of bindings (most recent first among equal q)."""
        self._seq += 1
        return time.time() + self._seq * 1e-9

    async def save(self, aor: str, binding: Binding) -> None:
        await self._durable.save(aor, binding)
        await self._r.script(_PUT_IF_FILLED, [_key(aor)],
                             [FILLED, binding.key, _dump(binding, self._stamp()), CACHE_TTL])

    async def remove(self, aor: str, key: str) -> bool:
        removed = await self._durable.remove(aor, key)
        await self._r.script(_DEL_IF_FILLED, [_key(aor)], [FILLED, key])
        return removed

    async def remove_all(self, aor: str) -> int:
        count = await self._durable.remove_all(aor)
        await self._r.call(self._r.client.delete(_key(aor)))
        return count

    async def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        cutoff = time.time() if now is None else now
        cached: dict[bytes, bytes] = await self._r.call(
            self._r.client.hgetall(_key(aor)))  # type: ignore[arg-type]
        if FILLED.encode() not in cached:
            return await self._fill(aor, cutoff)
        found = [_load(v) for k, v in cached.items() if k != FILLED.encode()]
        live = [(b, at) for b, at in found if b.expires_at > cutoff]
        live.sort(key=lambda pair: (-(pair[0].q if pair[0].q is not None else 1.0), -pair[1]))
        return [b for b, _ in live]

    async def _fill(self, aor: str, cutoff: float) -> list[Binding]:
        # everything, expired too, so the copy matches the store until expire() runs
        every = await self._durable.bindings(aor, now=float("-inf"))
        base = time.time()
        fields: list[str] = [FILLED, "1"]
        for rank, b in enumerate(every):  # the store's order: first is most recent
            fields += [b.key, _dump(b, base - rank * 1e-3)]
        await self._r.script(_FILL, [_key(aor)], [CACHE_TTL, *fields])
        return [b for b in every if b.expires_at > cutoff]

    async def registered_aors(self, now: float | None = None) -> list[str]:
        return await self._durable.registered_aors(now)

    async def expire(self, now: float | None = None) -> list[tuple[str, Binding]]:
        gone = await self._durable.expire(now)
        for aor, binding in gone:
            await self._r.script(_DEL_IF_FILLED, [_key(aor)], [FILLED, binding.key])
        return gone

    async def next_expiry(self) -> float | None:
        return await self._durable.next_expiry()


class RedisNonces(NonceRepository):
    """Counts in Redis (hot, short-lived); the signing keys in the durable store."""

    def __init__(self, redis: _Redis, durable: NonceRepository) -> None:
        self._r = redis
        self._durable = durable

    async def advance(self, nonce: str, nc: int, expires_at: float) -> bool:
        if expires_at <= time.time():
            return False
        done = await self._r.script(_ADVANCE, [f"{PREFIX}nc:{nonce}"],
                                    [nc, int(expires_at * 1000)])
        return bool(done)

    async def expire(self, now: float | None = None) -> int:
        return 0  # Redis drops each record itself at its nonce's expiry (PXAT)

    async def shared_secret(self, name: str) -> bytes:
        return await self._durable.shared_secret(name)


def _ms(at: float) -> int:
    return int(at * 1000)


class RedisLogins(LoginRepository):
    """Per account a hash (failures, last), per address a sorted set of failure
    times, per trusted (account, address, port) a key; each expires by itself."""

    def __init__(self, redis: _Redis) -> None:
        self._r = redis
        self._seq = 0

    @staticmethod
    def _keys(account: str, address: str, port: int) -> tuple[str, str, str]:
        return (f"{PREFIX}login:acct:{account}", f"{PREFIX}login:src:{address}",
                f"{PREFIX}login:ok:{account}\x00{address}\x00{port}")

    async def state(self, account: str, address: str, port: int,
                    since: float) -> LoginState:
        acct, src, ok = self._keys(account, address, port)
        pipe = self._r.client.pipeline(transaction=False)
        pipe.hmget(acct, ["failures", "last"])
        pipe.zrangebyscore(src, f"({since!r}", "+inf", withscores=True)
        pipe.get(ok)
        (failures, last), times, trusted = await self._r.call(pipe.execute())
        return LoginState(int(failures or 0), float(last or 0.0),
                          tuple(score for _, score in times),
                          None if trusted is None else float(trusted))

    async def failed(self, account: str, address: str, port: int, now: float, *,
                     source_window: float, keep: float) -> None:
        self._seq += 1
        member = f"{now!r}:{id(self)}:{self._seq}"   # one entry per failure, also at one time
        await self._r.script(_LOGIN_FAILED, self._keys(account, address, port),
                             [repr(now), _ms(now + keep), repr(now - source_window),
                              _ms(now + source_window), member])

    async def succeeded(self, account: str, address: str, port: int, now: float, *,
                        reset_account: bool, keep: float) -> None:
        acct, _, ok = self._keys(account, address, port)
        pipe = self._r.client.pipeline(transaction=True)
        if reset_account:
            pipe.delete(acct)
        pipe.set(ok, repr(now), pxat=_ms(now + keep))
        await self._r.call(pipe.execute())

    async def expire(self, now: float | None = None) -> int:
        return 0  # Redis drops each record itself (PEXPIREAT / PXAT)
