"""Warm spare conversation shards (``MTDESK_SHARD_SPARES``) on real Ray actors: a
re-sharding that adds a shard takes the spare's running process instead of starting
one, the spare is made again afterwards, and shrinking keeps an emptied shard as the
spare; every message is answered once throughout."""

from __future__ import annotations

import pytest
from shardkit import Desk, desk, eventually

from mtdesk.actors import rayapi
from mtdesk.actors.deploy import Deployment, conversation_shard_name
from mtdesk.core.redis import Redis

pytestmark = pytest.mark.ray

USERS = [f"s{i}" for i in range(12)]


async def _round(d: Desk, n: int) -> None:
    """One message from every user; each answered once (the fake LLM echoes it)."""
    for u in USERS:
        await d.push(d.message(f"{u}-{n}", user=u))
    await eventually(lambda: all(len(d.texts_to(u)) == n + 1 for u in USERS), within=60)


async def test_a_spare_becomes_the_added_shard_without_a_new_process_and_an_emptied_shard_becomes_the_spare(
    ray_session: None, redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, shards=2, partitions=6, shard_spares=1) as d:
        d.llm.latency_s = 0.02
        deployment = Deployment(d.settings, watch_interval_s=0.2,
                                shard_options={"block_ms": 100})
        await deployment.start()
        try:
            assert len(deployment.actors) == 2 and len(deployment.spares) == 1
            spare = await deployment.spares[0].ping.remote()
            assert spare["partitions"] == [] and spare["shard"] == 2
            assert rayapi.find(conversation_shard_name(2)) is not None
            await _round(d, 0)

            grown = await deployment.reshard(3)
            infos = await deployment.ping_all()
            assert [i["pid"] for i in infos if i][2] == spare["pid"]  # no process started
            assert sorted(infos[2]["partitions"]) == grown.partitions_of(2) != []
            await eventually(lambda: len(deployment.spares) == 1, within=60)  # made again
            fresh = await deployment.spares[0].ping.remote()
            assert fresh["shard"] == 3 and fresh["partitions"] == []
            assert fresh["pid"] not in {i["pid"] for i in infos if i}
            await _round(d, 1)

            emptied = infos[1]["pid"]
            shrunk = await deployment.reshard(1)
            assert shrunk.owners == [0] * 6 and len(deployment.actors) == 1
            kept = await deployment.spares[0].ping.remote()
            assert kept["pid"] == emptied and kept["partitions"] == [] and kept["shard"] == 1
            await eventually(lambda: rayapi.find(conversation_shard_name(2)) is None
                             and rayapi.find(conversation_shard_name(3)) is None, within=30)
            await _round(d, 2)
            assert all(len(d.texts_to(u)) == 3 for u in USERS)  # none answered twice
        finally:
            await deployment.stop(drain_timeout_s=2)
        assert all(rayapi.find(conversation_shard_name(i)) is None for i in range(4))
