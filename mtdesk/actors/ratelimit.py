"""Send rate limits per business account, shared by every shard through Redis.

A fixed one-second window per (channel, account): ``keys.rate(channel, account, second)``
counts the sends granted in that second. One Lua call both checks and counts, so
concurrent shards never grant more than the limit in a window. Limits: Messenger and
Instagram ``settings.page_sends_per_s`` (300) per Page / Instagram account, WhatsApp
``settings.whatsapp_mps`` (80 by default, up to 1,000) per phone number, and at most
:data:`COEXISTENCE_MPS` (20) for a number also used in the WhatsApp Business app
(coexistence: Meta's limit for such numbers; :meth:`SendRateLimiter.pace_coexistence`).

Callers rely on: ``await limiter.acquire(channel, account_id)`` returns once the send is
allowed (sleeping, never busy-waiting, until a later window when this one is full), and
raises :class:`~mtdesk.core.errors.StoreUnavailable` when Redis cannot be reached.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from mtdesk.core import keys
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.events import Channel
from mtdesk.core.redis import UNAVAILABLE, Redis
from mtdesk.core.scripts import LuaScript
from mtdesk.core.settings import Settings

# A Lua function, so another script can take a send permit in its own round trip:
# mt_acquire(window counter key, limit (number)) -> 1 when granted (and counted), else 0.
# Counted first and taken back when the window is full (one command per permit, not a
# read and a write); the counter lives 2 s from its first count: long enough for late
# callers of that second, then gone.
ACQUIRE_LUA_FUNCTION: Final = """
local function mt_acquire(key, limit)
  local used = redis.call('INCR', key)
  if used > limit then
    if used == 1 then redis.call('DEL', key) else redis.call('DECR', key) end
    return 0
  end
  if used == 1 then
    redis.call('EXPIRE', key, 2)
  end
  return 1
end
"""

# KEYS[1] window counter; ARGV[1] limit. Returns 1 when granted (and counted), else 0.
_ACQUIRE: Final = ACQUIRE_LUA_FUNCTION + """
return mt_acquire(KEYS[1], tonumber(ARGV[1]))
"""

Sleep = Callable[[float], Awaitable[None]]

COEXISTENCE_MPS: Final = 20  # messages/s Meta allows a number shared with the Business app


class SendPermits(Protocol):
    """Where a sender takes one send permit before each attempt (the limiter itself, or
    a reply's run holding a permit taken in advance)."""

    async def acquire(self, channel: Channel, account_id: str) -> None: ...


class SendRateLimiter:
    """Fixed-window limiter; one instance per process, any number of processes."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        overrides: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock or SystemClock()
        self._sleep = sleep
        # (channel, account_id) → sends per second, e.g. a WhatsApp number on a higher tier.
        self._overrides = dict(overrides or {})
        self._script = LuaScript(_ACQUIRE, name="acquire").bind(redis)

    def limit(self, channel: Channel, account_id: str) -> int:
        """Sends per second allowed for this account."""
        override = self._overrides.get((channel, account_id))
        if override is not None:
            return override
        if channel == "whatsapp":
            return self._settings.whatsapp_mps
        return self._settings.page_sends_per_s

    def set_limit(self, channel: Channel, account_id: str, per_second: int) -> None:
        self._overrides[(channel, account_id)] = per_second

    def pace_coexistence(self, channel: Channel, account_id: str) -> None:
        """The account is a WhatsApp number shared with the Business app: at most
        :data:`COEXISTENCE_MPS` sends per second (less if it was limited lower)."""
        limit = min(self.limit(channel, account_id), COEXISTENCE_MPS)
        self._overrides[(channel, account_id)] = limit

    def window(self, channel: Channel, account_id: str) -> tuple[str, int]:
        """The current window's counter key and this account's limit: what a script
        passes to ``mt_acquire`` (:data:`ACQUIRE_LUA_FUNCTION`) to take a permit."""
        second = math.floor(self._clock.now())
        return keys.rate(channel, account_id, second), self.limit(channel, account_id)

    async def try_acquire(self, channel: Channel, account_id: str) -> bool:
        """Count one send in the current window if there is room; True when granted."""
        second = math.floor(self._clock.now())
        key = keys.rate(channel, account_id, second)
        try:
            granted = await self._script(keys=[key], args=[self.limit(channel, account_id)])
        except UNAVAILABLE as exc:
            raise StoreUnavailable("rate limiter: Redis unreachable") from exc
        return bool(granted)

    async def acquire(self, channel: Channel, account_id: str) -> None:
        """Wait until one send to ``account_id`` on ``channel`` is allowed, and count it."""
        while not await self.try_acquire(channel, account_id):
            now = self._clock.now()
            # Sleep to just past the next window's start (at least 1 ms).
            await self._sleep(max(math.floor(now) + 1 - now, 0.001))
