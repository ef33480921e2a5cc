"""Answers through the openai SDK against fake providers, with the bot's fallback chain."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from prometheus_client import CollectorRegistry

from mtdesk.actors.llm import (
    LLMMetrics,
    ModelRouter,
    ProviderChatModel,
    build_messages,
    parse_fallback,
)
from mtdesk.core.errors import ProviderError, ValidationError
from mtdesk.core.ports import BotConfig, ChatMessage, Completion, Passage
from mtdesk.core.secret import Secret
from mtdesk.core.settings import ProviderConfig, Settings
from mtdesk.fakes.llm import FakeLLM

ASK = [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"), ChatMessage("user", "Do you ship to Norway?")]
PASSAGES = [Passage(text="We ship to all EU countries and Norway.", source="shipping.md", score=0.9),
            Passage(text="How long?", answer="3-5 days.", source="faq", score=0.7)]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    async with FakeLLM(api_key="key-a") as a, FakeLLM() as b:
        yield a, b


@pytest.fixture
async def model(fakes: tuple[FakeLLM, FakeLLM]) -> AsyncIterator[ProviderChatModel]:
    a, b = fakes
    settings = Settings(providers={
        "openrouter": ProviderConfig(name="openrouter", base_url=a.base_url, api_key=Secret("key-a")),
        "fireworks": ProviderConfig(name="fireworks", base_url=b.base_url),
    })
    m = ProviderChatModel(settings, timeout_s=0.5, metrics=LLMMetrics(CollectorRegistry()))
    yield m
    await m.aclose()


BOT = BotConfig(provider="openrouter", model="big-model", fallback=("fireworks:small/model:v1",),
                system_prompt="You are Acme's helper.", temperature=0.1, max_tokens=99)


async def test_answer_comes_from_the_bot_provider_with_passages_in_the_prompt(
        model: ProviderChatModel, fakes: tuple[FakeLLM, FakeLLM]) -> None:
    a, b = fakes
    done = await model.complete(BOT, ASK, PASSAGES)
    assert (done.provider, done.model) == ("openrouter", "big-model")
    assert done.text == ('[big-model] You said: Do you ship to Norway? '
                         'Source: "We ship to all EU countries and Norway."')
    [request] = a.chat_requests
    assert request.api_key == "key-a" and b.requests == []
    assert request.params["temperature"] == 0.1 and request.params["max_tokens"] == 99
    system = request.messages[0]
    assert system["role"] == "system" and system["content"].startswith("You are Acme's helper.")
    assert "[1] (source: shipping.md) We ship to all EU countries and Norway." in system["content"]
    assert "[2] (source: faq) Q: How long? A: 3-5 days." in system["content"]
    assert [m["content"] for m in request.messages[1:]] == ["Hi", "Hello!", "Do you ship to Norway?"]
    assert done.prompt_tokens > 0 and done.completion_tokens > 0


@pytest.mark.parametrize("failure", [500, 503, 429, "hang", "malformed"])
async def test_falls_back_to_the_next_provider(
        model: ProviderChatModel, fakes: tuple[FakeLLM, FakeLLM], failure: int | str) -> None:
    a, b = fakes
    a.fail_next(failure)
    done = await model.complete(BOT, ASK, [])
    assert (done.provider, done.model) == ("fireworks", "small/model:v1")
    assert len(a.chat_requests) == 1 and len(b.chat_requests) == 1
    assert b.chat_requests[0].messages == a.chat_requests[0].messages  # the same prompt


async def test_all_failing_raises_provider_error_naming_each(
        model: ProviderChatModel, fakes: tuple[FakeLLM, FakeLLM]) -> None:
    a, b = fakes
    a.fail_next(500)
    b.fail_next(429)
    with pytest.raises(ProviderError) as info:
        await model.complete(BOT, ASK, [])
    assert info.value.retriable
    assert "openrouter:big-model" in str(info.value) and "fireworks:small/model:v1" in str(info.value)
    assert isinstance(info.value.__cause__, ProviderError)
    assert isinstance(info.value.__cause__.__cause__, openai.RateLimitError)


async def test_a_refused_request_does_not_fall_back(
        model: ProviderChatModel, fakes: tuple[FakeLLM, FakeLLM]) -> None:
    a, b = fakes
    a.fail_next(400)
    with pytest.raises(ProviderError) as info:
        await model.complete(BOT, ASK, [])
    assert not info.value.retriable and b.requests == []


async def test_unknown_provider_in_the_chain_is_skipped(
        model: ProviderChatModel, fakes: tuple[FakeLLM, FakeLLM]) -> None:
    bot = BotConfig(provider="nosuch", model="m", fallback=("fireworks:m2",))
    with pytest.raises(ProviderError):
        await model.complete(BotConfig(provider="nosuch", model="m"), ASK, [])
    assert (await model.complete(bot, ASK, [])).provider == "fireworks"


class CannedOffline:
    """Our ChatModel interface answering offline (stands in for the extractive model)."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage],
                       *, language: str | None = None) -> Completion:
        self.calls += 1
        return Completion(text=passages[0].text if passages else "offline", provider="extractive", model="")


async def test_router_sends_extractive_bots_offline_and_others_to_providers(
        model: ProviderChatModel, fakes: tuple[FakeLLM, FakeLLM]) -> None:
    a, _ = fakes
    offline = CannedOffline()
    router = ModelRouter(model, offline)
    assert (await router.complete(BotConfig(), ASK, PASSAGES)).provider == "extractive"
    assert a.requests == []
    assert (await router.complete(BOT, ASK, PASSAGES)).provider == "openrouter"
    a.fail_next(503)
    last_resort = BotConfig(provider="openrouter", model="x", fallback=("extractive:",))
    assert (await router.complete(last_resort, ASK, PASSAGES)).text == PASSAGES[0].text
    assert offline.calls == 2


def test_fallback_items_are_validated() -> None:
    assert parse_fallback("OpenAI:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    with pytest.raises(ValidationError) as info:
        parse_fallback("gpt-4o")
    assert info.value.field == "fallback"


def test_a_knowledge_only_prompt_without_passages_forbids_business_facts() -> None:
    bot = BotConfig(system_prompt="Be brief.", fallback_message="Ask the shop.")
    messages = build_messages(bot, ASK, [])
    system = messages[0]["content"]
    assert system.startswith("Be brief.\n\nNo knowledge about this business is available")
    assert 'reply with exactly this sentence and nothing else: "Ask the shop."' in system
    assert [m["content"] for m in messages[1:]] == ["Hi", "Hello!", "Do you ship to Norway?"]


def test_a_general_prompt_keeps_its_rule_without_passages() -> None:
    system = build_messages(BotConfig(grounding="general"), ASK, [])[0]["content"]
    assert "answer from general knowledge" in system
    assert system.endswith("Knowledge: (nothing relevant was found)")


def test_passages_below_min_score_are_not_shown_to_the_model() -> None:
    bot = BotConfig(min_score=0.8)
    system = build_messages(bot, ASK, PASSAGES)[0]["content"]
    assert "[1] (source: shipping.md) We ship to all EU countries and Norway." in system
    assert "3-5 days" not in system and "[2]" not in system
    only_weak = build_messages(BotConfig(min_score=0.95), ASK, PASSAGES)[0]["content"]
    assert "Norway" not in only_weak and "No knowledge about this business" in only_weak
