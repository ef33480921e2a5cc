"""When the knowledge has nothing: a knowledge_only LLM bot answers its fallback message
without asking a model, a tenant with no knowledge base yet still gets (careful) model
answers, a general bot keeps its rule, and the extractive bot is unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shardkit import Desk, desk, eventually

from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.search import KnowledgeRetriever, local_retriever
from mtdesk.retrieval.store import KnowledgeStore

FAQ = [
    {"q": "How long does shipping take?", "a": "Orders arrive in 3 to 5 business days."},
    {"q": "What are your opening hours?", "a": "9 to 5, Monday to Friday."},
]
FALLBACK = "I can't tell you that yet; a colleague will get back to you."


def llm_bot(**fields: object) -> BotConfig:
    return BotConfig(provider="openai", model="gpt-test", system_prompt="You are Acme's assistant.",
                     fallback_message=FALLBACK, **fields)  # type: ignore[arg-type]


@asynccontextmanager
async def knowledge_desk(redis: Redis, redis_url: str, tmp_path: Path, bot: BotConfig, *,
                         faq: bool = True) -> AsyncIterator[tuple[Desk, KnowledgeRetriever]]:
    """A desk whose shard searches the tenant's knowledge base (the FAQ, unless not)."""
    async with desk(redis, redis_url, bot=bot, kb_embedder="lexical",
                    data_dir=str(tmp_path / "data")) as d:
        store = KnowledgeStore(redis)
        retriever = local_retriever(store, d.settings)
        if faq:
            service = KnowledgeService(store, d.settings, on_change=retriever.refresh)
            await service.start()
            try:
                await service.add_qa(d.tenant_id, FAQ, name="FAQ")
                await service.drain()
            finally:
                await service.stop()
        yield d, retriever


def system_prompt(d: Desk) -> str:
    [request] = d.llm.chat_requests
    assert request.messages[0]["role"] == "system"
    return str(request.messages[0]["content"])


async def test_knowledge_only_with_nothing_relevant_answers_the_fallback_without_a_model(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with knowledge_desk(redis, redis_url, tmp_path, llm_bot()) as (d, retriever):
        shard = await d.shard(retriever=retriever)
        await shard.start()
        event = d.message("do you sell skateboards?")
        await d.push(event)
        await eventually(lambda: len(d.graph.sends) == 1)
        await eventually(lambda: shard.handled == 1)
        assert d.texts_to("U1") == [FALLBACK]
        assert d.llm.chat_requests == []  # no model was asked
        assert shard.metrics.count("no_knowledge") == 1 and shard.metrics.count("sent") == 0
        history = await d.store().read(d.tenant_id, event.conversation)
        reply = [m for m in history if m.direction == "out"]
        assert [(m.text, m.provider) for m in reply] == [(FALLBACK, "fallback")]


async def test_passages_below_min_score_are_never_shown_and_count_as_nothing(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    # "when are you open" matches the hours pair weakly (lexical cosine ~0.36).
    async with knowledge_desk(redis, redis_url, tmp_path, llm_bot(min_score=0.5)) as (d, r):
        shard = await d.shard(retriever=r)
        await shard.start()
        await d.push(d.message("when are you open"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == [FALLBACK] and d.llm.chat_requests == []


async def test_knowledge_only_with_a_relevant_passage_asks_the_model_with_the_rule(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with knowledge_desk(redis, redis_url, tmp_path, llm_bot()) as (d, retriever):
        shard = await d.shard(retriever=retriever)
        await shard.start()
        await d.push(d.message("how long does shipping take"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await eventually(lambda: shard.handled == 1)
        system = system_prompt(d)
        assert "Answer ONLY from the knowledge below" in system and FALLBACK in system
        assert "[1] (source: FAQ) Q: How long does shipping take?" in system
        assert "opening hours" not in system  # not relevant enough to be shown
        assert d.texts_to("U1")[0].startswith("[gpt-test] You said: how long does shipping")
        assert shard.metrics.count("no_knowledge") == 0


async def test_a_tenant_without_knowledge_base_gets_a_model_that_invents_nothing(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with knowledge_desk(redis, redis_url, tmp_path, llm_bot(), faq=False) as (d, r):
        shard = await d.shard(retriever=r)
        await shard.start()
        await d.push(d.message("do you sell skateboards?"))
        await eventually(lambda: len(d.graph.sends) == 1)
        system = system_prompt(d)
        assert system.startswith("You are Acme's assistant.\n\n")
        assert "No knowledge about this business is available" in system
        assert "Never state facts about the business" in system
        assert f'exactly this sentence and nothing else: "{FALLBACK}"' in system
        assert d.texts_to("U1") == ["[gpt-test] You said: do you sell skateboards?"]
        assert shard.metrics.count("no_knowledge") == 0


async def test_without_any_retriever_the_model_gets_the_no_knowledge_rule(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=llm_bot()) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("hello"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert "No knowledge about this business is available" in system_prompt(d)


async def test_general_grounding_keeps_its_rule_when_nothing_is_relevant(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    bot = llm_bot(grounding="general", min_score=0.5)
    async with knowledge_desk(redis, redis_url, tmp_path, bot) as (d, retriever):
        shard = await d.shard(retriever=retriever)
        await shard.start()
        await d.push(d.message("when are you open"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await eventually(lambda: shard.handled == 1)
        system = system_prompt(d)
        assert "answer from general knowledge" in system and "never invent facts" in system
        assert "Knowledge: (nothing relevant was found)" in system
        assert "opening hours" not in system and "[1]" not in system
        assert d.texts_to("U1") == ["[gpt-test] You said: when are you open"]
        assert shard.metrics.count("no_knowledge") == 0


async def test_the_extractive_bot_still_answers_from_the_knowledge_or_falls_back_itself(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    bot = BotConfig(fallback_message=FALLBACK)  # provider "extractive"
    async with knowledge_desk(redis, redis_url, tmp_path, bot) as (d, retriever):
        shard = await d.shard(retriever=retriever)
        await shard.start()
        await d.push(d.message("how long does shipping take?", user="U1"))
        await d.push(d.message("do you sell skateboards?", user="U2"))
        await eventually(lambda: len(d.graph.sends) == 2)
        await eventually(lambda: shard.handled == 2)
        assert d.texts_to("U1") == ["Orders arrive in 3 to 5 business days.\n\n(Source: FAQ)"]
        assert d.texts_to("U2") == [FALLBACK]
        assert d.llm.chat_requests == []
        assert shard.metrics.count("no_knowledge") == 0 and shard.metrics.count("sent") == 2
