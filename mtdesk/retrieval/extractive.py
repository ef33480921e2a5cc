"""``extractive``: answers from the knowledge base with no LLM at all.

A strongly matching Q&A pair answers with its stored answer; otherwise the best passage
answers with its most relevant sentences (a few, in their order); each answer names its
source. When nothing scores at least ``bot.min_score``, the answer is the bot's
``fallback_message``. A candidate's score is the larger of the retriever's score and how
much of the question it covers (:func:`coverage_scores`), so the threshold means much
the same whichever embedder built the index.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from mtdesk.core.ports import BotConfig, ChatMessage, Completion, Passage
from mtdesk.retrieval.chunking import sentences
from mtdesk.retrieval.tokens import count_tokens, terms

PROVIDER = "extractive"
STRONG_MATCH = 0.8
COVERAGE_POWER = 1.2  # tuned on the sample set (see docs/retrieval.md, "extractive answers")
MAX_ANSWER_TOKENS = 90
QA_PREFERENCE = 0.05  # a Q&A pair wins ties with passages: its answer was written to be one


def is_extractive(bot: BotConfig) -> bool:
    """True for a bot this model answers (provider ``extractive``): it judges its
    passages against ``bot.min_score`` itself."""
    return bot.provider.strip().lower() == PROVIDER


def coverage_scores(query: str, passages: Sequence[Passage], power: float | None = None) -> list[float]:
    """How much of the question each passage covers, in [0, 1].

    Each content word of the question (stemmed; words over five letters also match on
    their first five) weighs more the fewer of the retrieved passages contain it, so a
    word that no passage explains (the "skateboards" of "do you sell skateboards")
    weighs most and keeps a passage that only shares the common words below the bar.
    The covered weight's share is raised to ``power`` to demand most of the question.
    """
    power = COVERAGE_POWER if power is None else power
    words = list(dict.fromkeys(terms(query)))
    if not words or not passages:
        return [0.0 for _ in passages]
    bags = []
    for p in passages:
        bag = set(terms(f"{p.text} {p.answer or ''}"))
        bags.append((bag, {w[:5] for w in bag if len(w) > 5}))

    def has(word: str, bag: set[str], prefixes: set[str]) -> bool:
        return word in bag or (len(word) > 5 and word[:5] in prefixes)

    n = len(passages)
    weight = {w: math.log(1 + n / (1 + sum(has(w, b, pr) for b, pr in bags))) for w in words}
    total = sum(weight.values())
    return [
        (sum(weight[w] for w in words if has(w, bag, prefixes)) / total) ** power
        for bag, prefixes in bags
    ]


# A line break inside a sentence (hard-wrapped text files): the line before does not end
# a sentence and the next one goes on in lower case.
_WRAPPED = re.compile(r"(?<![.!?:;\n])[ \t]*\n[ \t]*(?=[a-z(\[\"'])")
_ENDS_SENTENCE = re.compile(r"""[.!?…]["')\]]*$""")


def complete_sentences(text: str) -> list[str]:
    """The text's sentences, with hard-wrapped lines joined back and the fragments a
    chunk boundary leaves (a start or an end cut mid-sentence) dropped when whole
    sentences remain."""
    sents = sentences(_WRAPPED.sub(" ", text))
    # Only the ends can be cut; a line in the middle without a full stop is a list item.
    if len(sents) > 1 and sents[0][:1].islower():
        sents = sents[1:]
    if len(sents) > 1 and not _ENDS_SENTENCE.search(sents[-1]):
        sents = sents[:-1]
    return sents


def best_sentences(query: str, text: str, max_tokens: int = MAX_ANSWER_TOKENS) -> str:
    """The passage's sentences that share most words with the query, kept in order.

    The answer ends at a sentence boundary: it is made of whole sentences only, unless
    the passage holds none (then the passage's text, closed with an ellipsis).
    """
    sents = complete_sentences(text)
    if not sents:
        return text.strip()
    if not any(_ENDS_SENTENCE.search(s) for s in sents):
        return " ".join(sents).rstrip(" ,;") + "…"
    q = set(terms(query))
    scored = sorted(
        range(len(sents)), key=lambda i: (-len(q & set(terms(sents[i]))), i)
    )
    chosen: list[int] = []
    used = 0
    for i in scored:
        cost = count_tokens(sents[i])
        if chosen and (used + cost > max_tokens or not q & set(terms(sents[i]))):
            break
        chosen.append(i)
        used += cost
        if used >= max_tokens // 2:
            break
    return " ".join(sents[i] for i in sorted(chosen))


class ExtractiveModel:
    """A :class:`~mtdesk.core.ports.ChatModel` for provider ``extractive``. It quotes the
    knowledge as written, in the knowledge's language whatever ``language`` the customer
    writes in (it cannot translate); it adds nothing that would claim otherwise."""

    async def complete(
        self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage], *,
        language: str | None = None,
    ) -> Completion:
        query = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return Completion(text=self.answer(bot, query, passages), provider=PROVIDER, model=PROVIDER)

    def answer(self, bot: BotConfig, query: str, passages: Sequence[Passage]) -> str:
        best_qa: tuple[float, Passage] | None = None
        best_text: tuple[float, Passage] | None = None
        for p, covered in zip(passages, coverage_scores(query, passages), strict=True):
            # The retriever's own score counts only when it is strong: its scale differs per
            # embedder, and a middling neural similarity ("sell skateboards" ~ "sell e-bikes")
            # is no evidence of an answer.
            score = max(covered, p.score if p.score >= STRONG_MATCH else 0.0)
            if p.answer is not None:
                if best_qa is None or score > best_qa[0]:
                    best_qa = (score, p)
            elif best_text is None or score > best_text[0]:
                best_text = (score, p)
        qa_ok = best_qa is not None and best_qa[0] >= bot.min_score
        text_ok = best_text is not None and best_text[0] >= bot.min_score
        if qa_ok and (not text_ok or best_qa[0] + QA_PREFERENCE >= best_text[0]):  # type: ignore[index]
            passage = best_qa[1]  # type: ignore[index]
            return _cite(passage.answer or "", passage.source)
        if text_ok:
            passage = best_text[1]  # type: ignore[index]
            return _cite(best_sentences(query, passage.text), passage.source)
        return bot.fallback_message


def _cite(text: str, source: str) -> str:
    return f"{text.strip()}\n\n(Source: {source})" if source else text.strip()
