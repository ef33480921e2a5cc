"""``extractive``: answers from the knowledge base with no LLM at all.

A strongly matching Q&A pair answers with its stored answer; otherwise the best passage
answers with its most relevant sentences (a few, in their order); each answer names its
source. When nothing scores at least ``bot.min_score``, the answer is the bot's
``fallback_message``. A candidate's score is the larger of the retriever's score and the
word overlap (cosine of stemmed content words) between the question and the candidate
(the stored question, for a Q&A pair), so the threshold means much the same whichever
embedder built the index.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from mtdesk.core.ports import BotConfig, ChatMessage, Completion, Passage
from mtdesk.retrieval.chunking import sentences
from mtdesk.retrieval.tokens import count_tokens, terms

PROVIDER = "extractive"
MAX_ANSWER_TOKENS = 90
QA_PREFERENCE = 0.05  # a Q&A pair wins ties with passages: its answer was written to be one


def overlap(a: str, b: str) -> float:
    """Cosine similarity of the stemmed content-word counts of two texts, in [0, 1]."""
    ca, cb = Counter(terms(a)), Counter(terms(b))
    if not ca or not cb:
        return 0.0
    dot = sum(v * cb[k] for k, v in ca.items() if k in cb)
    return dot / math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()))


def best_sentences(query: str, text: str, max_tokens: int = MAX_ANSWER_TOKENS) -> str:
    """The passage's sentences that share most words with the query, kept in order."""
    sents = sentences(text)
    if not sents:
        return text.strip()
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
    """A :class:`~mtdesk.core.ports.ChatModel` for provider ``extractive``."""

    async def complete(
        self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage]
    ) -> Completion:
        query = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return Completion(text=self.answer(bot, query, passages), provider=PROVIDER, model=PROVIDER)

    def answer(self, bot: BotConfig, query: str, passages: Sequence[Passage]) -> str:
        best_qa: tuple[float, Passage] | None = None
        best_text: tuple[float, Passage] | None = None
        for p in passages:
            if p.answer is not None:
                score = max(p.score, overlap(query, p.text))
                if best_qa is None or score > best_qa[0]:
                    best_qa = (score, p)
            else:
                score = max(p.score, overlap(query, p.text))
                if best_text is None or score > best_text[0]:
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
