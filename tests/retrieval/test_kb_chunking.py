"""Chunks respect structure, stay within their token budget, and overlap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mtdesk.retrieval.chunking import ChunkingOptions, chunk_document
from mtdesk.retrieval.documents import Document, QAPair, Section
from mtdesk.retrieval.tokens import count_tokens, terms


def test_each_qa_pair_is_one_chunk_with_its_answer() -> None:
    doc = Document(qa=(QAPair(q="Do you ship abroad?", a="Yes."), QAPair(q="Hours?", a="9-5.")))
    chunks = chunk_document(doc)
    assert [(c.text, c.answer) for c in chunks] == [("Do you ship abroad?", "Yes."), ("Hours?", "9-5.")]


def test_a_chunk_never_spans_two_sections_and_knows_its_headings() -> None:
    doc = Document(title="Help", sections=(
        Section(heading=("Returns",), text="Return within 30 days."),
        Section(heading=("Shipping",), text="We ship daily."),
    ))
    chunks = chunk_document(doc)
    assert [c.text for c in chunks] == ["Return within 30 days.", "We ship daily."]
    assert chunks[0].context == "Help — Returns"
    assert "Returns" in chunks[0].embed_text


def test_long_text_is_split_under_the_budget_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} in some detail." for i in range(80)]
    doc = Document(sections=(Section(text=" ".join(sentences)),))
    opts = ChunkingOptions(target_tokens=60, max_tokens=80, overlap_tokens=15)
    chunks = chunk_document(doc, opts)
    assert len(chunks) > 5
    assert all(count_tokens(c.text) <= opts.max_tokens + opts.overlap_tokens for c in chunks)
    # Neighbours share a sentence: a fact cut at a boundary is still whole in one chunk.
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.text.split(". ")[-1].rstrip(".") in b.text


def test_paragraphs_are_kept_together_when_they_fit() -> None:
    doc = Document(sections=(Section(text="First paragraph here.\n\nSecond paragraph here."),))
    assert [c.text for c in chunk_document(doc)] == ["First paragraph here.\n\nSecond paragraph here."]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghij .\n", min_size=1, max_size=300), min_size=1, max_size=6))
def test_no_word_is_lost(paragraphs: list[str]) -> None:
    text = "\n\n".join(paragraphs)
    doc = Document(sections=(Section(text=text),))
    opts = ChunkingOptions(target_tokens=20, max_tokens=30, overlap_tokens=5)
    chunked = " ".join(c.text for c in chunk_document(doc, opts))
    assert set(terms(text)) <= set(terms(chunked))
