"""Live re-sharding on real Ray actors: 2 → 3 → 1 conversation shards while messages
flow; every message answered exactly once, in order per conversation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from shardkit import Desk, desk, eventually

from mtdesk.actors.deploy import Deployment
from mtdesk.core import keys, ownership
from mtdesk.core.redis import Redis

pytestmark = pytest.mark.ray

PREFIX = "[gpt-test] You said: "


def said(d: Desk, user: str) -> list[str]:
    """What ``user``'s replies answered, in the order they came (a burst's reply answers
    its messages joined by newlines)."""
    out: list[str] = []
    for text in d.texts_to(user):
        assert text.startswith(PREFIX), text
        out.extend(text[len(PREFIX):].split("\n"))
    return out


async def test_shards_go_from_two_to_three_to_one_under_load_and_every_message_is_answered_once_in_order(
    ray_session: None, redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, shards=2, partitions=8) as d:
        d.llm.latency_s = 0.05
        deployment = Deployment(d.settings, watch_interval_s=0.2,
                                shard_options={"block_ms": 100})
        await deployment.start()
        users = [f"r{i}" for i in range(24)]
        sent: dict[str, list[str]] = {u: [] for u in users}
        stop = asyncio.Event()

        async def load() -> None:  # ~80 msgs/s, every user in turn
            n = 0
            while not stop.is_set():
                for u in users:
                    text = f"{u}-{n}"
                    await d.push(d.message(text, user=u))
                    sent[u].append(text)
                    await asyncio.sleep(0.0125)
                n += 1

        producer = asyncio.create_task(load())
        try:
            await eventually(lambda: len(d.graph.sends) > 20, within=60)
            grown = await deployment.reshard(3)
            assert grown.shards == 3 and len(deployment.actors) == 3
            assert sorted(len(ps) for ps in grown.per_shard().values()) == [2, 3, 3]
            infos = await deployment.ping_all()
            assert [sorted(i["partitions"]) for i in infos if i] == [
                grown.partitions_of(k) for k in range(3)]
            shrunk = await deployment.reshard(1)
            assert shrunk.shards == 1 and len(deployment.actors) == 1
            assert shrunk.owners == [0] * 8 and shrunk.epoch > grown.epoch
            await asyncio.sleep(1.0)  # traffic after the last handover, too
            stop.set()
            await producer

            await eventually(lambda: all(len(said(d, u)) >= len(sent[u]) for u in users),
                             within=120)

            async def settled() -> bool:
                return await d.pending() == 0

            await eventually(settled, within=60)
            await asyncio.sleep(0.5)  # a late duplicate would show up here
            for u in users:
                assert said(d, u) == sent[u], u  # each once, in the order sent
            # The map as the director left it, and the fences it set.
            stored = await ownership.read(redis)
            assert stored is not None and stored.epoch == shrunk.epoch
            assert await redis.get(keys.partition_owner(0)) == str(stored.epochs[0]).encode()
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await producer
            await deployment.stop(drain_timeout_s=2)
