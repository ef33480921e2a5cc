"""Throttling of failed bearer authentication, shared by every worker through Redis.

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

from mtdesk.core import keys
from mtdesk.core.redis import Redis

PREFIX_CHARS = 12  # "mtd_" and 8 random characters: distinct per key, not enough to guess
ADDRESS_FACTOR = 10


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class AuthThrottle:
    def __init__(self, redis: Redis, *, limit: int, window_s: int) -> None:
        self._redis = redis
        self._limit = limit
        self._window = window_s

    def _keys(self, address: str, token: str) -> tuple[str, str]:
        return (keys.login_failures("bearer-addr", _digest(address)),
                keys.login_failures("bearer-key", _digest(token[:PREFIX_CHARS])))

    async def blocked_for(self, address: str, token: str) -> int:
        """Seconds until this address and token may try again (0: now)."""
        by_addr, by_key = self._keys(address, token)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(by_addr)
            pipe.get(by_key)
            pipe.ttl(by_addr)
            pipe.ttl(by_key)
            a_count, k_count, a_ttl, k_ttl = await pipe.execute()
        waits = []
        if int(a_count or 0) >= self._limit * ADDRESS_FACTOR:
            waits.append(max(1, int(a_ttl)))
        if int(k_count or 0) >= self._limit:
            waits.append(max(1, int(k_ttl)))
        return max(waits, default=0)

    async def failed(self, address: str, token: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(address, token):
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
            await pipe.execute()
