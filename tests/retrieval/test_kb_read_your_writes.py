"""`ready` means what the bot answers from: a question asked right after a source turns
`ready` is answered from it by a conversation shard's retriever, in another process's
state (its own index and cached state), not from what it held before."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kb_harness import kb_settings

from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.retrieval.extractive import ExtractiveModel
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import local_retriever
from mtdesk.retrieval.store import KnowledgeStore

BOT = BotConfig(fallback_message="I don't know that yet.", min_score=0.35)


async def test_a_question_right_after_ready_is_answered_from_the_new_source(
    redis: Redis, tmp_path: Path
) -> None:
    settings = kb_settings(tmp_path)
    store = KnowledgeStore(redis)
    admin_side = local_retriever(store, settings)  # what the admin API refreshes
    service = KnowledgeService(store, settings, on_change=admin_side.refresh)
    await service.start()
    try:
        await service.add_qa("t1", [{"q": "When do you open?", "a": "We open at nine."}], name="Hours")
        await service.drain()
        # A conversation shard elsewhere has been answering this tenant: its state is warm.
        shard_side = local_retriever(store, settings)
        assert (await shard_side.search("t1", "when do you open", 3))[0].answer == "We open at nine."

        info = await service.add_qa(
            "t1", [{"q": "Do you rent cargo bikes?", "a": "Yes, cargo bikes are 45 euros a day."}],
            name="Rentals",
        )
        for _ in range(2000):  # poll as a client does; ask the moment it says ready
            status = (await service.get("t1", info.id)).status
            if status in ("ready", "failed"):
                break
            await asyncio.sleep(0.01)
        assert status == "ready"
        # Right after `ready`: the shard's retriever answers from the new source.
        passages = await shard_side.search("t1", "do you rent cargo bikes", 3)
        answer = ExtractiveModel().answer(BOT, "do you rent cargo bikes", passages)
        assert "45 euros a day" in answer
    finally:
        await service.stop()
