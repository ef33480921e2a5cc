"""Suggested replies, as the person sees them: an answer from the knowledge base offers
the related questions of its Q&A as taps (Messenger/Instagram quick replies, WhatsApp
reply buttons), and a tap is answered as the whole question it stands for.

Real shard, real Redis, the tenant's real knowledge base (lexical embedder), the fake
Graph API (which refuses bodies breaking Meta's limits) and the fake LLM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shardkit import Desk, desk, eventually

from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import local_retriever
from mtdesk.retrieval.store import KnowledgeStore

FAQ = [
    {"q": "How long does shipping take?", "a": "Orders arrive in 3 to 5 business days."},
    {"q": "How much does shipping cost?", "a": "Shipping is free over 50 euros."},
    {"q": "Do you offer shipping abroad to other countries?", "a": "Yes, within the EU."},
    {"q": "What are your opening hours?", "a": "9 to 5, Monday to Friday."},
]


def bot(**fields: object) -> BotConfig:
    return BotConfig(provider="openai", model="gpt-test", min_score=0.05,
                     system_prompt="You are Acme's assistant.", **fields)  # type: ignore[arg-type]


@asynccontextmanager
async def faq_desk(redis: Redis, redis_url: str, tmp_path: Path,
                   config: BotConfig) -> AsyncIterator[Desk]:
    async with desk(redis, redis_url, bot=config, kb_embedder="lexical",
                    data_dir=str(tmp_path / "data")) as d:
        store = KnowledgeStore(redis)
        retriever = local_retriever(store, d.settings)
        service = KnowledgeService(store, d.settings, on_change=retriever.refresh)
        await service.start()
        try:
            await service.add_qa(d.tenant_id, FAQ, name="FAQ")
            await service.drain()
        finally:
            await service.stop()
        shard = await d.shard(retriever=retriever)
        await shard.start()
        yield d


async def test_messenger_answers_offer_related_questions_as_quick_replies(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with faq_desk(redis, redis_url, tmp_path, bot()) as d:
        await d.push(d.message("how long does shipping take", user="S1"))
        await eventually(lambda: d.texts_to("S1"))
        [send] = d.graph.sends
        quick = send.body["message"]["quick_replies"]
        titles = [q["title"] for q in quick]
        assert 1 <= len(quick) <= 3 and all(len(t) <= 20 for t in titles)
        assert "How much does shipping cost?" not in titles  # 28 characters: cut
        assert any(t.startswith("How much does") and t.endswith("…") for t in titles)
        assert not any("How long" in t for t in titles)  # never the question just asked

        # The tap carries the whole question, whatever its title shows.
        tapped = next(q for q in quick if q["title"].startswith("How much"))
        await d.push(d.message(tapped["title"], user="S1", quick_reply=tapped["payload"]))
        await eventually(lambda: len(d.texts_to("S1")) == 2)
        asked = d.llm.chat_requests[-1].messages[-1]["content"]
        assert asked == "How much does shipping cost?"


async def test_whatsapp_answers_offer_them_as_reply_buttons_or_a_list(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with faq_desk(redis, redis_url, tmp_path, bot()) as d:
        await d.push(d.message("how long does shipping take", user="S2", channel="whatsapp"))
        await eventually(lambda: d.texts_to("S2"))
        [send] = d.graph.sends
        assert send.body["type"] == "interactive"
        interactive = send.body["interactive"]
        # A suggestion longer than a button's 20 characters: a list, whole words kept.
        assert interactive["type"] == "list"
        rows = interactive["action"]["sections"][0]["rows"]
        assert all(len(r["title"]) <= 24 for r in rows)
        assert interactive["body"]["text"].startswith("[gpt-test] You said:")
        tapped = rows[0]
        await d.push(d.message(tapped["title"], user="S2", channel="whatsapp",
                               interactive_id=tapped["id"]))
        await eventually(lambda: len(d.texts_to("S2")) == 2)
        asked = d.llm.chat_requests[-1].messages[-1]["content"]
        assert asked in {f["q"] for f in FAQ}


async def test_a_bot_may_turn_suggestions_off(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with faq_desk(redis, redis_url, tmp_path, bot(suggestions=False)) as d:
        await d.push(d.message("how long does shipping take", user="S3"))
        await eventually(lambda: d.texts_to("S3"))
        assert "quick_replies" not in d.graph.sends[0].body["message"]
