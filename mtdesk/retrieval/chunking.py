"""Chunking that respects structure: a chunk never spans two sections, a Q&A pair is
always exactly one chunk, and prose is packed paragraph by paragraph (then sentence by
sentence) up to a token budget, with an overlap of whole sentences between neighbours.

Sizes are in tokens of :func:`mtdesk.retrieval.tokens.count_tokens` (a regex word
tokenizer, not a model tokenizer).
"""

from __future__ import annotations

import re

import msgspec

from mtdesk.retrieval.documents import Document, Section
from mtdesk.retrieval.tokens import count_tokens, tokens

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n")


class Chunk(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One retrievable unit.

    ``text`` is what is shown (a passage, or a Q&A pair's question); ``answer`` is set for a
    Q&A pair; ``context`` (title and heading path) is embedded with the text but not shown.
    """

    text: str
    answer: str | None = None
    context: str = ""

    @property
    def embed_text(self) -> str:
        body = f"{self.text}\n{self.answer}" if self.answer else self.text
        return f"{self.context}\n{body}" if self.context else body


class ChunkingOptions(msgspec.Struct, frozen=True, kw_only=True):
    target_tokens: int = 180
    max_tokens: int = 260
    overlap_tokens: int = 30


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _split_long(sentence: str, limit: int) -> list[str]:
    """A sentence longer than ``limit`` tokens, cut into word windows."""
    words = tokens(sentence)
    parts = []
    for i in range(0, len(words), limit):
        parts.append(" ".join(words[i : i + limit]))
    return parts


def _units(section_text: str, opts: ChunkingOptions) -> list[tuple[str, bool]]:
    """Paragraphs, or sentences of paragraphs too long for one chunk.

    Each unit carries ``True`` when it starts a paragraph (joined with a blank line).
    """
    out: list[tuple[str, bool]] = []
    for para in section_text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        if count_tokens(para) <= opts.target_tokens:
            out.append((para, True))
            continue
        first = True
        for sent in sentences(para):
            pieces = _split_long(sent, opts.max_tokens) if count_tokens(sent) > opts.max_tokens else [sent]
            for piece in pieces:
                out.append((piece, first))
                first = False
    return out


def chunk_section(section: Section, context: str, opts: ChunkingOptions) -> list[Chunk]:
    chunks: list[Chunk] = []
    cur: list[tuple[str, bool]] = []
    size = 0
    for unit, starts_para in _units(section.text, opts):
        n = count_tokens(unit)
        if cur and size + n > opts.target_tokens:
            chunks.append(Chunk(text=_join(cur), context=context))
            # Carry the tail of the chunk (whole sentences) into the next one as overlap.
            tail: list[tuple[str, bool]] = []
            carried = 0
            for sent in reversed(sentences(cur[-1][0])):
                t = count_tokens(sent)
                if carried + t > opts.overlap_tokens:
                    break
                tail.insert(0, (sent, False))
                carried += t
            cur, size = tail, carried
        cur.append((unit, starts_para))
        size += n
    if cur:
        chunks.append(Chunk(text=_join(cur), context=context))
    return chunks


def _join(units: list[tuple[str, bool]]) -> str:
    text = ""
    for unit, starts_para in units:
        if not text:
            text = unit
        else:
            text += ("\n\n" if starts_para else " ") + unit
    return text


def chunk_document(doc: Document, opts: ChunkingOptions | None = None) -> list[Chunk]:
    """All chunks of a document: one per Q&A pair, then the sections' prose."""
    opts = opts or ChunkingOptions()
    out = [Chunk(text=p.q.strip(), answer=p.a.strip(), context=doc.title) for p in doc.qa]
    for section in doc.sections:
        path = " > ".join(h for h in section.heading if h)
        context = " — ".join(x for x in (doc.title, path) if x)
        out.extend(chunk_section(section, context, opts))
    return out
