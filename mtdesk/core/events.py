"""Normalized events: what the gateway makes of Meta's webhooks, for all three channels.

One tagged union (field ``kind``), encoded with msgpack into the inbound streams and
decoded once by the conversation shards. Every event names its channel, the business
account it arrived on (Page id, Instagram account id or WhatsApp ``phone_number_id``),
and the end user (PSID, IGSID, or for WhatsApp the business-scoped ``user_id`` when
present, else ``wa_id``).
"""

from __future__ import annotations

import zlib
from typing import Literal

import msgspec

Channel = Literal["messenger", "instagram", "whatsapp"]
CHANNELS: tuple[Channel, ...] = ("messenger", "instagram", "whatsapp")

AttachmentType = Literal[
    "image", "audio", "video", "file", "sticker", "document", "location", "template",
    "fallback", "share", "story_mention", "reel", "ig_reel", "unsupported",
]


class Attachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    url: str | None = None  # Messenger / Instagram CDN URL
    media_id: str | None = None  # WhatsApp media id: GET /{media-id} gives the URL
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    sticker_id: str | None = None


class Location(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class _Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    event_id: str  # mid / wamid, or a stable id made from the receipt's fields
    channel: Channel
    account_id: str
    user_id: str
    timestamp_ms: int
    wa_id: str | None = None  # WhatsApp phone-number id of the user, when Meta gave one
    user_name: str | None = None  # WhatsApp contact profile name

    @property
    def conversation(self) -> str:
        """The conversation key, unique per (channel, account, end user)."""
        return conversation_key(self.channel, self.account_id, self.user_id)


class Message(_Event, frozen=True, tag="message"):
    """A message from the end user: text and/or attachments, maybe a reply or a pick."""

    text: str | None = None
    attachments: tuple[Attachment, ...] = ()
    quick_reply: str | None = None  # quick-reply / WhatsApp button payload
    interactive_id: str | None = None  # WhatsApp list/button reply id
    reply_to: str | None = None  # id of the message this replies to
    story_id: str | None = None  # Instagram story replied to
    story_url: str | None = None
    location: Location | None = None
    referral: str | None = None  # ad / link referral ref, when present
    type: str = "text"  # the channel's own type name (text, image, interactive, …)


class Postback(_Event, frozen=True, tag="postback"):
    title: str | None = None
    payload: str | None = None


class Reaction(_Event, frozen=True, tag="reaction"):
    target_id: str
    emoji: str | None = None
    action: Literal["react", "unreact"] = "react"


class Echo(_Event, frozen=True, tag="echo"):
    """The business account's own outgoing message reflected back (Messenger/Instagram).

    ``user_id`` is the recipient. Ours when ``app_id`` is our app or ``metadata`` is ours;
    otherwise a human agent replied from the inbox.
    """

    app_id: str | None = None
    metadata: str | None = None
    text: str | None = None
    attachments: tuple[Attachment, ...] = ()


class Receipt(_Event, frozen=True, tag="receipt"):
    """Messenger/Instagram delivery or read receipt for our messages up to ``watermark``."""

    receipt: Literal["delivered", "read"]
    watermark_ms: int = 0
    message_ids: tuple[str, ...] = ()


class StatusError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: int
    title: str | None = None
    message: str | None = None
    details: str | None = None


class Status(_Event, frozen=True, tag="status"):
    """WhatsApp status of a message we sent: sent < delivered < read; failed is terminal."""

    message_id: str
    status: Literal["sent", "delivered", "read", "failed", "deleted", "warning", "played"]
    errors: tuple[StatusError, ...] = ()


class Unsend(_Event, frozen=True, tag="unsend"):
    """The end user deleted (unsent) one of their messages."""

    target_id: str


class Unsupported(_Event, frozen=True, tag="unsupported"):
    """A message type we do not understand; recorded, counted, not answered."""

    type: str = "unknown"


Event = Message | Postback | Reaction | Echo | Receipt | Status | Unsend | Unsupported
EVENT_KINDS: tuple[str, ...] = (
    "message", "postback", "reaction", "echo", "receipt", "status", "unsend", "unsupported",
)

# Encoders/decoders are built once; use these rather than making new ones per call.
event_encoder = msgspec.msgpack.Encoder()
event_decoder: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return event_encoder.encode(event)


def decode_event(data: bytes) -> Event:
    return event_decoder.decode(data)


def conversation_key(channel: str, account_id: str, user_id: str) -> str:
    return f"{channel}:{account_id}:{user_id}"


def partition_of(conversation: str, partitions: int) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    return zlib.crc32(conversation.encode("utf-8")) % partitions
