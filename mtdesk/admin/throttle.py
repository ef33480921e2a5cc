"""Throttling of failed authentication (bearer tokens and sign-ins), shared by every worker
through Redis.

What a caller may rely on:

- Each failed bearer token counts against the client's address and against the token's
  first characters (its "prefix": a guesser cycling addresses still hits one counter per
  key it tries). Counters live ``window_s`` from their first failure (a fixed window).
- Once either counter reaches its limit (``MTDESK_AUTH_FAILURES`` for a prefix, ten times
  that for an address, which may hide many users behind one NAT), every bearer request
  from that address or with that prefix is a 429 with ``Retry-After`` until the window
  ends, before the token is even compared: a right guess inside the block learns nothing.
- Redis holds only digests of addresses and prefixes, never a token's characters.
- A success does not reset the counters (it would let a guesser interleave a known key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mtdesk.core import keys
from mtdesk.core.redis import Redis

PREFIX_CHARS = 12  # "mtd_" and 8 random characters: distinct per key, not enough to guess
ADDRESS_FACTOR = 10


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class FailureWindows:
    """Failure counters in fixed windows: each lives ``window_s`` from its first failure."""

    def __init__(self, redis: Redis, window_s: int) -> None:
        self._redis = redis
        self._window = window_s

    async def blocked_for(self, counters: Sequence[tuple[str, int]]) -> int:
        """Seconds until every ``(key, limit)`` counter is under its limit again (0: now)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _ in counters:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute()
        waits = [max(1, int(ttl)) for (_, limit), count, ttl
                 in zip(counters, replies[0::2], replies[1::2], strict=True) if int(count or 0) >= limit]
        return max(waits, default=0)

    async def failed(self, *counter_keys: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in counter_keys:
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
            await pipe.execute()

    async def reset(self, key: str) -> None:
        await self._redis.delete(key)


class AuthThrottle:
    def __init__(self, redis: Redis, *, limit: int, window_s: int) -> None:
        self._windows = FailureWindows(redis, window_s)
        self._limit = limit

    def _keys(self, address: str, token: str) -> tuple[str, str]:
        return (keys.login_failures("bearer-addr", _digest(address)),
                keys.login_failures("bearer-key", _digest(token[:PREFIX_CHARS])))

    async def blocked_for(self, address: str, token: str) -> int:
        """Seconds until this address and token may try again (0: now)."""
        by_addr, by_key = self._keys(address, token)
        return await self._windows.blocked_for(
            [(by_addr, self._limit * ADDRESS_FACTOR), (by_key, self._limit)])

    async def failed(self, address: str, token: str) -> None:
        await self._windows.failed(*self._keys(address, token))


class LoginThrottle:
    """Counts failed sign-ins per e-mail and per client address in fixed windows."""

    def __init__(self, redis: Redis, *, limit: int, window_s: int) -> None:
        self._windows = FailureWindows(redis, window_s)
        self._limit = limit

    def _keys(self, email: str, address: str) -> tuple[str, str]:
        return (keys.login_failures("email", _digest(email.strip().lower())),
                keys.login_failures("addr", _digest(address)))

    async def blocked_for(self, email: str, address: str) -> int:
        """Seconds until another attempt is allowed (0: allowed now)."""
        by_email, by_addr = self._keys(email, address)
        return await self._windows.blocked_for(
            [(by_email, self._limit), (by_addr, self._limit * ADDRESS_FACTOR)])

    async def failed(self, email: str, address: str) -> None:
        await self._windows.failed(*self._keys(email, address))

    async def succeeded(self, email: str) -> None:
        await self._windows.reset(self._keys(email, "")[0])
