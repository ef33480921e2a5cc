"""Answers without an LLM, and the prompt LLM providers get."""

from __future__ import annotations

from mtdesk.core.ports import BotConfig, ChatMessage, Passage
from mtdesk.retrieval.extractive import ExtractiveModel
from mtdesk.retrieval.prompt import build_prompt
from mtdesk.retrieval.tokens import count_tokens

BOT = BotConfig(fallback_message="I don't know that yet.", min_score=0.35)
QA = Passage(text="Do you ship abroad?", answer="Yes, we ship to 40 countries.", source="FAQ", score=0.3)
DOC = Passage(
    text="Our kettles carry a two year warranty. The warranty covers defects, not limescale. "
    "Keep your receipt. Shipping is free over 50 euros.",
    source="warranty.pdf", score=0.42,
)


async def test_a_matching_question_answers_with_its_answer_and_cites_it() -> None:
    done = await ExtractiveModel().complete(BOT, [ChatMessage("user", "do you ship abroad?")], [DOC, QA])
    assert done.text == "Yes, we ship to 40 countries.\n\n(Source: FAQ)"
    assert done.provider == "extractive"


async def test_a_passage_answers_with_its_relevant_sentences() -> None:
    text = ExtractiveModel().answer(BOT, "what does the warranty cover", [DOC])
    assert "covers defects" in text and "(Source: warranty.pdf)" in text
    assert "Shipping is free" not in text


async def test_nothing_relevant_gives_the_bots_fallback_message() -> None:
    weak = Passage(text="Our shop sells kettles.", source="about", score=0.05)
    text = ExtractiveModel().answer(BOT, "can I pay with bitcoin", [weak])
    assert text == "I don't know that yet."
    assert ExtractiveModel().answer(BOT, "anything", []) == "I don't know that yet."


def test_the_prompt_holds_passages_with_sources_turns_and_the_question() -> None:
    history = [ChatMessage("user", "hi"), ChatMessage("assistant", "Hello! How can I help?")]
    messages = build_prompt(BOT, "do you ship abroad?", [QA, DOC], history)
    system = messages[0].content
    assert messages[0].role == "system" and "(source: FAQ)" in system and "40 countries" in system
    assert "ONLY from the knowledge" in system and "I don't know that yet." in system
    assert messages[1:] == [*history, ChatMessage("user", "do you ship abroad?")]


def test_general_grounding_allows_general_knowledge() -> None:
    bot = BotConfig(grounding="general")
    system = build_prompt(bot, "hi", [])[0].content
    assert "general knowledge" in system and "ONLY" not in system


def test_the_prompt_fits_its_budget_dropping_oldest_turns_first() -> None:
    long = Passage(text="word " * 400, source="long", score=0.5)
    history = [ChatMessage("user", f"old turn {i} " * 20) for i in range(30)]
    messages = build_prompt(BOT, "latest question", [QA, long, DOC], history, budget_tokens=700)
    total = sum(count_tokens(m.content) for m in messages)
    assert total <= 700
    assert messages[-1].content == "latest question"
    assert "40 countries" in messages[0].content  # the best passage is kept
    kept = [m.content for m in messages[1:-1]]
    assert not kept or kept[-1] == history[-1].content  # the most recent turns survive


def test_an_extractive_answer_ends_at_a_sentence_boundary_in_hard_wrapped_text() -> None:
    from pathlib import Path

    import mtdesk.retrieval

    text = (Path(mtdesk.retrieval.__file__).parent / "sample" / "rentals.txt").read_text()
    passage = Passage(text=text, source="rentals.txt", score=0.5)
    answer = ExtractiveModel().answer(BOT, "how much is the deposit for an e-bike?", [passage])
    body = answer.removesuffix("\n\n(Source: rentals.txt)")
    assert "(200 euros for an e-bike or cargo bike), paid by card." in body
    assert body.rstrip().endswith((".", "!", "?"))


def test_a_passage_cut_mid_sentence_answers_with_its_whole_sentences_only() -> None:
    cut = Passage(
        text="The deposit is 50 euros per bike. It is released when the bike comes back "
        "undamaged. E-bikes need a deposit of 200 euros for an",
        source="rentals.txt", score=0.5,
    )
    body = ExtractiveModel().answer(BOT, "what is the deposit per bike", [cut]).split("\n\n")[0]
    assert body.endswith(".") and "for an" not in body
