"""Which tenants have the inbox open: so a shard tells the live channel only when a
console listens.

Every message a shard stores used to be told on the tenant's live channel
(``keys.live``, pub/sub: one ``PUBLISH`` with the inbound message, one with the reply's
part), which is two commands of every answered message, and on a Redis Cluster a
message over the cluster bus to every node. Nobody hears it unless the tenant's inbox
is open. So the shard asks Redis how many listen (``PUBSUB NUMSUB`` of the live channels
of the tenants it served lately, ONE command every ``interval_s`` whatever their number;
on a cluster redis-py asks every node and adds their counts), and the reply scripts
publish only for tenants with a listener (:mod:`mtdesk.core.lua.history_append`: a card
starting with :data:`QUIET` is not told).

What callers rely on:

- :meth:`LiveWatchers.watched` answers from memory, with no round trip. It answers True
  (tell) for a tenant the last poll did not ask about (first seen, or beyond the
  ``most`` tenants polled) and whenever the last poll was sent more than ``valid_s`` ago
  (the poll failing or the shard's loop behind): when in doubt, publish.
- :meth:`LiveWatchers.run` polls until cancelled; a failed poll is logged at DEBUG and
  retried at the next interval.
- :func:`always` is the answer where nothing polls (a store built without watchers):
  everything is told.
- A feed that subscribes just after a poll misses what is stored before the next one
  is seen; the feed makes that good itself (``mtdesk/admin/live.py``: it reads once
  what was stored around its start, a few seconds in).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from mtdesk.core import keys
from mtdesk.core.redis import Redis, is_cluster

log = logging.getLogger(__name__)

# The first byte of a card the reply scripts do not tell the live channel about.
QUIET: Final = b"\x01"


def always(_tenant_id: str) -> bool:
    return True


class LiveWatchers:
    def __init__(self, redis: Redis, *, interval_s: float = 0.5, valid_s: float = 1.5,
                 recent_s: float = 120.0, most: int = 5000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._interval = interval_s
        self._valid = valid_s
        self._recent_s = recent_s
        self._most = most
        self._clock = clock
        # On a cluster a feed subscribes on whichever master the client picks: ask every
        # node the client knows (redis-py adds up their counts).
        self._where: dict[str, str] = {"target_nodes": "all"} if is_cluster(redis) else {}
        self._recent: OrderedDict[str, float] = OrderedDict()  # tenant -> last served
        self._asked: frozenset[str] = frozenset()  # the tenants the last poll asked about
        self._listening: frozenset[str] = frozenset()
        self._polled_at = float("-inf")  # when the last poll that answered was sent

    def watched(self, tenant_id: str) -> bool:
        """Whether what is stored for ``tenant_id`` now should be told live."""
        now = self._clock()
        self._recent[tenant_id] = now
        self._recent.move_to_end(tenant_id)
        if now - self._polled_at > self._valid or tenant_id not in self._asked:
            return True
        return tenant_id in self._listening

    async def poll(self) -> None:
        """Ask Redis who listens on the live channels of the tenants served lately."""
        sent = self._clock()
        while self._recent and next(iter(self._recent.values())) < sent - self._recent_s:
            self._recent.popitem(last=False)
        tenants = list(self._recent)[-self._most:]
        listening: set[str] = set()
        if tenants:
            channels = {keys.live(t): t for t in tenants}
            for channel, count in await self._redis.pubsub_numsub(*channels, **self._where):
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                if int(count) > 0 and name in channels:
                    listening.add(channels[name])
        self._asked, self._listening = frozenset(tenants), frozenset(listening)
        self._polled_at = sent

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # noqa: BLE001 - watched() publishes meanwhile
                log.debug("live watchers poll failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
