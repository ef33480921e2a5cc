"""Which follow-up questions an answer offers as taps (docs/channels.md, "Suggested
replies").

:func:`suggestions_for` takes them from the knowledge base's Q&A pairs retrieved for
the question: the questions of the pairs scoring at least ``bot.min_score`` after the
best passage (which the answer most likely used), never the question just asked, each
once, at most :data:`MAX_SUGGESTIONS`. Pure; the channel renders them
(:mod:`mtdesk.channels.suggestions`). Decided against asking the model for them in its
output: a format the model must keep breaks on the first model that does not, and a
suggestion from the business's own Q&A is one the bot can answer.
"""

from __future__ import annotations

from typing import Final

from mtdesk.core.ports import BotConfig, Passage
from mtdesk.retrieval.prompt import shown_passages

MAX_SUGGESTIONS: Final = 3


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip("?!. ")


def suggestions_for(bot: BotConfig, passages: list[Passage], texts: list[str]) -> tuple[str, ...]:
    asked = {_norm(t) for t in texts}
    seen: set[str] = set()
    out: list[str] = []
    for passage in shown_passages(bot, passages)[1:]:
        question = " ".join(passage.text.split())
        key = _norm(question)
        if passage.answer is None or not key or key in asked or key in seen:
            continue
        seen.add(key)
        out.append(question)
        if len(out) == MAX_SUGGESTIONS:
            break
    return tuple(out)
