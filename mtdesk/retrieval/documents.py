"""What a source becomes before chunking: titled sections of text and Q&A pairs."""

from __future__ import annotations

import msgspec


class Section(msgspec.Struct, frozen=True, kw_only=True):
    """A run of text under a heading path (e.g. ``("Shipping", "Returns")``).

    ``text`` keeps paragraph breaks as blank lines, so chunking can respect them.
    """

    heading: tuple[str, ...] = ()
    text: str


class QAPair(msgspec.Struct, frozen=True, kw_only=True):
    q: str
    a: str


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """One extracted source: a title, sections of prose, and Q&A pairs."""

    title: str = ""
    sections: tuple[Section, ...] = ()
    qa: tuple[QAPair, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.qa and not any(s.text.strip() for s in self.sections)
