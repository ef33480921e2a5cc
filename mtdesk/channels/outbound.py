"""Outbound messages of every channel: splitting long replies within the channel's limit,
and the Send API bodies (each channel's own module renders its body).

Callers rely on:

- :func:`split_text` — parts in order, none empty, each within the channel's limit
  (Messenger < 2,000 characters, Instagram ≤ 1,000 UTF-8 bytes, WhatsApp ≤ 4,096
  characters); cut at a paragraph or sentence end when one is in the latter part of the
  window, else at a space, else hard. Joined back, the parts are the original text
  except for whitespace at the cut points (which is dropped).
- :func:`render_parts` — the JSON bodies to ``POST /{account_id}/messages``, one per part,
  with our metadata ``mtdesk:<reply_key>#<part>`` on Messenger/Instagram (Meta echoes it
  back, so :func:`is_our_metadata` recognizes our own sends); the last part offers the
  message's ``suggestions`` (:mod:`mtdesk.channels.suggestions`: Messenger/Instagram
  quick replies, WhatsApp reply buttons or a list).
- :func:`render_signals` — the bodies (same endpoint) that mark the person's message
  read and show typing while an answer is made; ``first``: the first time for this
  answer (a refresh sends only what re-shows typing). Empty when the channel shows
  nothing (WhatsApp with read receipts off).

A channel is one row of :data:`_CHANNELS` (how much text fits, how a part is rendered);
nothing here branches on the channel's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, NamedTuple

from mtdesk.channels.instagram import outbound as instagram
from mtdesk.channels.instagram.outbound import MAX_BYTES as INSTAGRAM_MAX_BYTES
from mtdesk.channels.messenger import outbound as messenger
from mtdesk.channels.messenger.outbound import MAX_CHARS as MESSENGER_MAX_CHARS
from mtdesk.channels.messenger.outbound import is_our_metadata, metadata_for
from mtdesk.channels.whatsapp import outbound as whatsapp
from mtdesk.channels.whatsapp.outbound import MAX_CHARS as WHATSAPP_MAX_CHARS
from mtdesk.core.events import Channel
from mtdesk.core.ports import OutboundMessage

__all__ = [
    "INSTAGRAM_MAX_BYTES", "MESSENGER_MAX_CHARS", "WHATSAPP_MAX_CHARS", "is_our_metadata",
    "metadata_for", "render_body", "render_parts", "render_signals", "split_text",
    "within_limit",
]

# Sentence ends: Latin punctuation followed by whitespace (closing quotes/brackets stay
# with the sentence), CJK full stops (no space follows them), and line breaks.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[」』”’)]*|\n")
_SPACE = re.compile(r"\s+")
# A cut this far into the window keeps parts from being needlessly small.
_MIN_FILL: Final = 0.3


class _Outbound(NamedTuple):
    fit: Callable[[str], int]  # how many leading characters of a text fit one message
    # (message, part text, part no., suggestions to offer under this part)
    render: Callable[[OutboundMessage, str, int, tuple[str, ...]], bytes]
    signals: Callable[..., list[bytes]]  # (user id, message id, *, read, first)


_CHANNELS: Final[dict[str, _Outbound]] = {
    "messenger": _Outbound(messenger.fit, messenger.render_body, messenger.render_signals),
    "instagram": _Outbound(instagram.fit, instagram.render_body, instagram.render_signals),
    "whatsapp": _Outbound(whatsapp.fit, whatsapp.render_body, whatsapp.render_signals),
}


def within_limit(channel: Channel, text: str) -> bool:
    """Whether ``text`` can be sent as one message on ``channel``."""
    return _CHANNELS[channel].fit(text) == len(text)


def _cut_point(window: str) -> tuple[int, int]:
    """(end of this part, start of the next) inside ``window``, which is too short."""
    floor = int(len(window) * _MIN_FILL)
    best = -1
    for match in _SENTENCE_END.finditer(window):
        if match.end() > floor:
            best = match.end()
    if best > 0:
        return best, best
    spaces = [m for m in _SPACE.finditer(window) if m.start() > 0]
    if spaces:
        last = spaces[-1]
        return last.start(), last.end()
    return len(window), len(window)


def split_text(channel: Channel, text: str) -> list[str]:
    """Split ``text`` into parts that each fit one message on ``channel``."""
    fit = _CHANNELS[channel].fit
    parts: list[str] = []
    rest = text.strip()
    while rest:
        n = fit(rest)
        if n == len(rest):
            parts.append(rest)
            break
        # If the next char is whitespace the window itself ends at a word boundary.
        if rest[n].isspace():
            end, start = n, n
        else:
            end, start = _cut_point(rest[:n])
        # ``rest`` starts with a non-space and end ≥ 1, so the part is never empty and
        # every round makes progress.
        parts.append(rest[:end].rstrip())
        rest = rest[start:].lstrip()
    return parts


def render_body(message: OutboundMessage, text: str, part: int, *, last: bool = False) -> bytes:
    """The JSON body for one part of ``message``; the ``last`` part carries the
    message's suggestions (when the channel can show them with that text)."""
    return _CHANNELS[message.channel].render(message, text, part,
                                             message.suggestions if last else ())


def render_parts(message: OutboundMessage) -> list[bytes]:
    """Every body to send for ``message``, in order (empty when the text is blank)."""
    render = _CHANNELS[message.channel].render
    parts = split_text(message.channel, message.text)
    return [render(message, text, i, message.suggestions if i == len(parts) - 1 else ())
            for i, text in enumerate(parts)]


def render_signals(channel: Channel, user_id: str, message_id: str, *, read: bool,
                   first: bool) -> list[bytes]:
    """The read mark / typing bodies for the person ``user_id`` whose message
    ``message_id`` is being answered, in the order to send them."""
    return _CHANNELS[channel].signals(user_id, message_id, read=read, first=first)
