"""Messenger outbound: the send body, its limit, and the metadata that marks our sends.

Callers rely on:

- :data:`MAX_CHARS` — a Messenger text is under 2,000 characters;
- :func:`render_body` — the JSON body of ``POST /{page-id}/messages`` for one part, with
  our metadata ``mtdesk:<reply_key>#<part>`` (Meta echoes it back, so
  :func:`is_our_metadata` recognizes our own sends). Instagram sends the same body. A
  private reply to a comment (``message.comment_id``) is addressed
  ``recipient: {"comment_id": …}`` instead of the person's id.
- :func:`render_signals` — the ``sender_action`` bodies shown while an answer is made:
  ``mark_seen`` (the first time, when read receipts are on) then ``typing_on``.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from mtdesk.channels.suggestions import (
    MAX_QUICK_REPLIES,
    QUICK_REPLY_TITLE,
    payload_for,
    title_for,
)
from mtdesk.core.ports import OutboundMessage, SourceAttachment

MAX_CHARS: Final = 1999  # "< 2,000 characters"
METADATA_PREFIX: Final = "mtdesk:"
METADATA_MAX_CHARS: Final = 1000  # Meta's cap on message.metadata


class _Recipient(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str | None = None
    comment_id: str | None = None  # a private reply to a comment (Instagram, Page posts)


class QuickReply(msgspec.Struct, frozen=True):
    content_type: str  # "text"
    title: str  # ≤ 20 characters
    payload: str  # ≤ 1,000 characters


class _MessageText(msgspec.Struct, frozen=True, omit_defaults=True):
    text: str
    metadata: str | None = None
    quick_replies: tuple[QuickReply, ...] = ()


class PageSendBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Messenger / Instagram ``POST /{account-id}/messages``."""

    recipient: _Recipient
    # "RESPONSE": an answer to the user's message; "MESSAGE_TAG" with ``tag`` (a person's
    # ``HUMAN_AGENT`` reply, allowed up to 7 days after the user's last message).
    messaging_type: str
    message: _MessageText
    tag: str | None = None


class _AttachmentPayload(msgspec.Struct, frozen=True):
    url: str
    is_reusable: bool = True


class _Attachment(msgspec.Struct, frozen=True):
    type: str  # "image" | "file"
    payload: _AttachmentPayload


class _MessageAttachment(msgspec.Struct, frozen=True):
    attachment: _Attachment
    metadata: str


class PageAttachmentBody(msgspec.Struct, frozen=True, kw_only=True):
    """Messenger / Instagram ``POST /{account-id}/messages`` with an attachment by URL."""

    recipient: _Recipient
    messaging_type: str
    message: _MessageAttachment


class SenderActionBody(msgspec.Struct, frozen=True, kw_only=True):
    """Messenger / Instagram ``POST /{account-id}/messages`` with a ``sender_action``."""

    recipient: _Recipient
    sender_action: str  # "mark_seen" | "typing_on" | "typing_off"


_encoder = msgspec.json.Encoder()


def fit(text: str) -> int:
    """How many leading characters of ``text`` fit one Messenger message."""
    return min(len(text), MAX_CHARS)


def metadata_for(reply_key: str, part: int, *, max_chars: int = METADATA_MAX_CHARS) -> str:
    """Our ``metadata`` for part ``part`` of the reply to ``reply_key`` (≤ ``max_chars``:
    Meta's 1,000; WhatsApp's ``biz_opaque_callback_data`` takes 512)."""
    value = f"{METADATA_PREFIX}{reply_key}#{part}"
    if len(value) <= max_chars:
        return value
    digest = hashlib.blake2b(reply_key.encode("utf-8"), digest_size=16).hexdigest()
    return f"{METADATA_PREFIX}h:{digest}#{part}"


def is_our_metadata(metadata: str | None) -> bool:
    """Whether an echo's ``metadata`` marks a message MT Desk sent."""
    return bool(metadata) and metadata.startswith(METADATA_PREFIX)  # type: ignore[union-attr]


def quick_replies(suggestions: tuple[str, ...]) -> tuple[QuickReply, ...]:
    """Each suggestion as a text quick reply: its title within 20 characters, its whole
    text in our payload (so a tap answers what it says, not a cut title)."""
    return tuple(
        QuickReply("text", title_for(s, QUICK_REPLY_TITLE), payload_for(s, METADATA_MAX_CHARS))
        for s in suggestions[:MAX_QUICK_REPLIES])


def render_body(message: OutboundMessage, text: str, part: int,
                suggestions: tuple[str, ...] = ()) -> bytes:
    """The JSON body for part ``part`` (text ``text``) of ``message``, with
    ``suggestions`` as quick replies."""
    return _encoder.encode(
        PageSendBody(
            recipient=(_Recipient(comment_id=message.comment_id) if message.comment_id
                       else _Recipient(message.user_id)),
            messaging_type="MESSAGE_TAG" if message.tag else "RESPONSE",
            message=_MessageText(text, metadata_for(message.reply_key, part),
                                 quick_replies(suggestions)),
            tag=message.tag,
        )
    )


def render_attachment(message: OutboundMessage, attachment: SourceAttachment, part: int) -> bytes:
    """A picture (``image``) or document (``file``) sent by its URL, with our metadata."""
    kind = "image" if attachment.type == "image" else "file"
    return _encoder.encode(PageAttachmentBody(
        recipient=_Recipient(message.user_id), messaging_type="RESPONSE",
        message=_MessageAttachment(_Attachment(kind, _AttachmentPayload(attachment.url)),
                                   metadata_for(message.reply_key, part))))


def render_signals(user_id: str, message_id: str, *, read: bool, first: bool) -> list[bytes]:
    """The bodies that mark the person's messages seen (``read`` and ``first``) and show
    typing; ``message_id`` is not needed (Messenger marks the whole thread seen)."""
    recipient = _Recipient(user_id)
    actions = ["mark_seen", "typing_on"] if read and first else ["typing_on"]
    return [_encoder.encode(SenderActionBody(recipient=recipient, sender_action=a))
            for a in actions]
