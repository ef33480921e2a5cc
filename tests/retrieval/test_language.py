"""Language detection: what any text from the internet gives, and when it says too little."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core.ports import BotConfig, ChatMessage, Passage
from mtdesk.retrieval.language import (
    _NAMES,
    MIN_SCORE,
    answer_language,
    detect_language,
    language_name,
)
from mtdesk.retrieval.prompt import fit_prompt, language_rule


@given(st.text(max_size=400))
def test_any_text_gives_a_confident_code_or_nothing(text: str) -> None:
    guess = detect_language(text)
    assert guess is None or (guess.code and guess.score >= MIN_SCORE)


@given(previous=st.sampled_from(["es", "fr", "ja"]),
       short=st.sampled_from(["ok", "OK!", "👍", "thx", "1234", "@acme.boards", "si", "?"]))
def test_a_short_message_keeps_the_language_it_follows(previous: str, short: str) -> None:
    assert answer_language(previous, [short]) == previous


def test_well_formed_sentences_are_recognised() -> None:
    for code, text in {
        "es": "Quiero devolver mi pedido, llegó roto",
        "de": "Ich möchte meine Bestellung zurückschicken",
        "ko": "토요일에 몇 시에 여나요?",
        "uk": "Коли ви відчинені в суботу?",
        "en": "Do you ship to Switzerland?",
    }.items():
        guess = detect_language(text)
        assert guess is not None and guess.code == code, (text, guess)
    # Links, handles and numbers are not words of any language.
    assert detect_language("@acme.boards https://acme.example/p/12345 #42") is None


def test_the_rule_names_the_language() -> None:
    assert language_name("es") == "Spanish" and language_name("xx") == "xx"
    assert 'Always reply in Spanish (language code "es")' in language_rule("es")


@given(code=st.sampled_from(sorted(_NAMES)), budget=st.integers(min_value=256, max_value=4000),
       question=st.text(min_size=1, max_size=3000),
       passages=st.lists(st.text(min_size=1, max_size=800), max_size=6))
def test_the_language_rule_is_always_in_the_prompt(
    code: str, budget: int, question: str, passages: list[str],
) -> None:
    # However much knowledge and text compete for the budget, the rule is kept whole.
    shown = [Passage(text=t, source="faq", score=0.9) for t in passages]
    prompt = fit_prompt(BotConfig(provider="openai", model="m"), [ChatMessage("user", question)],
                        shown, budget_tokens=budget, language=code)
    assert prompt[0].role == "system" and prompt[0].content.endswith(language_rule(code))
