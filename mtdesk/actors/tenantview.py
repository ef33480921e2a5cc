"""A shard's short-lived cache of what tenants configured: bot config and channel status
(connected; a WhatsApp number in coexistence with the Business app).

Read per message on the hot path, so each answer is kept ``ttl_s`` seconds (default 2):
a bot change or a disconnect takes effect within that time on every shard. At most
``max_entries`` answers of each kind are held; past that the least recently used goes.
"""

from __future__ import annotations

from cachetools import TTLCache

from mtdesk.core import keys
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis, as_opt_bytes
from mtdesk.core.tenants import Bots

DISCONNECTED = b"disconnected"


class TenantView:
    def __init__(self, redis: Redis, *, ttl_s: float = 2.0, max_entries: int = 10_000) -> None:
        self._redis = redis
        self._bots = Bots(redis)
        self._bot_cache: TTLCache[str, BotConfig] = TTLCache(max_entries, ttl_s)
        self._channel_cache: TTLCache[tuple[str, str, str], tuple[bool, bool]] = TTLCache(
            max_entries, ttl_s)

    async def bot(self, tenant_id: str) -> BotConfig:
        """The tenant's bot config (the offline default when none was set)."""
        hit = self._bot_cache.get(tenant_id)
        if hit is not None:
            return hit
        config = self._bot_cache[tenant_id] = await self._bots.get(tenant_id)
        return config

    async def channel_connected(self, tenant_id: str, channel: str, account_id: str) -> bool:
        """False when the channel's status is ``disconnected`` (e.g. Graph error 190)."""
        return (await self._channel(tenant_id, channel, account_id))[0]

    async def coexistence(self, tenant_id: str, channel: str, account_id: str) -> bool:
        """The WhatsApp number is also used in the WhatsApp Business app."""
        return (await self._channel(tenant_id, channel, account_id))[1]

    async def _channel(self, tenant_id: str, channel: str, account_id: str) -> tuple[bool, bool]:
        key = (tenant_id, channel, account_id)
        hit = self._channel_cache.get(key)
        if hit is not None:
            return hit
        channel_id = as_opt_bytes(
            await self._redis.hget(keys.account(channel, account_id), "channel_id")
        )
        state = (True, False)
        if channel_id is not None:
            status, coexistence = await self._redis.hmget(
                keys.channel(tenant_id, channel_id.decode()), "status", "coexistence")
            state = (status != DISCONNECTED, coexistence == b"1")
        self._channel_cache[key] = state
        return state

    def forget_channel(self, tenant_id: str, channel: str, account_id: str) -> None:
        """Drop the cached status (e.g. right after Graph error 190 disconnected it)."""
        self._channel_cache.pop((tenant_id, channel, account_id), None)

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop what is cached of the tenant (its account was erased)."""
        self._bot_cache.pop(tenant_id, None)
        for key in [k for k in self._channel_cache if k[0] == tenant_id]:
            del self._channel_cache[key]
