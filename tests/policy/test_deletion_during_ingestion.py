"""An ingestion job of the knowledge base that is under way when the account is erased
writes nothing of the tenant afterwards: once the deletion job reports done, and once the
ingestion has run to its end, neither Redis nor the data directory names the tenant or
holds its knowledge (real Redis, the real deletion job, a web page and an embedding
provider as real local servers that answer only when the test lets them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from _privacy_world import make_settings, where_found
from aiohttp import web

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import NotFound
from mtdesk.core.redis import Redis
from mtdesk.core.settings import ProviderConfig, Settings
from mtdesk.core.tenants import Tenants
from mtdesk.fakes.llm import FakeLLM
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.retrieval.chunking import Chunk
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.store import KnowledgeStore

PAGE = ("<html><head><title>Returns</title></head><body><main><h1>Returns</h1>"
        "<p>Returns of unworn shoes are free within 30 days of delivery.</p></main></body></html>")


@dataclass
class GatedSite:
    """A web page whose server answers only after ``release``."""

    url: str = ""
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def gated_site(body: str) -> AsyncIterator[GatedSite]:
    site = GatedSite()

    async def page(request: web.Request) -> web.Response:
        site.requested.set()
        await site.released.wait()
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/returns", page)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    site.url = f"http://127.0.0.1:{port}/returns"
    try:
        yield site
    finally:
        site.released.set()
        await runner.cleanup()


async def until(check: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        done = check()
        if done if isinstance(done, bool) else await done:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time allowed")


async def erase_account(redis: Redis, settings: Settings, tenant_id: str) -> None:
    """Schedule the account's deletion and run the job to its end (status done)."""
    job = await DeletionJobs(redis, FakeClock()).schedule_account(tenant_id)
    assert await DeletionWorker(redis, settings, FakeClock()).run_once() == 1
    assert (await DeletionJobs(redis, FakeClock()).get(job.id)).status == "done"


async def test_an_ingestion_reading_a_page_when_the_account_is_erased_leaves_nothing(
    redis: Redis, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, kb_embedder="lexical", kb_allow_private_urls=True)
    tenant, _ = await Tenants(redis, FakeClock()).create("Shoe shop", "ops@shoes.test")
    service = KnowledgeService(KnowledgeStore(redis), settings)
    await service.start(resume=False)
    try:
        async with gated_site(PAGE) as site:
            await service.add_url(tenant.id, site.url)
            await asyncio.wait_for(site.requested.wait(), 10)  # the job is reading the page

            await erase_account(redis, settings, tenant.id)
            assert await where_found(redis, tmp_path, [tenant.id]) == []

            site.released.set()  # the job goes on: chunks, embedding, storing
            await asyncio.wait_for(service.drain(), 10)
    finally:
        await service.stop()
    assert await where_found(redis, tmp_path, [tenant.id, "unworn shoes"]) == []


async def test_re_embedding_under_way_when_the_account_is_erased_brings_no_vectors_back(
    redis: Redis, tmp_path: Path
) -> None:
    tenant, _ = await Tenants(redis, FakeClock()).create("Shoe shop", "ops@shoes.test")
    store = KnowledgeStore(redis)
    lexical = KnowledgeService(store, make_settings(tmp_path, kb_embedder="lexical"))
    first = await lexical.add_qa(tenant.id, [{"q": "Are returns free?", "a": "Within 30 days."}])
    assert (await lexical.run(tenant.id, first.id)).status == "ready"

    async with FakeLLM(dimension=32) as llm:
        # The operator switches to a provider's embeddings: the next ingestion re-embeds
        # every chunk the tenant has, through the provider, before its own.
        settings = make_settings(
            tmp_path, kb_embedder="openai:fake-embed",
            providers={"openai": ProviderConfig(name="openai", base_url=llm.base_url)},
        )
        service = KnowledgeService(store, settings)
        await service.start(resume=False)
        try:
            llm.hold()
            await service.add_qa(tenant.id, [{"q": "Do you ship abroad?", "a": "To 40 countries."}])
            await until(lambda: llm.waiting == 1)  # re-embedding the old chunk

            await erase_account(redis, settings, tenant.id)
            assert await where_found(redis, tmp_path, [tenant.id]) == []

            llm.release()
            await asyncio.wait_for(service.drain(), 10)
        finally:
            await service.stop()
    assert await where_found(redis, tmp_path, [tenant.id, "Within 30 days", "40 countries"]) == []


async def test_no_knowledge_write_goes_through_once_the_account_erasure_started(
    redis: Redis, tmp_path: Path
) -> None:
    tenants = Tenants(redis, FakeClock())
    (gone, _), (kept, _) = [await tenants.create(n, f"ops@{n}.test") for n in ("gone", "kept")]
    store = KnowledgeStore(redis)
    sources = {t.id: await store.create_source(t.id, kind="qa", name="FAQ", spec=b"")
               for t in (gone, kept)}
    await DeletionJobs(redis, FakeClock()).schedule_account(gone.id)  # the job has not run yet

    chunk, vector = [Chunk(text="Returns are free.")], np.ones((1, 8), np.float32)
    writes = {
        "a source": store.create_source(gone.id, kind="qa", name="More", spec=b""),
        "its progress": store.update_source(gone.id, sources[gone.id].id, done=1),
        "chunks, their counter and the change log": store.add_chunks(
            gone.id, sources[gone.id].id, "FAQ", chunk, vector),
        "vectors": store.put_vectors(gone.id, [1], vector),
        "index metadata": store.set_meta(gone.id, spec="lexical"),
        "a change-log entry": store.log(gone.id, "reset"),
        "a build lock": store.lock_source(gone.id, sources[gone.id].id, 60),
        "a pending job": store.mark_pending(gone.id, sources[gone.id].id),
    }
    for what, write in writes.items():
        with pytest.raises(NotFound):
            await write
        assert not await redis.exists(keys.kb_seq(gone.id), keys.kb_log(gone.id),
                                      keys.kb_chunks(gone.id), keys.kb_vectors(gone.id),
                                      keys.kb_meta(gone.id)), what
    # Another tenant writes as before.
    ids = await store.add_chunks(kept.id, sources[kept.id].id, "FAQ", chunk, vector)
    assert await store.attach_chunk_ids(kept.id, sources[kept.id].id, ids)
    assert (await store.index_state(kept.id)).chunks == 1
