"""Outbound payloads per channel, and splitting long replies within each channel's limit.

Callers rely on:

- :func:`split_text` — parts in order, none empty, each within the channel's limit
  (Messenger < 2,000 characters, Instagram ≤ 1,000 UTF-8 bytes, WhatsApp ≤ 4,096
  characters); cut at a paragraph or sentence end when one is in the latter part of the
  window, else at a space, else hard. Joined back, the parts are the original text
  except for whitespace at the cut points (which is dropped).
- :func:`render_parts` — the JSON bodies to ``POST /{account_id}/messages``, one per part,
  with our metadata ``mtdesk:<reply_key>#<part>`` on Messenger/Instagram (Meta echoes it
  back, so :func:`is_our_metadata` recognizes our own sends).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Final

import msgspec

from mtdesk.core.events import Channel
from mtdesk.core.ports import OutboundMessage

MESSENGER_MAX_CHARS: Final = 1999  # "< 2,000 characters"
INSTAGRAM_MAX_BYTES: Final = 1000
WHATSAPP_MAX_CHARS: Final = 4096
METADATA_PREFIX: Final = "mtdesk:"
METADATA_MAX_CHARS: Final = 1000  # Meta's cap on message.metadata

# Sentence ends: Latin punctuation followed by whitespace (closing quotes/brackets stay
# with the sentence), CJK full stops (no space follows them), and line breaks.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[」』”’)]*|\n")
_SPACE = re.compile(r"\s+")
# A cut this far into the window keeps parts from being needlessly small.
_MIN_FILL: Final = 0.3


def _chars_that_fit(limit: int) -> Callable[[str], int]:
    def fit(text: str) -> int:
        return min(len(text), limit)

    return fit


def _bytes_that_fit(limit: int) -> Callable[[str], int]:
    def fit(text: str) -> int:
        if len(text) * 4 <= limit:  # fast path: cannot exceed even at 4 bytes a char
            return len(text)
        encoded = text[: limit].encode("utf-8")  # a char is ≥ 1 byte: limit chars suffice
        if len(encoded) <= limit:
            return min(len(text), limit)
        # Longest character prefix within ``limit`` bytes (drop a cut multibyte char).
        return len(encoded[:limit].decode("utf-8", errors="ignore"))

    return fit


_FITTERS: Final[dict[str, Callable[[str], int]]] = {
    "messenger": _chars_that_fit(MESSENGER_MAX_CHARS),
    "instagram": _bytes_that_fit(INSTAGRAM_MAX_BYTES),
    "whatsapp": _chars_that_fit(WHATSAPP_MAX_CHARS),
}


def within_limit(channel: Channel, text: str) -> bool:
    """Whether ``text`` can be sent as one message on ``channel``."""
    return _FITTERS[channel](text) == len(text)


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
    fit = _FITTERS[channel]
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


# --- payloads ---------------------------------------------------------------------------
class _Recipient(msgspec.Struct, frozen=True):
    id: str


class _MessageText(msgspec.Struct, frozen=True, omit_defaults=True):
    text: str
    metadata: str | None = None


class PageSendBody(msgspec.Struct, frozen=True, kw_only=True):
    """Messenger / Instagram ``POST /{account-id}/messages``."""

    recipient: _Recipient
    messaging_type: str  # "RESPONSE": an answer to the user's message
    message: _MessageText


class _WhatsAppText(msgspec.Struct, frozen=True):
    body: str
    preview_url: bool = False


class _Context(msgspec.Struct, frozen=True):
    message_id: str


class WhatsAppSendBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """WhatsApp ``POST /{phone_number_id}/messages`` (text).

    The constant fields have no default so ``omit_defaults`` keeps them on the wire.
    """

    messaging_product: str  # "whatsapp"
    recipient_type: str  # "individual"
    to: str | None = None
    recipient: str | None = None  # the business-scoped user id, when there is no wa_id
    type: str  # "text"
    text: _WhatsAppText
    context: _Context | None = None


_encoder = msgspec.json.Encoder()


def metadata_for(reply_key: str, part: int) -> str:
    """Our ``metadata`` for part ``part`` of the reply to ``reply_key`` (≤ 1,000 chars)."""
    value = f"{METADATA_PREFIX}{reply_key}#{part}"
    if len(value) <= METADATA_MAX_CHARS:
        return value
    digest = hashlib.blake2b(reply_key.encode("utf-8"), digest_size=16).hexdigest()
    return f"{METADATA_PREFIX}h:{digest}#{part}"


def is_our_metadata(metadata: str | None) -> bool:
    """Whether an echo's ``metadata`` marks a message MT Desk sent."""
    return bool(metadata) and metadata.startswith(METADATA_PREFIX)  # type: ignore[union-attr]


def whatsapp_address(message: OutboundMessage) -> tuple[str | None, str | None]:
    """(``to``, ``recipient``): the phone-number id when known, else the business-scoped id."""
    if message.wa_id:
        return message.wa_id, None
    if message.user_id.isdigit():  # no business-scoped id: user_id is the wa_id itself
        return message.user_id, None
    return None, message.user_id


def render_body(message: OutboundMessage, text: str, part: int) -> bytes:
    """The JSON body for one part of ``message``."""
    if message.channel == "whatsapp":
        to, recipient = whatsapp_address(message)
        context = _Context(message.reply_to) if message.reply_to and part == 0 else None
        return _encoder.encode(
            WhatsAppSendBody(
                messaging_product="whatsapp", recipient_type="individual", to=to,
                recipient=recipient, type="text", text=_WhatsAppText(text), context=context,
            )
        )
    return _encoder.encode(
        PageSendBody(
            recipient=_Recipient(message.user_id),
            messaging_type="RESPONSE",
            message=_MessageText(text, metadata_for(message.reply_key, part)),
        )
    )


def render_parts(message: OutboundMessage) -> list[bytes]:
    """Every body to send for ``message``, in order (empty when the text is blank)."""
    texts = split_text(message.channel, message.text)
    return [render_body(message, text, i) for i, text in enumerate(texts)]
