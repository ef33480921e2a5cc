"""Retrieval quality on the sample business, and provider embeddings through the fake."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from kb_harness import kb_settings

from mtdesk.core.errors import ProviderError
from mtdesk.core.ports import BotConfig, Passage
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.fakes.llm import FakeLLM
from mtdesk.retrieval.embedders import ProviderEmbedder, default_spec, embedder_for
from mtdesk.retrieval.evaluate import evaluate_bm25, evaluate_embedder, sample_chunks
from mtdesk.retrieval.extractive import ExtractiveModel
from mtdesk.retrieval.ingest import KnowledgeService
from mtdesk.retrieval.prompt import build_prompt
from mtdesk.retrieval.sample import questions, sample_files
from mtdesk.retrieval.search import local_retriever
from mtdesk.retrieval.store import KnowledgeStore


def test_the_sample_set_is_big_enough_and_every_label_names_a_sample_file() -> None:
    names = {name for name, _ in sample_files()}
    qs = questions()
    assert len(qs) >= 50 and {q.source for q in qs} == names


async def test_the_offline_default_finds_the_right_source() -> None:
    chunks = sample_chunks()
    lexical = await evaluate_embedder(embedder_for("lexical", Settings()), chunks)
    bm25 = evaluate_bm25(chunks)
    assert lexical.hit_at_5 >= 0.8 and lexical.hit_at_1 >= 0.6
    assert lexical.hit_at_1 >= bm25.hit_at_1 - 0.1  # no worse than plain keyword search


async def test_the_demo_business_answers_from_its_knowledge_without_an_llm(redis: Redis, tmp_path: Path) -> None:
    settings = kb_settings(tmp_path)
    store = KnowledgeStore(redis)
    retriever = local_retriever(store, settings)
    service = KnowledgeService(store, settings, on_change=retriever.refresh)
    await service.start()
    for name, data in sample_files():
        await service.add_file("demo", name, data)
    await service.drain()
    await service.stop()
    assert all(s.status == "ready" for s in await service.list("demo"))
    bot = BotConfig(fallback_message="Sorry, I don't know.")
    model = ExtractiveModel()
    hours = model.answer(bot, "are you open on sundays?", await retriever.search("demo", "are you open on sundays?"))
    assert "closed on Sundays" in hours and "faq.csv" in hours
    rent = model.answer(bot, "how much does it cost to rent an e-bike for a day?",
                        await retriever.search("demo", "how much does it cost to rent an e-bike for a day?"))
    assert "35 euros" in rent and "rentals.txt" in rent
    unknown = "do you sell skateboards or surfboards?"
    assert model.answer(bot, unknown, await retriever.search("demo", unknown)) == "Sorry, I don't know."


async def test_provider_embeddings_through_the_fake_and_the_passage_reaches_the_prompt() -> None:
    async with FakeLLM(dimension=128) as fake:
        embedder = ProviderEmbedder("fake", "fake-embed", fake.base_url, "k")
        score = await evaluate_embedder(embedder)
        assert embedder.dim == 128 and score.hit_at_5 >= 0.6
        embed_calls = [r for r in fake.requests if r.path.endswith("/embeddings")]
        assert embed_calls and embed_calls[0].model == "fake-embed"

        chunks = sample_chunks()
        passage = next(c for n, c in chunks if n == "rentals.txt")
        messages = build_prompt(BotConfig(), "rent a bike?", [Passage(text=passage.text, source="rentals.txt", score=0.5)])
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k")
        reply = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": m.role, "content": m.content} for m in messages])  # type: ignore[misc]
        await client.close()
        assert passage.text.split("\n")[0][:40] in fake.chat_requests[-1].prompt_text()
        assert "Source:" in (reply.choices[0].message.content or "")
        await embedder.aclose()


@pytest.mark.parametrize(("status", "retriable"), [(429, True), (503, True), (400, False)])
async def test_provider_embedding_failures_say_whether_to_retry(status: int, retriable: bool) -> None:
    async with FakeLLM() as fake:
        fake.fail_next(status, times=5)
        embedder = ProviderEmbedder("fake", "fake-embed", fake.base_url, "k")
        with pytest.raises(ProviderError) as err:
            await embedder.embed(["hello"])
        await embedder.aclose()
    assert err.value.retriable is retriable and str(status) in str(err.value)


def test_openrouter_is_the_default_embedder_when_its_key_is_set() -> None:
    keyed = Settings.from_env({"MTDESK_OPENROUTER_API_KEY": "sk-x"}, dotenv=None)
    assert default_spec(keyed).startswith("openrouter:")
    assert default_spec(Settings(kb_embedder="lexical")) == "lexical"


async def test_the_no_llm_bot_answers_most_questions_and_refuses_off_topic_ones() -> None:
    from mtdesk.retrieval.evaluate import evaluate_extractive

    result = await evaluate_extractive(embedder_for("lexical", Settings()))
    assert result.right >= 35 and result.wrong <= 5  # of 60 labelled questions
    assert result.off_topic_refused >= result.off_topic - 1
