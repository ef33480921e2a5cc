"""The retriever reads a tenant's index metadata once per refresh, however many
conversations ask at the same moment (under load the 1 s cache expires with hundreds
waiting), and a caller that gives up does not fail the others."""

from __future__ import annotations

import asyncio

import pytest

from mtdesk.core.settings import Settings
from mtdesk.retrieval.search import Embedders, KnowledgeRetriever
from mtdesk.retrieval.store import IndexState


class SlowMetaStore:
    """Stands in for KnowledgeStore's metadata read; counts them."""

    def __init__(self) -> None:
        self.meta_reads = 0
        self.release = asyncio.Event()

    async def index_state(self, tenant: str, *, reader_ms: int = 0) -> IndexState:
        self.meta_reads += 1
        await self.release.wait()
        return IndexState(spec="", max_id=0, chunks=0)  # no knowledge base


def _retriever(store: SlowMetaStore) -> KnowledgeRetriever:
    return KnowledgeRetriever(store, [], Embedders(Settings()), block=1000,  # type: ignore[arg-type]
                              meta_ttl=60.0)


async def test_concurrent_searches_share_one_metadata_read() -> None:
    store = SlowMetaStore()
    retriever = _retriever(store)
    searches = [asyncio.create_task(retriever.search("t1", "hello")) for _ in range(50)]
    await asyncio.sleep(0.05)
    store.release.set()
    assert await asyncio.gather(*searches) == [[]] * 50
    assert store.meta_reads == 1
    assert await retriever.search("t1", "again") == []  # cached
    assert store.meta_reads == 1
    await retriever.refresh("t1")  # after an ingestion: read again
    assert await retriever.search("t1", "again") == []
    assert store.meta_reads == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    store = SlowMetaStore()
    retriever = _retriever(store)
    first = asyncio.create_task(retriever.search("t1", "hello"))
    second = asyncio.create_task(retriever.search("t1", "hello"))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.release.set()
    assert await second == []
    assert store.meta_reads == 1
