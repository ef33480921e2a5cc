"""Live re-sharding of retrieval shards on real Ray actors: 1 → 2 → 1 while searches flow;
every search finds the right passage, none fails, and the old generation's actors are gone
afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import msgspec
import pytest

from mtdesk.actors import rayapi
from mtdesk.actors.retrieval_deploy import (
    ActorRetriever,
    RetrievalDeployment,
    following_retriever,
)
from mtdesk.core import retrieval_layout
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.store import KnowledgeStore

pytestmark = pytest.mark.ray

FAQ = [{"q": f"What is the price of product {i}?", "a": f"Product {i} costs {i * 10} euros."}
       for i in range(30)]


async def test_retrieval_goes_from_one_to_two_to_one_shard_while_every_search_finds_its_passage(
    ray_session: None, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    # Blocks of 10 chunks: with 2 shards the tenant's 30 chunks live on both (a fan-out).
    settings = Settings(data_dir=str(tmp_path / "data"), kb_embedder="lexical",
                        redis_url=redis_url, kb_shard_chunks=10, retrieval_shards=1)
    namespace = f"rs-{uuid.uuid4().hex}"
    store = KnowledgeStore(redis)
    director = RetrievalDeployment(settings, redis, namespace=namespace, grace_s=1.0)
    first = await director.start()
    assert (first.generation, first.shards) == (0, 1)
    assert director.names() == ["mtdesk-retrieval-0"]  # the name older deployments use
    assert await retrieval_layout.read(redis) == retrieval_layout.RetrievalLayout(
        generation=0, shards=1, time=first.time)
    try:
        service = KnowledgeService(store, settings)
        await service.start()
        await service.add_qa("t1", FAQ, name="Prices")
        await service.drain()
        await service.stop()

        # As a conversation shard finds them; and one that never looks at the layout in
        # time: it reaches each new generation only by the retry of a search that hit a
        # killed actor.
        followers = [await following_retriever(store, settings, namespace=namespace)]
        assert isinstance(followers[0], ActorRetriever) and followers[0].generation == 0
        slow = await following_retriever(store, settings, namespace=namespace)
        assert isinstance(slow, ActorRetriever)
        slow.check_s = 3600.0
        followers.append(slow)

        stop = asyncio.Event()
        done = [0]
        wrong: list[str] = []

        async def searching(retriever: ActorRetriever, offset: int) -> None:
            n = offset
            while not stop.is_set():
                i = n % len(FAQ)
                found = await retriever.search("t1", f"how much is product {i}", 3)
                if not found or found[0].answer != f"Product {i} costs {i * 10} euros.":
                    wrong.append(f"product {i}: {found[:1]} (generation {retriever.generation})")
                done[0] += 1
                n += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(searching(r, k * 7)) for r in followers for k in range(3)]
        try:
            await asyncio.sleep(1.0)
            grown = await director.reshard(2)
            assert (grown.generation, grown.shards) == (1, 2)
            assert director.names() == ["mtdesk-retrieval-g1-0", "mtdesk-retrieval-g1-1"]
            assert rayapi.find("mtdesk-retrieval-0", namespace) is None  # killed after grace
            await asyncio.sleep(1.5)
            assert all(r.generation == 1 and len(r.shards) == 2 for r in followers)
            shrunk = await director.reshard(1)
            assert (shrunk.generation, shrunk.shards) == (2, 1)
            for name in ("mtdesk-retrieval-g1-0", "mtdesk-retrieval-g1-1"):
                assert rayapi.find(name, namespace) is None
            await asyncio.sleep(1.5)  # searches after the last switch, too
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [r for r in results if r is not None] == []  # no search failed
        assert wrong == [], "\n".join(wrong)
        assert done[0] > 100
        assert all(r.generation == 2 and len(r.shards) == 1 for r in followers)
        stored = await retrieval_layout.read(redis)
        assert stored is not None and (stored.generation, stored.shards) == (2, 1)
        assert not stored.target and not stored.error

        # A restart uses the stored generation and count, not MTDESK_RETRIEVAL_SHARDS.
        again = RetrievalDeployment(msgspec.structs.replace(settings, retrieval_shards=3),
                                    redis, namespace=namespace)
        restarted = await again.start()
        assert (restarted.generation, restarted.shards) == (2, 1)
        assert again.names() == ["mtdesk-retrieval-g2-0"]
    finally:
        with contextlib.suppress(Exception):
            await director.stop()
