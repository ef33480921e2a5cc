"""Shards as real Ray actors: deployed, answering, killed and restarted by Ray."""

from __future__ import annotations

import pytest
import ray
from shardkit import desk, eventually

from mtdesk.actors.deploy import Deployment, assign_partitions, ray_init_kwargs
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings

pytestmark = pytest.mark.ray


def test_partitions_are_dealt_round_robin_and_local_ray_avoids_redis_port() -> None:
    assert assign_partitions(5, 2) == [[0, 2, 4], [1, 3]]
    assert sorted(sum(assign_partitions(64, 3), [])) == list(range(64))
    assert ray_init_kwargs(Settings())["address"] == "local"
    assert ray_init_kwargs(Settings(ray_address="ray://head:10001"))["address"] == "ray://head:10001"


async def test_a_killed_shard_is_restarted_by_ray_and_every_message_is_answered_once(
    ray_session: None, redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, shards=2, partitions=4) as d:
        deployment = Deployment(d.settings, watch_interval_s=0.2,
                                shard_options={"block_ms": 100})
        await deployment.start()
        try:
            assert await deployment.ready()
            before = {info["shard"]: info["pid"] for info in await deployment.ping_all()}
            early = [f"e{i}" for i in range(10)]
            for u in early:
                await d.push(d.message(f"hi from {u}", user=u))
            await eventually(lambda: all(d.texts_to(u) for u in early), within=60)

            d.llm.latency_s = 1.0
            late = [f"l{i}" for i in range(10)]
            for u in late:
                await d.push(d.message(f"hi from {u}", user=u))
            await eventually(lambda: len(d.llm.chat_requests) == 20, within=60)
            ray.kill(deployment.actors[0], no_restart=False)  # the process dies mid-reply
            d.llm.latency_s = 0.0

            await eventually(lambda: all(d.texts_to(u) for u in late), within=90)

            async def settled() -> bool:
                return await d.pending() == 0

            await eventually(settled, within=60)
            for u in early + late:
                assert d.texts_to(u) == [f"[gpt-test] You said: hi from {u}"]
            after = {info["shard"]: info["pid"] for info in await deployment.ping_all()}
            assert after[0] != before[0] and after[1] == before[1]
        finally:
            await deployment.stop(drain_timeout_s=2)


async def test_the_blocking_api_starts_and_stops_the_shards(
    ray_session: None, redis: Redis, redis_url: str
) -> None:
    import asyncio

    async with desk(redis, redis_url, shards=1, partitions=2) as d:
        deployment = Deployment(d.settings, watch_interval_s=0.2)
        await asyncio.to_thread(deployment.start_blocking)
        try:
            await d.push(d.message("hello", user="z1"))
            await eventually(lambda: d.texts_to("z1") == ["[gpt-test] You said: hello"], within=60)
        finally:
            await asyncio.to_thread(deployment.stop_blocking, 2.0)
        assert deployment.actors == []
