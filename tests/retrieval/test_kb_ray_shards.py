"""Retrieval shards as real Ray actors: batched search through the actor, and a shard
that dies comes back with its knowledge."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from kb_harness import kb_settings

from mtdesk.core.redis import Redis
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.store import KnowledgeStore

pytestmark = pytest.mark.ray

FAQ = [{"q": f"What is the price of product {i}?", "a": f"Product {i} costs {i * 10} euros."} for i in range(30)]


async def test_actor_shards_answer_in_batches_and_survive_a_restart(
    ray_session: None, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    import ray

    from mtdesk.actors.retrieval_deploy import actor_retriever, create_retrieval_shards

    settings = kb_settings(tmp_path, redis_url=redis_url, kb_shard_chunks=100)
    store = KnowledgeStore(redis)
    handles = create_retrieval_shards(settings, 2, namespace=f"kb-{uuid.uuid4().hex}", snapshot_every_s=0.0)
    try:
        retriever = actor_retriever(store, settings, handles)
        service = KnowledgeService(store, settings, on_change=retriever.refresh)
        await service.start()
        await service.add_qa("t1", FAQ, name="Prices")
        await service.drain()
        await service.stop()

        queries = [f"how much is product {i}" for i in range(30)]
        results = await asyncio.gather(*(retriever.search("t1", q, 3) for q in queries))
        assert all(r[0].answer == f"Product {i} costs {i * 10} euros." for i, r in enumerate(results))
        clients = retriever.shards
        assert sum(c.calls for c in clients) < len(queries)  # batched  # type: ignore[attr-defined]

        # Kill the shard that holds the tenant; Ray restarts it and it reloads its snapshot.
        for h in handles:
            ray.kill(h, no_restart=False)
        for _ in range(100):
            try:
                found = await retriever.search("t1", "how much is product 7", 1)
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert found[0].answer == "Product 7 costs 70 euros."
    finally:
        for h in handles:
            ray.kill(h, no_restart=True)


async def test_a_conversation_shard_finds_the_running_retrieval_actors_by_name(
    ray_session: None, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    import ray

    from mtdesk.actors.retrieval_deploy import (
        ActorShardClient,
        create_retrieval_shards,
        shard_retriever,
    )

    settings = kb_settings(tmp_path, redis_url=redis_url)
    namespace = f"kb-{uuid.uuid4().hex}"
    store = KnowledgeStore(redis)
    assert not isinstance(shard_retriever(store, settings, 1, namespace=namespace).shards[0], ActorShardClient)
    handles = create_retrieval_shards(settings, 1, namespace=namespace)
    try:
        found = shard_retriever(store, settings, 1, namespace=namespace)
        assert isinstance(found.shards[0], ActorShardClient)
        assert await found.search("nobody", "anything") == []
    finally:
        for h in handles:
            ray.kill(h, no_restart=True)
