"""Suggested replies: the taps offered under an answer, and reading a tap back.

Callers rely on:

- :func:`payload_for` — the payload (Messenger/Instagram ``quick_replies[].payload``,
  WhatsApp button / list row ``id``) that carries a suggestion's full text, whatever
  the title shows; :func:`suggestion_of` reads it back from a tapped reply (None for
  any payload that is not ours, e.g. a template's button).
- :func:`title_for` — a title within a channel's limit, cut at a word with an ellipsis
  when it is too long.

Limits (Meta's): Messenger and Instagram allow 13 quick replies with titles of 20
characters and payloads of 1,000; WhatsApp 3 reply buttons with titles of 20
characters and ids of 256, or a list of 10 rows with titles of 24 characters,
descriptions of 72 and ids of 200; an interactive message's body holds 1,024
characters.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "mtdesk:suggest:"
QUICK_REPLY_TITLE: Final = 20
MAX_QUICK_REPLIES: Final = 13
BUTTON_TITLE: Final = 20
MAX_BUTTONS: Final = 3
ROW_TITLE: Final = 24
ROW_DESCRIPTION: Final = 72
MAX_ROWS: Final = 10
INTERACTIVE_BODY: Final = 1024


def payload_for(text: str, limit: int) -> str:
    """Our payload for suggestion ``text`` within ``limit`` characters."""
    return (PREFIX + text)[:limit]


def suggestion_of(payload: str | None) -> str | None:
    """The suggestion a tapped reply's payload carries, or None when it is not ours."""
    if not payload or not payload.startswith(PREFIX):
        return None
    return payload[len(PREFIX):].strip() or None


def title_for(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: whole when it fits, else cut at a word
    (or hard) with "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    room = text[: limit - 1]
    cut = room.rfind(" ")
    head = room[:cut] if cut >= limit // 2 else room
    return head.rstrip(" ,.;:-") + "…"
