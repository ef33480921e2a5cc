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


class Referral(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where the person came from, as Meta said: an ad (click-to-Messenger/WhatsApp), an
    ``m.me``/``wa.me`` link or QR code with a ``ref``, a plugin opt-in, a post."""

    source: str | None = None  # Messenger ADS / SHORTLINK / CUSTOMER_CHAT_PLUGIN …; WhatsApp "ad" / "post"
    type: str | None = None  # Messenger OPEN_THREAD …; opt-ins: "checkbox", "notification_messages"
    ref: str | None = None  # the link's / plugin's ref parameter
    ad_id: str | None = None  # Messenger ad id; WhatsApp source_id
    url: str | None = None  # WhatsApp source_url, Messenger referer_uri
    headline: str | None = None
    body: str | None = None
    ctwa_clid: str | None = None  # WhatsApp click id (conversions API)


class FormField(msgspec.Struct, frozen=True, array_like=True):
    """One answer of a submitted WhatsApp Flow form (``nfm_reply``)."""

    name: str
    value: str


class ContactCard(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A contact the person shared (WhatsApp ``contacts`` message)."""

    name: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    organization: str | None = None
    urls: tuple[str, ...] = ()


class OrderItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    product_id: str  # the catalog's product_retailer_id
    quantity: int = 1
    price: float | None = None  # per item
    currency: str | None = None


class Order(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A cart the person sent from the business's WhatsApp catalog."""

    catalog_id: str | None = None
    note: str | None = None  # the text the person added to the order
    items: tuple[OrderItem, ...] = ()


class Pricing(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What Meta bills for a WhatsApp message (from its status), for cost metering."""

    category: str | None = None  # marketing / utility / authentication / service …
    billable: bool | None = None
    model: str | None = None  # pricing_model: CBP, PMP
    type: str | None = None  # regular / free_customer_service / free_entry_point


class _Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    event_id: str  # mid / wamid, or a stable id made from the receipt's fields
    channel: Channel
    account_id: str
    user_id: str
    timestamp_ms: int
    wa_id: str | None = None  # WhatsApp phone-number id of the user, when Meta gave one
    user_name: str | None = None  # WhatsApp contact profile name
    origin: Referral | None = None  # the ad / link / opt-in the person came from, when told
    # Delivered on Messenger/Instagram's ``standby`` channel: another app (Meta's Page
    # inbox, Business Agent, another bot) owns the thread; we watch, never answer.
    standby: bool = False

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
    referral: str | None = None  # ad / link referral ref, when present (``origin`` has it all)
    type: str = "text"  # the channel's own type name (text, image, sticker, order, …)
    # Structured content of forms, shared contacts and orders; ``text`` says the same in
    # words, so the bot and the inbox read them like any message.
    form: tuple[FormField, ...] = ()
    contacts: tuple[ContactCard, ...] = ()
    order: Order | None = None


class Postback(_Event, frozen=True, tag="postback"):
    title: str | None = None
    payload: str | None = None


class Reaction(_Event, frozen=True, tag="reaction"):
    target_id: str
    emoji: str | None = None
    action: Literal["react", "unreact"] = "react"


class Echo(_Event, frozen=True, tag="echo"):
    """The business account's own outgoing message reflected back (Messenger/Instagram),
    or one the business sent from the WhatsApp Business app (``smb_message_echoes``).

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
    """WhatsApp status of a message we sent: sent < delivered < read; failed is terminal.
    ``callback_data``: the send's ``biz_opaque_callback_data`` (ours: our send's mark)."""

    message_id: str
    status: Literal["sent", "delivered", "read", "failed", "deleted", "warning", "played"]
    errors: tuple[StatusError, ...] = ()
    pricing: Pricing | None = None
    callback_data: str | None = None


class Unsend(_Event, frozen=True, tag="unsend"):
    """The end user deleted (unsent) one of their messages (Messenger/Instagram
    ``is_deleted``, WhatsApp ``revoke`` or status ``deleted``); ``target_id`` is the
    original's id, and the event id ``unsend:{target_id}``, whichever way it came.
    ``by_business``: the business deleted one of its own messages (a WhatsApp Business
    app echo of type ``revoke``, coexistence)."""

    target_id: str
    by_business: bool = False


class Edit(_Event, frozen=True, tag="edit"):
    """The end user edited one of their messages (Messenger/Instagram ``message_edit``,
    WhatsApp ``edit``): ``text`` is the new version of ``target_id``; ``version`` counts
    the edits when Meta says (Messenger ``num_edit``). Recorded as a version of the
    original; never answered on its own. ``by_business``: the business edited one of its
    own messages (a WhatsApp Business app echo of type ``edit``, coexistence)."""

    target_id: str
    text: str | None = None
    version: int = 0
    by_business: bool = False


class Comment(_Event, frozen=True, tag="comment"):
    """A comment on the business's Instagram media (webhook field ``comments``, or
    ``live_comments`` during a live broadcast): ``event_id`` is the comment's id,
    ``user_id`` its author (Instagram-scoped id) and ``user_name`` the author's username.
    ``by_business``: the business's own comment (its author is the account itself).
    Recorded in the author's conversation; answered only by a private reply, when the
    bot's ``comment_replies`` is ``"private"`` (never the business's own comments)."""

    text: str | None = None
    media_id: str | None = None
    media_type: str | None = None  # media_product_type: FEED, REELS, STORY, AD, LIVE …
    parent_id: str | None = None  # the comment this one replies to
    live: bool = False  # a comment on a live broadcast (``live_comments``)
    ad_id: str | None = None  # the ad, when the media is a boosted post or an ad
    by_business: bool = False


class Mention(_Event, frozen=True, tag="mention"):
    """The business was @mentioned on Instagram (webhook field ``mentions``): in a
    comment (``comment_id``) or in a caption (``media_id`` only). Meta names neither the
    author nor the text, so ``user_id`` is :data:`MENTIONS_USER`: an account's mentions
    are one feed of records. Never answered."""

    media_id: str
    comment_id: str | None = None


# The ``user_id`` of an account's mentions feed (never an Instagram-scoped id: those are
# digits).
MENTIONS_USER = "mentions"


class Handover(_Event, frozen=True, tag="handover"):
    """Thread control changed hands (Messenger/Instagram ``messaging_handovers``, the
    handover protocol): ``pass`` (control passed, to ``new_owner_app_id``), ``take``
    (taken by ``new_owner_app_id`` from ``previous_owner_app_id``), ``request`` (the app
    ``requested_owner_app_id`` asks for it). App ids are as Meta sent them (``None``:
    not said; a previous owner of ``None`` is the idle thread)."""

    action: Literal["pass", "take", "request"]
    new_owner_app_id: str | None = None
    previous_owner_app_id: str | None = None
    requested_owner_app_id: str | None = None
    metadata: str | None = None


class UserChanged(_Event, frozen=True, tag="user_changed"):
    """The person's id changed (WhatsApp system messages ``user_changed_number`` and
    ``user_changed_user_id``): the conversation of ``user_id`` continues as that of
    ``new_user_id`` (``new_wa_id`` is the new phone-based id when Meta gave one)."""

    change: str  # user_changed_number | user_changed_user_id
    new_user_id: str
    new_wa_id: str | None = None
    text: str | None = None  # Meta's own sentence about it ("User … changed from … to …")


class Imported(_Event, frozen=True, tag="imported"):
    """A past message imported from the WhatsApp Business app (coexistence ``history``):
    ``direction`` ``in`` (the person wrote it) or ``out`` (the business did). Recorded
    with its own time; never answered, opens no window."""

    direction: Literal["in", "out"]
    type: str = "text"
    text: str | None = None
    attachments: tuple[Attachment, ...] = ()
    status: str | None = None  # Meta's history_context.status (read, delivered, …)


class Unsupported(_Event, frozen=True, tag="unsupported"):
    """A message type we do not understand; recorded, counted, not answered."""

    type: str = "unknown"


class TemplateSend(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An approved WhatsApp message template to send: its name, language code and the
    body's parameters, in order."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()


class AgentReply(_Event, frozen=True, tag="agent_reply"):
    """A person's reply from the inbox (never from Meta): queued by the admin API on the
    conversation's partition stream, so the conversation's shard sends it in order
    through the same exactly-once sender as the bot. ``author`` is the team member (user
    id, or ``api`` for an API key); ``tag`` is ``HUMAN_AGENT`` for a Messenger/Instagram
    reply outside the 24 h window; ``template`` a WhatsApp template instead of text."""

    text: str | None = None
    author: str = ""
    tag: str | None = None
    template: TemplateSend | None = None


Event = (Message | Postback | Reaction | Echo | Receipt | Status | Unsend | Edit | Handover
         | UserChanged | Imported | Comment | Mention | Unsupported | AgentReply)
EVENT_KINDS: tuple[str, ...] = (
    "message", "postback", "reaction", "echo", "receipt", "status", "unsend", "edit",
    "handover", "user_changed", "imported", "comment", "mention", "unsupported",
    "agent_reply",
)

# Encoders/decoders are built once; use these rather than making new ones per call.
event_encoder = msgspec.msgpack.Encoder()
event_decoder: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(Event)


EVENT_FAMILY = "event"
"""An inbound stream entry's event sealed with its tenant's data key (the entry's ``e``
field; id ``""``: the entry is transient, and its tenant field ``t`` says whose key)."""


def encode_event(event: Event) -> bytes:
    return event_encoder.encode(event)


def decode_event(data: bytes) -> Event:
    return event_decoder.decode(data)


def conversation_key(channel: str, account_id: str, user_id: str) -> str:
    return f"{channel}:{account_id}:{user_id}"


def partition_of(conversation: str, partitions: int) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    return zlib.crc32(conversation.encode("utf-8")) % partitions
