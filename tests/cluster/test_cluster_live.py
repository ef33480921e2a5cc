"""The shards publish a stored message only while an inbox listens on the tenant's live
channel; on a Redis Cluster the inbox's feed subscribes through the cluster client, on
whichever master it picks, and the shards ask every node."""

from __future__ import annotations

import contextlib

from redis.asyncio.cluster import ClusterNode

from mtdesk.actors.watchers import LiveWatchers
from mtdesk.core import keys
from mtdesk.core.redis import Redis, connect, primaries


async def _seen_with(watchers: LiveWatchers, pubsub: object) -> bool:
    await pubsub.subscribe(keys.live("t_live"))  # type: ignore[attr-defined]
    assert await pubsub.get_message(timeout=5)  # type: ignore[attr-defined]  # confirmed
    await watchers.poll()
    return watchers.watched("t_live")


async def test_a_listener_on_any_master_of_the_cluster_is_seen(cluster_redis: Redis) -> None:
    watchers = LiveWatchers(cluster_redis)
    assert watchers.watched("t_live")  # not asked about yet: told
    await watchers.poll()
    assert not watchers.watched("t_live")  # asked: nobody listens

    feed = cluster_redis.pubsub()  # as the inbox's feed subscribes (admin/live.py)
    try:
        assert await _seen_with(watchers, feed)
    finally:
        with contextlib.suppress(Exception):
            await feed.aclose()
    await watchers.poll()
    assert not watchers.watched("t_live")

    for node in primaries(cluster_redis):
        assert isinstance(node, ClusterNode)
        listener = connect(f"redis://{node.host}:{node.port}/0")
        pubsub = listener.pubsub()
        try:
            assert await _seen_with(watchers, pubsub), node.name
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await listener.aclose()
        await watchers.poll()
        assert not watchers.watched("t_live"), node.name
