"""Adding, re-syncing and deleting knowledge, in the background, with visible status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kb_harness import html_page, kb_settings, local_site, make_pdf

from mtdesk.core.errors import NotFound, ValidationError
from mtdesk.core.redis import Redis
from mtdesk.retrieval.crawl import CrawlOptions
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import KnowledgeRetriever, local_retriever
from mtdesk.retrieval.store import KnowledgeStore

FAQ = [
    {"q": "How long does shipping take?", "a": "Orders arrive in 3 to 5 business days."},
    {"q": "Do you ship abroad?", "a": "Yes, we ship to 40 countries."},
]


@pytest.fixture
async def kb(redis: Redis, tmp_path: Path) -> AsyncIterator[tuple[KnowledgeService, KnowledgeRetriever]]:
    settings = kb_settings(tmp_path, kb_allow_private_urls=True)
    store = KnowledgeStore(redis)
    retriever = local_retriever(store, settings)
    service = KnowledgeService(store, settings, on_change=retriever.refresh)
    await service.start()
    try:
        yield service, retriever
    finally:
        await service.stop()


async def test_qa_pairs_become_searchable_and_the_source_reports_ready(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    info = await service.add_qa("t1", FAQ, name="FAQ")
    assert info.status == "queued"
    await service.drain()
    done = await service.get("t1", info.id)
    assert done.status == "ready" and done.chunks == 2
    (top, *_) = await retriever.search("t1", "how long until my order ships", 3)
    assert top.answer == "Orders arrive in 3 to 5 business days." and top.source == "FAQ"


async def test_the_retriever_says_whether_a_tenant_has_any_knowledge(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    assert not await retriever.has_knowledge("t1")
    info = await service.add_qa("t1", FAQ)
    await service.drain()
    assert await retriever.has_knowledge("t1") and not await retriever.has_knowledge("t2")
    await service.delete("t1", info.id)
    assert not await retriever.has_knowledge("t1")  # every source deleted: none again


async def test_a_file_is_read_at_upload_and_indexed_in_the_background(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    pdf = make_pdf(["Warranty", "Every kettle has a two year warranty against defects."])
    info = await service.add_file("t1", "warranty.pdf", pdf, "application/pdf")
    await service.drain()
    assert (await service.get("t1", info.id)).status == "ready"
    passages = await retriever.search("t1", "kettle warranty", 1)
    assert passages[0].source == "warranty.pdf" and "two year" in passages[0].text


async def test_a_bad_upload_is_refused_before_anything_is_queued(kb) -> None:  # type: ignore[no-untyped-def]
    service, _ = kb
    with pytest.raises(ValidationError) as err:
        await service.add_file("t1", "empty.txt", b"", "text/plain")
    assert err.value.field == "file"
    assert await service.list("t1") == []


async def test_deleting_a_source_removes_its_answers(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    faq = await service.add_qa("t1", FAQ)
    other = await service.add_qa("t1", [{"q": "Opening hours?", "a": "9 to 5, Monday to Friday."}])
    await service.drain()
    assert await service.delete("t1", faq.id) == 2
    passages = await retriever.search("t1", "how long does shipping take", 5)
    assert all("ship" not in (p.answer or "") for p in passages)
    assert [s.id for s in await service.list("t1")] == [other.id]
    with pytest.raises(NotFound):
        await service.get("t1", faq.id)


async def test_tenants_never_see_each_others_knowledge(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    await service.add_qa("t1", FAQ)
    await service.drain()
    assert await retriever.search("t2", "how long does shipping take", 5) == []


async def test_a_url_source_resyncs_to_the_new_content_and_fails_with_the_reason(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    pages = {"/": (200, "text/html", html_page("Hours", "<p>We open at nine every morning.</p>"))}
    async with local_site(pages) as root:
        info = await service.add_url("t1", root + "/")
        await service.drain()
        assert (await service.get("t1", info.id)).status == "ready"
        assert "nine" in (await retriever.search("t1", "when do you open", 1))[0].text
        pages["/"] = (200, "text/html", html_page("Hours", "<p>We open at ten every morning.</p>"))
        await service.resync("t1", info.id)
        await service.drain()
        texts = [p.text for p in await retriever.search("t1", "when do you open", 5)]
        assert any("ten" in t for t in texts) and not any("nine" in t for t in texts)
        del pages["/"]
        await service.resync("t1", info.id)
        await service.drain()
    failed = await service.get("t1", info.id)
    assert failed.status == "failed" and "404" in (failed.error or "")


async def test_a_crawl_reports_pages_and_cites_each_page(kb) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    pages = {
        "/": (200, "text/html", html_page("Home", "<p>Acme kettles.</p>", ["/care"])),
        "/care": (200, "text/html", html_page("Kettle care", "<p>Descale the kettle monthly with vinegar.</p>")),
    }
    async with local_site(pages) as root:
        info = await service.add_url("t1", root + "/", CrawlOptions(crawl=True, max_pages=10))
        await service.drain()
    done = await service.get("t1", info.id)
    assert done.status == "ready" and done.pages == 2
    assert (await retriever.search("t1", "how do I descale", 1))[0].source == "Kettle care"


async def test_a_private_url_is_refused_at_once_by_default(redis: Redis, tmp_path: Path) -> None:
    service = KnowledgeService(KnowledgeStore(redis), kb_settings(tmp_path))
    with pytest.raises(ValidationError) as err:
        await service.add_url("t1", "http://169.254.169.254/latest/meta-data/")
    assert "metadata" in err.value.problem


async def test_changing_the_embedder_re_embeds_what_is_there(redis: Redis, tmp_path: Path) -> None:
    store = KnowledgeStore(redis)
    first = kb_settings(tmp_path, kb_embedder="lexical:512")
    service = KnowledgeService(store, first)
    await service.start()
    await service.add_qa("t1", FAQ)
    await service.drain()
    await service.stop()
    assert (await store.meta("t1"))["dim"] == "512"
    second = kb_settings(tmp_path, kb_embedder="lexical:256")
    retriever = local_retriever(store, second)
    service = KnowledgeService(store, second, on_change=retriever.refresh)
    await service.start()
    await service.add_qa("t1", [{"q": "Opening hours?", "a": "9 to 5."}])
    await service.drain()
    await service.stop()
    assert (await store.meta("t1"))["embedder"] == "lexical-v1:256"
    (top, *_) = await retriever.search("t1", "do you ship abroad", 1)
    assert top.answer == "Yes, we ship to 40 countries."


async def test_a_restarted_worker_resumes_unfinished_jobs(redis: Redis, tmp_path: Path) -> None:
    store = KnowledgeStore(redis)
    settings = kb_settings(tmp_path)
    crashed = KnowledgeService(store, settings)  # never started: its job stays queued
    info = await crashed.add_qa("t1", FAQ)
    resumed = KnowledgeService(store, settings)
    await resumed.start()
    await asyncio.wait_for(resumed.drain(), 10)
    await resumed.stop()
    assert (await store.get_source("t1", info.id)).status == "ready"


async def test_a_file_resyncs_from_its_stored_upload_and_delete_removes_the_upload(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, retriever = kb
    info = await service.add_file("t1", "hours.md", b"# Hours\n\nWe open at nine.\n")
    await service.drain()
    uploads = list((tmp_path / "data" / "uploads").rglob("hours.md"))
    assert len(uploads) == 1
    await service.resync("t1", info.id)
    await service.drain()
    again = await service.get("t1", info.id)
    assert again.status == "ready" and again.chunks == 1
    assert len(await retriever.search("t1", "when do you open", 5)) == 1  # replaced, not doubled
    await service.delete("t1", info.id)
    assert not uploads[0].exists()


class DeletedMidway(KnowledgeStore):
    """A store in which the source is deleted (as by a concurrent DELETE) right after
    the job stored its chunks and before it attaches them."""

    async def add_chunks(self, tenant, sid, name, chunks, vectors):  # type: ignore[no-untyped-def]
        ids = await super().add_chunks(tenant, sid, name, chunks, vectors)
        await self.delete_source(tenant, sid)
        return ids


async def test_a_source_deleted_while_it_is_processed_leaves_nothing_behind(redis: Redis, tmp_path: Path) -> None:
    store = DeletedMidway(redis)
    service = KnowledgeService(store, kb_settings(tmp_path))
    info = await service.add_qa("t1", FAQ)  # not started: the job is run here, by hand
    done = await service.run("t1", info.id)
    assert done.status == "failed"
    assert len(await store.all_chunk_ids("t1")) == 0 and await store.list_sources("t1") == []


async def test_a_source_another_process_is_building_waits_for_it(redis: Redis, tmp_path: Path) -> None:
    store = KnowledgeStore(redis)
    service = KnowledgeService(store, kb_settings(tmp_path), retry_locked_s=0.05)
    info = await service.add_qa("t1", FAQ)
    assert await store.lock_source("t1", info.id, 60)  # "another process" holds the build
    await service.start()
    await asyncio.sleep(0.3)
    assert (await store.get_source("t1", info.id)).status == "queued"
    await store.unlock_source("t1", info.id)
    for _ in range(100):
        if (await store.get_source("t1", info.id)).status == "ready":
            break
        await asyncio.sleep(0.05)
    await service.stop()
    assert (await store.get_source("t1", info.id)).status == "ready"


async def test_purging_a_tenant_erases_its_knowledge_files_and_snapshots(
    redis: Redis, tmp_path: Path
) -> None:
    settings = kb_settings(tmp_path)
    store = KnowledgeStore(redis)
    retriever = local_retriever(store, settings, check_interval=0.0)
    service = KnowledgeService(store, settings, on_change=retriever.refresh)
    await service.start()
    await service.add_file("gone", "hours.md", b"# Hours\n\nWe open at nine.\n")
    await service.add_qa("kept", FAQ)
    await service.drain()
    for shard in retriever.shards:
        shard.snapshot()  # type: ignore[attr-defined]
    data = tmp_path / "data"
    assert list(data.rglob("gone.idx")) and list(data.rglob("hours.md"))
    await service.purge_tenant("gone")
    await service.stop()
    assert await retriever.search("gone", "when do you open") == []
    assert not [k async for k in redis.scan_iter(match="mt:t:gone:*")]
    assert not list(data.rglob("gone.idx")) and not list(data.rglob("hours.md"))
    assert (await retriever.search("kept", "do you ship abroad"))[0].answer == "Yes, we ship to 40 countries."


async def test_a_pending_job_of_an_erased_account_is_forgotten(redis: Redis, tmp_path: Path) -> None:
    store = KnowledgeStore(redis)
    service = KnowledgeService(store, kb_settings(tmp_path))
    info = await service.add_qa("erased", FAQ)  # queued, never run
    async for key in redis.scan_iter(match="mt:t:erased:*"):  # as the deletion job does
        await redis.delete(key)
    resumed = KnowledgeService(store, kb_settings(tmp_path))
    await resumed.start()
    await asyncio.wait_for(resumed.drain(), 10)
    await resumed.stop()
    assert (("erased", info.id)) not in await store.pending()
