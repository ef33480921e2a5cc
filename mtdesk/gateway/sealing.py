"""The gateway seals each event with its tenant's data key before it enters a stream.

The tenant of an account is known for certain only inside the ingest script (the
routing hash, read atomically with the write). The gateway keeps what it last read of
it, with the tenant's data key (:class:`InboundSealer`: bounded, :data:`ROUTE_TTL_S`),
seals with that, and tells the script which tenant it sealed for; the script refuses
an event whose account now routes elsewhere (``Outcome.REROUTE``), and the route reads
the routing again and retries. So a warm gateway pays no extra round trip per message,
and an event is never stored sealed for a tenant that does not own its account, nor in
the clear for one that does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mtdesk.core import keys
from mtdesk.core.errors import KeyStoreUnavailable
from mtdesk.core.events import Event
from mtdesk.core.redis import UNAVAILABLE, Redis
from mtdesk.core.sealing import TenantCipher, TenantKey

ROUTE_TTL_S = 60.0
ANY_TENANT = "*"  # nothing sealed (no MTDESK_ENCRYPTION_KEYS): whoever owns the account
NO_TENANT = ""  # the account was not routed when read: stored only if it still is not

Sealing = tuple[str, TenantKey | None]
"""Per event: the tenant it is sealed for (or :data:`ANY_TENANT` / :data:`NO_TENANT`)
and the key to seal with (None: in the clear)."""


class InboundSealer:
    def __init__(self, redis: Redis, cipher: TenantCipher, *, size: int = 10_000,
                 ttl_s: float = ROUTE_TTL_S) -> None:
        self._redis = redis
        self._cipher = cipher
        # (channel, account) -> (read until, sealing). A plain dict read once per event:
        # cachetools' TTLCache costs ~7 µs a lookup, several times the sealing itself.
        self._routes: dict[tuple[str, str], tuple[float, Sealing]] = {}
        self._size = size
        self._ttl_s = ttl_s
        self.lookups = 0  # routing reads (cache misses), for tests and benchmarks

    @property
    def enabled(self) -> bool:
        return self._cipher.enabled

    def cached(self, events: Sequence[Event]) -> list[Sealing] | None:
        """Each event's sealing from memory, or None when an account is not cached."""
        if not self._cipher.enabled:
            return [(ANY_TENANT, None)] * len(events)
        routes = self._routes
        now = time.monotonic()
        out: list[Sealing] = []
        for ev in events:
            found = routes.get((ev.channel, ev.account_id))
            if found is None or found[0] < now:
                return None
            out.append(found[1])
        return out

    async def resolve(self, events: Sequence[Event]) -> list[Sealing]:
        """Each event's sealing, reading the routing of the accounts not cached (one
        pipelined round trip) and their tenants' keys (made on a tenant's first event)."""
        found = self.cached(events)
        if found is not None:
            return found
        accounts = list(dict.fromkeys((ev.channel, ev.account_id) for ev in events))
        now = time.monotonic()
        missing = [a for a in accounts if a not in self._routes or self._routes[a][0] < now]
        if missing:
            pipe = self._redis.pipeline(transaction=False)
            for channel, account in missing:
                pipe.hget(keys.account(channel, account), "tenant")
            self.lookups += 1
            tenants = [t.decode() if t else "" for t in await pipe.execute()]
            try:
                sealers = await self._cipher.keys_of([t for t in tenants if t])
            except UNAVAILABLE as exc:
                if self._cipher.keystore is None:
                    raise
                # Never stored in the clear: the event is refused (503) and Meta retries.
                raise KeyStoreUnavailable("the key store does not answer") from exc
            if len(self._routes) + len(missing) > self._size:
                self._routes.clear()  # bounded: the busy accounts come back at once
            until = time.monotonic() + self._ttl_s
            for account_key, tenant in zip(missing, tenants, strict=True):
                key = sealers.get(tenant) if tenant else None
                # No key: not routed, or being erased (the script then refuses the event).
                self._routes[account_key] = (
                    until, (tenant, key) if key is not None else (NO_TENANT, None))
        routes = self._routes
        return [routes[(ev.channel, ev.account_id)][1] if (ev.channel, ev.account_id) in routes
                else (NO_TENANT, None) for ev in events]

    def invalidate(self, events: Sequence[Event]) -> None:
        """Forget what is cached for these events' accounts (the script refused them)."""
        for ev in events:
            self._routes.pop((ev.channel, ev.account_id), None)
