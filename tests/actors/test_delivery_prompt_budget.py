"""The prompt sent to a provider fits the model's context window: a long history and
large passages are cut (oldest turns first, then the weakest passages) instead of the
provider refusing the call with 400 context_length_exceeded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from mtdesk.actors.llm import LLMMetrics, ProviderChatModel
from mtdesk.core.errors import ProviderError, ValidationError
from mtdesk.core.ports import BotConfig, ChatMessage, Passage
from mtdesk.core.settings import ProviderConfig, Settings
from mtdesk.core.tenants import parse_bot_config
from mtdesk.fakes.llm import FakeLLM, provider_tokens
from mtdesk.retrieval.prompt import DEFAULT_CONTEXT_TOKENS, context_window

WINDOW = 2048  # the fake model's context, far smaller than history + passages below
HISTORY = [
    ChatMessage("user" if i % 2 == 0 else "assistant", f"Turn {i}: " + "tell me about bikes " * 40)
    for i in range(40)
]
QUESTION = ChatMessage("user", "Which e-bike has the longest range?")
PASSAGES = [
    Passage(text="The Voltway X2 e-bike has the longest range, 140 km. " + "Spec details. " * 300,
            source="catalogue.pdf", score=0.9),
    Passage(text="Our city bikes weigh 14 kg. " + "More about city bikes. " * 300,
            source="city.md", score=0.6),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM(context_tokens={"small-model": WINDOW}) as llm:
        yield llm


@pytest.fixture
async def model(fake: FakeLLM) -> AsyncIterator[ProviderChatModel]:
    settings = Settings(providers={
        "openrouter": ProviderConfig(name="openrouter", base_url=fake.base_url),
    })
    m = ProviderChatModel(settings, timeout_s=5, metrics=LLMMetrics(CollectorRegistry()))
    yield m
    await m.aclose()


async def test_a_long_conversation_with_large_passages_fits_a_small_context(
    model: ProviderChatModel, fake: FakeLLM
) -> None:
    bot = BotConfig(provider="openrouter", model="small-model", context_tokens=WINDOW, max_tokens=256)
    done = await model.complete(bot, [*HISTORY, QUESTION], PASSAGES)
    assert "[small-model] You said: Which e-bike has the longest range?" in done.text
    [request] = fake.chat_requests
    assert provider_tokens(request.messages) + 256 <= WINDOW
    system = request.messages[0]["content"]
    assert "longest range, 140 km" in system  # the best passage is kept (cut if need be)
    kept = [m["content"] for m in request.messages[1:-1]]
    assert kept and kept == [t.content for t in HISTORY[-len(kept):]]  # the newest turns
    assert request.messages[-1]["content"] == QUESTION.content


async def test_without_the_right_window_the_provider_refuses_the_same_prompt(
    model: ProviderChatModel, fake: FakeLLM
) -> None:
    # A bot that claims a huge window sends everything: what a budget-less path did.
    bot = BotConfig(provider="openrouter", model="small-model", context_tokens=1_000_000)
    with pytest.raises(ProviderError) as err:
        await model.complete(bot, [*HISTORY, QUESTION], PASSAGES)
    assert "context length" in str(err.value) or "400" in str(err.value)
    assert fake.chat_requests[0].outcome == "400"


def test_the_window_comes_from_the_bot_then_the_model_family_then_a_safe_default() -> None:
    assert context_window(BotConfig(model="openai/gpt-4o-mini")) == 128_000
    assert context_window(BotConfig(model="moonshot-v1-8k")) == 8_192
    assert context_window(BotConfig(model="some-new-model")) == DEFAULT_CONTEXT_TOKENS
    assert context_window(BotConfig(model="openai/gpt-4o-mini", context_tokens=4096)) == 4096


def test_a_bot_context_size_that_leaves_no_room_for_the_prompt_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        parse_bot_config({"context_tokens": 600, "max_tokens": 512}, ["openrouter"])
    assert err.value.field == "context_tokens"
    with pytest.raises(ValidationError) as err:
        parse_bot_config({"context_tokens": -1}, ["openrouter"])
    assert "context_tokens" in str(err.value)
    assert parse_bot_config({"context_tokens": 32_768}, ["openrouter"]).context_tokens == 32_768
