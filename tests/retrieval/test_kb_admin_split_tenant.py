"""The admin's knowledge search sees all of a tenant whose knowledge is spread over several
retrieval shards (more chunks than ``MTDESK_KB_SHARD_CHUNKS``), although the retrieval
shards' snapshots, each holding only its shard's part, lie in the same data directory
(the admin's in-process retriever is one shard: it must not take shard 0's part for
the whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.actors.retrieval_shard import RetrievalShard
from mtdesk.admin.app import setup_admin
from mtdesk.cli.compose import make_redis
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.placement import shard_of
from mtdesk.retrieval.store import KnowledgeStore

OPERATOR = "op-token-split-tenant"
PAIRS = 130  # chunk ids 1..130 with blocks of 100: two blocks, on the two shards


def pair(n: int) -> dict[str, str]:
    return {"q": f"Which code opens locker {n}?", "a": f"Locker {n} opens with code {7000 + n}."}


async def test_admin_search_finds_passages_of_every_shard_of_a_split_tenant(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {"MTDESK_REDIS_URL": redis_url, "MTDESK_ADMIN_TOKEN": OPERATOR,
         "MTDESK_DATA_DIR": str(tmp_path), "MTDESK_KB_EMBEDDER": "lexical",
         "MTDESK_KB_SHARD_CHUNKS": "100", "MTDESK_RETRIEVAL_SHARDS": "2"},
        dotenv=None,
    )
    tenant, api_key = await Tenants(redis, SystemClock()).create("Lockers", "ops@lockers.test")
    # Learned earlier (e.g. `mtdesk kb add`, or before the server restarted).
    service = KnowledgeService(KnowledgeStore(redis), settings)
    info = await service.add_qa(tenant.id, [pair(n) for n in range(1, PAIRS + 1)])
    assert (await service.run(tenant.id, info.id)).chunks == PAIRS

    # The two retrieval shard actors (the plain class) load their parts and snapshot them.
    held = {}
    for number in range(settings.retrieval_shards):
        shard = RetrievalShard(settings, number, settings.retrieval_shards)
        try:
            held[number] = await shard.sync(tenant.id)
            assert shard.snapshot() == 1
        finally:
            await shard.close()
    assert sorted(held.values()) == [PAIRS - 100, 100]
    assert len(list((tmp_path / "kb").rglob("*.idx"))) == 2

    on_shard: dict[int, list[int]] = {0: [], 1: []}
    for n in range(1, PAIRS + 1):  # one QA pair per chunk, ids in order
        on_shard[shard_of(tenant.id, n, 2, 100)].append(n)
    asked = [int(np.min(on_shard[0])), int(np.max(on_shard[0])),
             int(np.min(on_shard[1])), int(np.max(on_shard[1]))]

    app = web.Application()
    app[REDIS] = make_redis(settings)
    app[SETTINGS], app[CLOCK] = settings, SystemClock()
    setup_admin(app)
    try:
        async with TestClient(TestServer(app)) as client:
            for n in asked:
                resp = await client.get(
                    "/admin/api/v1/knowledge/search", params={"q": f"code of locker {n}", "k": "1"},
                    headers={"Authorization": f"Bearer {api_key.reveal()}"})
                assert resp.status == 200
                passages = (await resp.json())["passages"]
                assert [p["answer"] for p in passages] == [pair(n)["a"]], n
    finally:
        await app[REDIS].aclose()
