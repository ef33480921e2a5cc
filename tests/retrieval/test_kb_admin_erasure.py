"""The admin's knowledge search forgets what was erased, in every gateway worker: after an
account deletion no worker's in-process retriever holds the tenant's vectors and the
search answers 401/404; a deleted source is gone from every worker's results at once; an
account erased while no notice could arrive is dropped once the subscription is up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.admin.app import setup_admin
from mtdesk.admin.knowledge import KB_RETRIEVER, own_retriever
from mtdesk.cli.compose import make_redis
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.retrieval.index_slice import IndexSlice
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import KnowledgeRetriever, local_retriever
from mtdesk.retrieval.store import KnowledgeStore

OPERATOR = "op-token-kb-erasure"
API = "/admin/api/v1"
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}


class Worker:
    """One gateway worker process's view: its own app, Redis client and admin sub-app."""

    def __init__(self, client: TestClient, admin: web.Application) -> None:
        self.client = client
        self.admin = admin

    @property
    def retriever(self) -> KnowledgeRetriever:
        retriever = own_retriever(self.admin)
        assert retriever is not None
        return retriever

    async def search(self, auth: dict[str, str], q: str, **params: str) -> tuple[int, Any]:
        resp = await self.client.get(f"{API}/knowledge/search", params={"q": q, **params}, headers=auth)
        return resp.status, await resp.json()


def vectors_held(retriever: KnowledgeRetriever, tenant: str) -> int:
    """Vectors of ``tenant`` in the FAISS indexes this process holds."""
    total = 0
    for shard in retriever.shards:
        assert isinstance(shard, IndexSlice)
        held = shard.stats()["tenants"]
        assert isinstance(held, dict)
        total += held.get(tenant, {}).get("vectors", 0)
    return total


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"MTDESK_REDIS_URL": redis_url, "MTDESK_ADMIN_TOKEN": OPERATOR,
         "MTDESK_DATA_DIR": str(tmp_path), "MTDESK_KB_EMBEDDER": "lexical"},
        dotenv=None,
    )


@pytest.fixture
async def workers(redis: Redis, settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def start(retriever: KnowledgeRetriever | None = None) -> Worker:
            app = web.Application()
            app[REDIS] = make_redis(settings)  # as in production: its own client, with retries
            stack.push_async_callback(app[REDIS].aclose)
            app[SETTINGS], app[CLOCK] = settings, SystemClock()
            if retriever is not None:
                app[KB_RETRIEVER] = retriever
            admin = setup_admin(app)
            client = await stack.enter_async_context(TestClient(TestServer(app)))
            return Worker(client, admin)

        yield start


async def new_tenant(worker: Worker, name: str) -> tuple[str, dict[str, str]]:
    resp = await worker.client.post(f"{API}/tenants", headers=AS_OPERATOR,
                                    json={"name": name, "email": f"ops@{name.lower()}.test"})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


async def add_qa(worker: Worker, auth: dict[str, str], name: str, q: str, a: str) -> str:
    resp = await worker.client.post(f"{API}/knowledge", headers=auth,
                                    json={"qa": [{"q": q, "a": a}], "name": name})
    assert resp.status == 202, await resp.text()
    sid: str = (await resp.json())["id"]
    for _ in range(250):
        info = await (await worker.client.get(f"{API}/knowledge/{sid}", headers=auth)).json()
        if info["status"] == "ready":
            return sid
        assert info["status"] != "failed", info
        await asyncio.sleep(0.02)
    raise AssertionError(f"source {name} never became ready")


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time allowed")


async def run_deletions(redis: Redis, settings: Settings) -> None:
    worker = DeletionWorker(redis, settings, SystemClock())
    while await worker.run_once():
        pass


async def test_an_erased_account_leaves_the_knowledge_search_of_every_worker(
    redis: Redis, settings: Settings, workers: Callable[..., Any]
) -> None:
    one, two = await workers(), await workers()
    acme, acme_key = await new_tenant(one, "Acme")
    other, other_key = await new_tenant(one, "Other")
    await add_qa(one, acme_key, "Acme FAQ", "Do you ship abroad?", "Yes, to 40 countries.")
    await add_qa(one, other_key, "Other FAQ", "Do you ship abroad?", "Only within the EU.")
    for worker in (one, two):
        for auth, answer in ((acme_key, "Yes, to 40 countries."), (other_key, "Only within the EU.")):
            status, found = await worker.search(auth, "ship abroad")
            assert status == 200 and found["passages"][0]["answer"] == answer
        assert vectors_held(worker.retriever, acme) == 1

    resp = await one.client.delete(f"{API}/account", headers=acme_key)
    assert resp.status == 202
    await run_deletions(redis, settings)

    # The purge notices arrive over pub/sub: each worker drops the tenant on its own.
    await eventually(lambda: all(acme not in w.retriever.held() for w in (one, two)))
    for worker in (one, two):
        assert vectors_held(worker.retriever, acme) == 0
        assert (await worker.search(acme_key, "ship abroad"))[0] == 401
        status, body = await worker.search(AS_OPERATOR, "ship abroad", tenant_id=acme)
        assert status == 404 and "passages" not in body
        # The other account's knowledge is untouched, in memory and in answers.
        assert vectors_held(worker.retriever, other) == 1
        status, found = await worker.search(other_key, "ship abroad")
        assert found["passages"][0]["answer"] == "Only within the EU."
    assert [t.id for t in await Tenants(redis, SystemClock()).list()] == [other]


async def test_a_deleted_source_is_gone_from_every_workers_results_at_once(
    workers: Callable[..., Any],
) -> None:
    one, two = await workers(), await workers()
    _, auth = await new_tenant(one, "Acme")
    shipping = await add_qa(one, auth, "Shipping", "Do you ship abroad?", "Yes, to 40 countries.")
    await add_qa(one, auth, "Returns", "Can I return an item bought abroad?", "Within 30 days.")
    for worker in (one, two):
        found = (await worker.search(auth, "ship abroad"))[1]["passages"]
        assert found[0]["source"] == "Shipping"

    resp = await one.client.delete(f"{API}/knowledge/{shipping}", headers=auth)
    assert (await resp.json()) == {"deleted": shipping, "chunks": 1}
    for worker in (one, two):  # no waiting: the other worker's index has not caught up yet
        found = (await worker.search(auth, "ship abroad"))[1]["passages"]
        assert [p["source"] for p in found] == ["Returns"]


async def test_an_account_erased_while_no_notice_could_arrive_is_dropped_once_subscribed(
    redis: Redis, settings: Settings, workers: Callable[..., Any],
) -> None:
    # A retriever the composition root shares with the routes, loaded before they listen.
    store = KnowledgeStore(redis, SystemClock())
    retriever = local_retriever(store, settings)
    service = KnowledgeService(store, settings, on_change=retriever.refresh)
    tenants = Tenants(redis, SystemClock())
    (gone, _), (kept, _) = [await tenants.create(n, f"{n}@shop.test") for n in ("gone", "kept")]
    for record in (gone, kept):
        info = await service.add_qa(record.id, [{"q": "Do you ship abroad?", "a": "Yes."}])
        await service.run(record.id, info.id)
        assert (await retriever.search(record.id, "ship abroad"))[0].answer == "Yes."
    await DeletionJobs(redis, SystemClock()).schedule_account(gone.id)
    await run_deletions(redis, settings)  # its notices went out before anyone listened
    assert vectors_held(retriever, gone.id) == 1

    worker = await workers(retriever)
    _, auth = await new_tenant(worker, "Third")
    assert (await worker.search(auth, "anything"))[0] == 200  # first use: subscribes
    await eventually(lambda: gone.id not in retriever.held())
    assert vectors_held(retriever, gone.id) == 0
    assert vectors_held(retriever, kept.id) == 1
