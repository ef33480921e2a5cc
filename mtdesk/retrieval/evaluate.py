"""Retrieval quality on a labelled question set: hit@1 and hit@5 per embedder.

A question *hits at k* when one of the top-k chunks comes from its expected source.
The chunks are made exactly as ingestion makes them (extract → chunk), searched with
exact inner product; :class:`BM25` is the classic keyword baseline for comparison.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import msgspec
import numpy as np

from mtdesk.retrieval.chunking import Chunk, chunk_document
from mtdesk.retrieval.embedders import Embedder
from mtdesk.retrieval.extract import extract
from mtdesk.retrieval.sample import Question, questions, sample_files
from mtdesk.retrieval.tokens import terms


class Score(msgspec.Struct, frozen=True):
    name: str
    questions: int
    hit_at_1: float
    hit_at_5: float
    mrr: float


def sample_chunks() -> list[tuple[str, Chunk]]:
    out: list[tuple[str, Chunk]] = []
    for name, data in sample_files():
        out.extend((name, c) for c in chunk_document(extract(data, name)))
    return out


def score(name: str, ranked_sources: Sequence[Sequence[str]], qs: Sequence[Question]) -> Score:
    h1 = h5 = rr = 0.0
    for ranked, q in zip(ranked_sources, qs, strict=True):
        h1 += bool(ranked) and ranked[0] == q.source
        h5 += q.source in ranked[:5]
        rr += next((1.0 / (i + 1) for i, s in enumerate(ranked[:10]) if s == q.source), 0.0)
    n = max(1, len(qs))
    return Score(name, len(qs), round(h1 / n, 3), round(h5 / n, 3), round(rr / n, 3))


async def evaluate_embedder(embedder: Embedder, chunks: list[tuple[str, Chunk]] | None = None,
                            qs: list[Question] | None = None) -> Score:
    chunks = chunks if chunks is not None else sample_chunks()
    qs = qs if qs is not None else questions()
    doc_vecs = await embedder.embed([c.embed_text for _, c in chunks])
    q_vecs = await embedder.embed([q.q for q in qs])
    sims = q_vecs @ doc_vecs.T
    order = np.argsort(-sims, axis=1)[:, :10]
    return score(embedder.name, [[chunks[j][0] for j in row] for row in order], qs)


class AnswerScore(msgspec.Struct, frozen=True):
    """What the no-LLM ``extractive`` bot does with the labelled and off-topic questions."""

    name: str
    right: int  # answered, citing the expected source
    wrong: int  # answered from another source
    fallback: int  # said it does not know
    off_topic_refused: int
    off_topic: int


async def evaluate_extractive(embedder: Embedder, chunks: list[tuple[str, Chunk]] | None = None,
                              k: int = 5) -> AnswerScore:
    from mtdesk.core.ports import BotConfig, Passage
    from mtdesk.retrieval.extractive import ExtractiveModel
    from mtdesk.retrieval.sample import OFF_TOPIC

    chunks = chunks if chunks is not None else sample_chunks()
    qs = questions()
    bot = BotConfig(fallback_message="\0fallback")
    model = ExtractiveModel()
    doc_vecs = await embedder.embed([c.embed_text for _, c in chunks])
    asked = [q.q for q in qs] + list(OFF_TOPIC)
    sims = (await embedder.embed(asked)) @ doc_vecs.T
    right = wrong = fallback = refused = 0
    for i, text in enumerate(asked):
        top = np.argsort(-sims[i])[:k]
        passages = [Passage(text=chunks[j][1].text, answer=chunks[j][1].answer, source=chunks[j][0],
                            score=float(sims[i, j])) for j in top if sims[i, j] > 0]
        answer = model.answer(bot, text, passages)
        if i >= len(qs):
            refused += answer == bot.fallback_message
        elif answer == bot.fallback_message:
            fallback += 1
        elif answer.endswith(f"(Source: {qs[i].source})"):
            right += 1
        else:
            wrong += 1
    return AnswerScore(embedder.name, right, wrong, fallback, refused, len(OFF_TOPIC))


class BM25:
    """Okapi BM25 (k1=1.2, b=0.75) over stemmed content words."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tfs = [Counter(terms(d)) for d in docs]
        self.lens = [sum(tf.values()) for tf in self.tfs]
        self.avg = sum(self.lens) / max(1, len(self.lens))
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: str) -> list[float]:
        q = terms(query)
        out = []
        for tf, length in zip(self.tfs, self.lens, strict=True):
            s = 0.0
            for t in q:
                f = tf.get(t, 0)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * length / self.avg))
            out.append(s)
        return out


def evaluate_bm25(chunks: list[tuple[str, Chunk]] | None = None, qs: list[Question] | None = None) -> Score:
    chunks = chunks if chunks is not None else sample_chunks()
    qs = qs if qs is not None else questions()
    bm25 = BM25([c.embed_text for _, c in chunks])
    ranked = []
    for q in qs:
        s = np.array(bm25.scores(q.q))
        ranked.append([chunks[j][0] for j in np.argsort(-s)[:10]])
    return score("bm25 (baseline)", ranked, qs)
