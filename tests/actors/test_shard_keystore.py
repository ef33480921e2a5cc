"""A conversation shard whose key store (``MTDESK_KEYSTORE_URL``) is down when it reads
an event of a tenant whose key it does not hold: the event is neither dropped nor
answered; it stays pending, is tried again, and is answered once the key store is
back."""

from __future__ import annotations

import time

from keystore_server import KeyStoreServer
from shardkit import desk, eventually

from mtdesk.core import keys
from mtdesk.core.events import EVENT_FAMILY, encode_event, partition_of
from mtdesk.core.redis import Redis


async def test_an_event_read_while_the_key_store_is_down_waits_and_is_answered_once_it_is_back(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer,
) -> None:
    async with desk(redis, redis_url, keystore_url=keystore_server.url) as d:
        tid = d.tenant_id
        assert await redis.get(keys.data_key(tid)) is None  # made in the key store
        gateway = d.cipher()
        key = await gateway.key(tid)
        message = d.message("what are your opening hours?")
        # What the gateway stores: the event sealed with the tenant's key.
        stream = keys.inbound(partition_of(message.conversation, d.settings.partitions))
        await redis.xadd(stream, {b"e": key.seal(EVENT_FAMILY, "", encode_event(message)),
                                  b"t": tid.encode(), b"r": str(int(time.time() * 1000)).encode()})
        await gateway.aclose()

        keystore_server.stop()
        shard = await d.shard(claim_idle_ms=100, claim_interval_s=0.1)
        await shard.start()

        async def tried_twice_and_kept() -> bool:
            pending = await redis.xpending_range(stream, keys.SHARD_GROUP, min="-", max="+", count=10)
            return len(pending) == 1 and int(pending[0]["times_delivered"]) >= 2

        await eventually(tried_twice_and_kept, within=30)
        assert d.llm.chat_requests == [] and d.texts_to("U1") == []

        keystore_server.start()
        await eventually(lambda: d.texts_to("U1"), within=30)
        assert "opening hours" in str(d.llm.chat_requests[0].messages)

        async def acknowledged() -> bool:
            return await d.pending() == 0

        await eventually(acknowledged, within=15)
