"""What a new set of retrieval shards warms before it serves: every tenant with a
knowledge base in Redis (its index metadata), and nobody else."""

from __future__ import annotations

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.retrieval.store import KnowledgeStore


async def test_the_tenants_with_an_index_are_found_and_no_others(redis: Redis) -> None:
    store = KnowledgeStore(redis)
    await store.set_meta("t_b", spec="hash-256", dim="256")
    await store.set_meta("t_a", spec="hash-256", dim="256")
    await redis.hset(keys.kb_sources("t_c"), "s1", b"{}")  # sources, no index yet
    await redis.hset(keys.tenant("t_d"), "name", "no knowledge")
    assert await store.tenants_with_knowledge() == ["t_a", "t_b"]
