"""A conversation shard forgets what was erased, also when it missed the erasure notices
because its connection to Redis was down meanwhile: once it is back, the conversations
of an erased account (or of an erased end user) leave its memory and are never written
back, and its in-process knowledge retriever (the fallback when no retrieval actors run)
holds nothing of an erased account."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
from redislink import RedisLink
from shardkit import Desk, desk, eventually

from mtdesk.actors.conversation_shard import ConversationShard
from mtdesk.core import keys
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis, connect
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.retrieval.index_slice import IndexSlice
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import KnowledgeRetriever, local_retriever
from mtdesk.retrieval.store import KnowledgeStore

FAQ = [{"q": "How long does shipping take?", "a": "Orders arrive in 3 to 5 business days."}]


def vectors_held(retriever: KnowledgeRetriever, tenant: str) -> int:
    total = 0
    for shard in retriever.shards:
        assert isinstance(shard, IndexSlice)
        held = shard.stats()["tenants"]
        assert isinstance(held, dict)
        total += held.get(tenant, {}).get("vectors", 0)
    return total


def conversations_of(shard: ConversationShard, tenant: str) -> int:
    return sum(1 for c in shard._convs.values() if c.tenant_id == tenant)


@asynccontextmanager
async def linked_shard(
    redis: Redis, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Desk, ConversationShard, KnowledgeRetriever, RedisLink]]:
    """A desk whose shard (and its in-process retriever) reach Redis through a link the
    test can cut; the tenant has a small FAQ."""
    async with desk(redis, redis_url, kb_embedder="lexical", data_dir=str(tmp_path / "data"),
                    conversation_idle_s=3600.0) as d, RedisLink(redis_url) as link:
        settings = msgspec.structs.replace(d.settings, redis_url=link.url)
        store = KnowledgeStore(connect(link.url))
        retriever = local_retriever(store, settings)
        service = KnowledgeService(KnowledgeStore(redis), d.settings)
        await service.run(d.tenant_id, (await service.add_qa(d.tenant_id, FAQ)).id)
        shard = await d.shard(settings=settings, retriever=retriever)
        await shard.start()
        await asyncio.wait_for(shard.subscribed.wait(), 10)
        try:
            yield d, shard, retriever, link
        finally:
            await shard.stop(drain_timeout_s=5)
            await store.redis.aclose()


async def erase(redis: Redis, d: Desk, job: str, **params: str) -> None:
    jobs = DeletionJobs(redis, SystemClock())
    if job == "account":
        await jobs.schedule_account(d.tenant_id)
    else:
        await jobs.schedule_user(d.tenant_id, "messenger", params["user"])
    assert await DeletionWorker(redis, d.settings, SystemClock()).run_once() == 1


async def wait_down(shard: ConversationShard) -> None:
    await eventually(lambda: not shard.subscribed.is_set())


@pytest.mark.parametrize("notices", ["received", "missed while disconnected"])
async def test_an_erased_account_leaves_the_shard_and_its_retriever(
    redis: Redis, redis_url: str, tmp_path: Path, notices: str
) -> None:
    async with linked_shard(redis, redis_url, tmp_path) as (d, shard, retriever, link):
        await d.push(d.message("How long does shipping take?"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert "3 to 5 business days" in d.llm.chat_requests[0].prompt_text()
        await eventually(lambda: shard._convs and all(c.idle for c in shard._convs.values()))
        assert conversations_of(shard, d.tenant_id) == 1
        assert vectors_held(retriever, d.tenant_id) == 1

        if notices == "received":
            await erase(redis, d, "account")
        else:
            link.cut()
            await wait_down(shard)
            await erase(redis, d, "account")
            await asyncio.sleep(0.3)
            assert conversations_of(shard, d.tenant_id) == 1  # the notices were lost
            link.restore()

        await eventually(lambda: conversations_of(shard, d.tenant_id) == 0)
        await eventually(lambda: d.tenant_id not in retriever.held())
        assert vectors_held(retriever, d.tenant_id) == 0
        await shard.evict_idle()
    # Stopped: nothing it held was written back.
    assert [k async for k in redis.scan_iter(match=f"{keys.tenant_prefix(d.tenant_id)}*")] == []


async def test_an_end_user_erased_while_disconnected_leaves_the_shard_once_it_is_back(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with linked_shard(redis, redis_url, tmp_path) as (d, shard, retriever, link):
        for user in ("U1", "U2"):
            await d.push(d.message("How long does shipping take?", user=user))
        await eventually(lambda: len(d.graph.sends) == 2)
        await eventually(lambda: len(shard._convs) == 2
                         and all(c.idle for c in shard._convs.values()))

        link.cut()
        await wait_down(shard)
        await erase(redis, d, "user", user="U1")
        link.restore()

        await eventually(lambda: [c.key for c in shard._convs.values()] == ["messenger:1001:U2"])
        await shard.stop(drain_timeout_s=5)  # persists what it holds
        assert not await redis.exists(keys.context(d.tenant_id, "messenger:1001:U1"))
        assert await redis.exists(keys.context(d.tenant_id, "messenger:1001:U2"))
        assert vectors_held(retriever, d.tenant_id) == 1  # an end user's erasure keeps knowledge
