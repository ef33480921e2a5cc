"""Channel credentials for the Graph sender, decrypted at the moment of sending.

:class:`VaultCredentials` implements :class:`mtdesk.core.ports.CredentialSource`. It keeps
a short-lived in-process cache (``cache_ttl_s``, default 2 s of real time; 0 turns it
off) of the routing and the token *ciphertext* (never the plaintext); each
:meth:`credentials` call decrypts afresh and hands the token over in a :class:`Secret`.
A re-connected token is therefore used at most ``cache_ttl_s`` after it was stored;
:meth:`mark_disconnected` drops the entry at once.
"""

from __future__ import annotations

import logging

from cachetools import TTLCache
from prometheus_client import Counter

from mtdesk.core import keys
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.errors import NotFound
from mtdesk.core.events import Channel
from mtdesk.core.ports import ChannelCredentials
from mtdesk.core.redis import Redis, as_opt_bytes_list
from mtdesk.core.tenants import CONNECTED, Channels, channel_token_aad
from mtdesk.policy.vault import TokenVault

log = logging.getLogger(__name__)

CHANNELS_DISCONNECTED = Counter(
    "mtdesk_channels_disconnected_total",
    "Channels marked disconnected because the Graph API rejected their token",
    ["channel"],
)

# (tenant id, channel id, status, token ciphertext)
_Entry = tuple[str, str, str, str | None]


class VaultCredentials:
    """Resolves (channel, account id) → tenant, channel and a freshly decrypted token."""

    def __init__(
        self,
        redis: Redis,
        vault: TokenVault,
        *,
        clock: Clock | None = None,
        cache_ttl_s: float = 2.0,
        cache_size: int = 10_000,
    ) -> None:
        self._clock = clock or SystemClock()
        self._channels = Channels(redis, self._clock)
        self._redis = redis
        self._vault = vault
        # Process-local freshness (cachetools' monotonic timer), not domain time: a test's
        # fake clock must not pin it. Past ``cache_size`` the least recently used goes.
        self._cache: TTLCache[tuple[str, str], _Entry] | None = (
            TTLCache(cache_size, cache_ttl_s) if cache_ttl_s > 0 else None
        )

    def __repr__(self) -> str:
        return f"VaultCredentials(cached={len(self._cache or ())})"

    async def _lookup(self, channel: str, account_id: str) -> _Entry:
        key = (channel, account_id)
        cache = self._cache
        hit = None if cache is None else cache.get(key)
        if hit is not None:
            return hit
        routed = await self._channels.resolve(channel, account_id)
        if routed is None:
            if cache is not None:
                cache.pop(key, None)
            raise NotFound(f"no tenant has connected {channel} account {account_id}")
        tid, cid = routed

        status, token = as_opt_bytes_list(
            await self._redis.hmget(keys.channel(tid, cid), "status", "token")
        )
        entry: _Entry = (
            tid,
            cid,
            (status or b"").decode(),
            None if token is None else token.decode("utf-8", "replace"),
        )
        if cache is not None:
            cache[key] = entry
        return entry

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the cached accounts of ``tenant_id`` (its account was erased): a send
        after this reads the vault again and finds nothing."""
        if self._cache is None:
            return
        for key, entry in list(self._cache.items()):
            if entry[0] == tenant_id:
                self._cache.pop(key, None)

    async def credentials(self, channel: Channel, account_id: str) -> ChannelCredentials:
        """Decrypts the account's token now. NotFound when not connected or no token."""
        tid, cid, status, token = await self._lookup(channel, account_id)
        if status != CONNECTED or not token:
            raise NotFound(f"{channel} account {account_id} is disconnected ({tid}/{cid})")
        secret = self._vault.decrypt(token, channel_token_aad(tid, cid))
        return ChannelCredentials(
            tenant_id=tid,
            channel_id=cid,
            channel=channel,
            account_id=account_id,
            access_token=secret,
        )

    async def mark_disconnected(self, channel: Channel, account_id: str, reason: str) -> None:
        """The token is dead (Graph 190): status disconnected, routing kept."""
        if self._cache is not None:
            self._cache.pop((channel, account_id), None)
        routed = await self._channels.resolve(channel, account_id)
        if routed is None:
            return
        tid, cid = routed
        await self._channels.mark_token_invalid(tid, cid, reason)
        CHANNELS_DISCONNECTED.labels(channel=channel).inc()
        log.warning(
            "channel disconnected: tenant=%s channel_id=%s channel=%s reason=%s",
            tid, cid, channel, reason[:200],
        )
