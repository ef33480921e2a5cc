"""Messenger (``object: "page"``): wire types of the Messenger Platform's ``messaging``
items and their translation into normalized events.

Instagram messaging uses the same item shape, so :mod:`mtdesk.channels.instagram.inbound`
reuses :class:`MessagingItem` and :func:`messaging_events` with its own channel name.

What callers may rely on: every item yields at least one event or one entry in
``unknown`` (counted by the route), never an exception for a shape Meta documents;
ids are synthesized stably for things without their own id (receipts, reactions), so
a redelivered webhook maps to the same event ids. Timestamps are epoch milliseconds;
a string, or a number of seconds (Meta's App Dashboard test samples), is read as what it
says. Handover-protocol items (pass / take / request thread control) are
:class:`~mtdesk.core.events.Handover` events. A checkbox-plugin opt-in names the person only by ``user_ref``: its user id is
``user_ref:<ref>`` (never a PSID, so it is its own conversation). Referrals (ads,
``m.me`` links, postback referrals, opt-in refs) are kept whole in ``origin``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import msgspec

from mtdesk.core.events import (
    Attachment,
    Channel,
    Echo,
    Edit,
    Event,
    Handover,
    Location,
    Message,
    Postback,
    Reaction,
    Receipt,
    Referral,
    Unsend,
    Unsupported,
)

# --- wire types (only the fields we use; unknown fields are ignored by msgspec) --------


class Party(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None


class Coordinates(msgspec.Struct, frozen=True, gc=False):
    lat: float
    long: float


class AttachmentPayload(msgspec.Struct, frozen=True, gc=False):
    url: str | None = None
    sticker_id: int | str | None = None
    title: str | None = None
    coordinates: Coordinates | None = None
    id: str | None = None  # Instagram reel / share id


class WireAttachment(msgspec.Struct, frozen=True, gc=False):
    type: str = "unsupported"
    payload: AttachmentPayload | None = None
    # A shared link (``fallback``) may carry these beside, not inside, its payload.
    title: str | None = None
    url: str | None = None


class QuickReply(msgspec.Struct, frozen=True, gc=False):
    payload: str | None = None


class StoryRef(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    url: str | None = None


class ReplyTo(msgspec.Struct, frozen=True, gc=False):
    mid: str | None = None
    story: StoryRef | None = None


class AdsContext(msgspec.Struct, frozen=True, gc=False):
    ad_title: str | None = None


class WireReferral(msgspec.Struct, frozen=True, gc=False):
    ref: str | None = None
    source: str | None = None
    type: str | None = None
    ad_id: str | None = None
    referer_uri: str | None = None
    ads_context_data: AdsContext | None = None


class WireOptin(msgspec.Struct, frozen=True, gc=False):
    ref: str | None = None
    user_ref: str | None = None
    type: str | None = None  # "notification_messages" for recurring notifications
    payload: str | None = None


class WireMessage(msgspec.Struct, frozen=True, gc=False):
    mid: str | None = None
    text: str | None = None
    attachments: list[WireAttachment] | None = None
    quick_reply: QuickReply | None = None
    reply_to: ReplyTo | None = None
    referral: WireReferral | None = None
    is_echo: bool = False
    app_id: int | str | None = None
    metadata: str | None = None
    is_deleted: bool = False
    is_unsupported: bool = False


class WirePostback(msgspec.Struct, frozen=True, gc=False):
    mid: str | None = None
    title: str | None = None
    payload: str | None = None
    referral: WireReferral | None = None


class WireReaction(msgspec.Struct, frozen=True, gc=False):
    mid: str | None = None
    action: str | None = None  # "react" | "unreact"
    reaction: str | None = None  # "love", "smile", …
    emoji: str | None = None


class WireDelivery(msgspec.Struct, frozen=True, gc=False):
    mids: list[str] | None = None
    watermark: int | None = None


class WireRead(msgspec.Struct, frozen=True, gc=False):
    watermark: int | None = None
    mid: str | None = None  # Instagram "seen" names the message


class WireEdit(msgspec.Struct, frozen=True, gc=False):
    mid: str | None = None
    text: str | None = None
    num_edit: int | str | None = None


class WireThreadControl(msgspec.Struct, frozen=True, gc=False):
    """``pass_thread_control`` / ``take_thread_control`` / ``request_thread_control``."""

    new_owner_app_id: int | str | None = None
    previous_owner_app_id: int | str | None = None
    requested_owner_app_id: int | str | None = None
    metadata: str | None = None


class MessagingItem(msgspec.Struct, frozen=True, gc=False):
    """One element of ``entry[].messaging[]`` (Messenger and Instagram)."""

    sender: Party | None = None
    recipient: Party | None = None
    timestamp: int | str | None = None
    message: WireMessage | None = None
    postback: WirePostback | None = None
    reaction: WireReaction | None = None
    delivery: WireDelivery | None = None
    read: WireRead | None = None
    message_edit: WireEdit | None = None
    referral: WireReferral | None = None
    optin: WireOptin | None = None
    account_linking: Any = None
    pass_thread_control: WireThreadControl | None = None
    take_thread_control: WireThreadControl | None = None
    request_thread_control: WireThreadControl | None = None
    policy_enforcement: Any = None


messaging_item_decoder: msgspec.json.Decoder[MessagingItem] = msgspec.json.Decoder(MessagingItem)

# Item kinds we record as Unsupported (not answered), by the field that carries them.
_OTHER_ITEMS = ("account_linking", "policy_enforcement")
_HANDOVERS: tuple[tuple[str, Literal["pass", "take", "request"]], ...] = (
    ("pass_thread_control", "pass"), ("take_thread_control", "take"),
    ("request_thread_control", "request"),
)


# --- translation ------------------------------------------------------------------------


def _attachment(wire: WireAttachment) -> Attachment:
    p = wire.payload
    if p is None:
        return Attachment(type=wire.type, url=wire.url, caption=wire.title)
    if p.sticker_id is not None:
        # Messenger sends stickers (and the like button) as images with a sticker_id.
        return Attachment(type="sticker", url=p.url, sticker_id=str(p.sticker_id))
    return Attachment(type=wire.type, url=p.url or wire.url, caption=p.title or wire.title, media_id=p.id)


def _shared_links(attachments: tuple[Attachment, ...]) -> str | None:
    """What a message of shared links says (title and address), for a message with no text."""
    lines = [" ".join(x for x in (a.caption, a.url) if x) for a in attachments if a.type == "fallback"]
    return "\n".join(line for line in lines if line) or None


def _location(attachments: list[WireAttachment]) -> Location | None:
    for a in attachments:
        if a.type == "location" and a.payload is not None and a.payload.coordinates is not None:
            c = a.payload.coordinates
            return Location(latitude=c.lat, longitude=c.long, name=a.payload.title)
    return None


def _referral(ref: WireReferral | None) -> str | None:
    if ref is None:
        return None
    return ref.ref or ref.ad_id or ref.source


def origin_of(ref: WireReferral | None) -> Referral | None:
    """The whole referral, as events keep it."""
    if ref is None:
        return None
    ads = ref.ads_context_data
    return Referral(
        source=ref.source, type=ref.type, ref=ref.ref, ad_id=ref.ad_id, url=ref.referer_uri,
        headline=ads.ad_title if ads is not None else None,
    )


def timestamp_ms(ts: int | str | None) -> int:
    """Epoch milliseconds of a ``timestamp``: Meta's are milliseconds; its dashboard's
    test samples send seconds, as a string."""
    if type(ts) is int:
        return ts
    try:
        value = int(ts or 0)
    except ValueError:
        return 0
    return value * 1000 if 0 < value < 100_000_000_000 else value


class _Base(TypedDict):
    """The fields every event of a ``messaging`` item shares (typed, so ``**base`` is checked)."""

    channel: Channel
    account_id: str
    user_id: str
    timestamp_ms: int


def messaging_events(
    channel: Channel, entry_id: str, item: MessagingItem, unknown: list[str]
) -> list[Event]:
    """Normalized events of one ``messaging`` item; unrecognized kinds go to ``unknown``."""
    sender = item.sender.id if item.sender is not None and item.sender.id else None
    recipient = item.recipient.id if item.recipient is not None and item.recipient.id else None
    ts = item.timestamp
    if type(ts) is not int:
        ts = timestamp_ms(ts)
    msg = item.message

    if msg is not None and msg.is_echo:
        # The business's own message: the end user is the recipient, the account the sender.
        account = sender or entry_id
        user = recipient or ""
        return [
            Echo(
                event_id=msg.mid or f"echo:{account}:{user}:{ts}",
                channel=channel,
                account_id=account,
                user_id=user,
                timestamp_ms=ts,
                app_id=None if msg.app_id is None else str(msg.app_id),
                metadata=msg.metadata,
                text=msg.text,
                attachments=tuple(_attachment(a) for a in msg.attachments or ()),
            )
        ]

    account = recipient or entry_id
    user = sender or ""
    base: _Base = {"channel": channel, "account_id": account, "user_id": user, "timestamp_ms": ts}

    if msg is not None:
        mid = msg.mid or f"msg:{account}:{user}:{ts}"
        if msg.is_deleted:
            return [Unsend(event_id=f"unsend:{mid}", target_id=mid, **base)]
        if msg.is_unsupported:
            return [Unsupported(event_id=mid, type="unsupported", **base)]
        atts = msg.attachments
        reply_to = msg.reply_to
        story = reply_to.story if reply_to is not None else None
        text = msg.text
        kind = "text"
        attachments: tuple[Attachment, ...] = ()
        if atts:
            # (the plain text message, by far the most common, skips this)
            attachments = tuple(_attachment(a) for a in atts if a.type != "location")
            if text is None:
                # The type says what was sent: a sticker is "sticker", not its image.
                kind = attachments[0].type if attachments else atts[0].type
                text = _shared_links(attachments)
        return [
            Message(
                event_id=mid,
                text=text,
                attachments=attachments,
                quick_reply=msg.quick_reply.payload if msg.quick_reply is not None else None,
                reply_to=reply_to.mid if reply_to is not None else None,
                story_id=story.id if story is not None else None,
                story_url=story.url if story is not None else None,
                location=_location(atts) if atts else None,
                referral=_referral(msg.referral) if msg.referral is not None else None,
                origin=origin_of(msg.referral) if msg.referral is not None else None,
                type=kind,
                **base,
            )
        ]
    if item.postback is not None:
        pb = item.postback
        return [
            Postback(
                event_id=pb.mid or f"postback:{account}:{user}:{ts}",
                title=pb.title,
                payload=pb.payload,
                origin=origin_of(pb.referral),
                **base,
            )
        ]
    if item.reaction is not None:
        r = item.reaction
        action: Literal["react", "unreact"] = "unreact" if r.action == "unreact" else "react"
        emoji = r.emoji or r.reaction
        target = r.mid or ""
        return [
            Reaction(
                event_id=f"reaction:{account}:{user}:{target}:{action}:{emoji or ''}:{ts}",
                target_id=target,
                emoji=emoji,
                action=action,
                **base,
            )
        ]
    if item.delivery is not None:
        d = item.delivery
        wm = d.watermark or ts
        return [
            Receipt(
                event_id=f"delivery:{account}:{user}:{wm}",
                receipt="delivered",
                watermark_ms=wm,
                message_ids=tuple(d.mids or ()),
                **base,
            )
        ]
    if item.read is not None:
        rd = item.read
        wm = rd.watermark or ts
        marker = rd.mid or str(wm)
        return [
            Receipt(
                event_id=f"read:{account}:{user}:{marker}",
                receipt="read",
                watermark_ms=wm,
                message_ids=(rd.mid,) if rd.mid else (),
                **base,
            )
        ]
    if item.message_edit is not None:
        ed = item.message_edit
        # An edit is a version of its message, never answered on its own: replying twice
        # to one message confuses people.
        try:
            version = int(ed.num_edit or 0)
        except ValueError:
            version = 0
        return [
            Edit(
                event_id=f"edit:{ed.mid}:{ed.num_edit}:{ts}",
                target_id=ed.mid or "",
                text=ed.text,
                version=version,
                **base,
            )
        ]
    if item.referral is not None:
        # A known person opened the thread from an ad or link: recorded with where from.
        return [Unsupported(event_id=f"referral:{account}:{user}:{ts}", type="referral",
                            origin=origin_of(item.referral), **base)]
    if item.optin is not None:
        return [_optin(channel, account, user, ts, item.optin)]
    for name, step in _HANDOVERS:
        control: WireThreadControl | None = getattr(item, name)
        if control is not None:
            return [Handover(event_id=f"{name}:{account}:{user}:{ts}", action=step,
                             new_owner_app_id=_app_id(control.new_owner_app_id),
                             previous_owner_app_id=_app_id(control.previous_owner_app_id),
                             requested_owner_app_id=_app_id(control.requested_owner_app_id),
                             metadata=control.metadata, **base)]
    for name in _OTHER_ITEMS:
        if getattr(item, name) is not None:
            return [Unsupported(event_id=f"{name}:{account}:{user}:{ts}", type=name, **base)]
    unknown.append(f"{channel}:messaging")
    return []


def _app_id(value: int | str | None) -> str | None:
    return None if value is None or value == "" else str(value)


def _optin(channel: Channel, account: str, user: str, ts: int, optin: WireOptin) -> Event:
    """An opt-in: a checkbox plugin's (the person known only by ``user_ref``) or a
    recurring-notifications one (the person's PSID as sender). Recorded, not answered."""
    if not user and optin.user_ref:
        user = f"user_ref:{optin.user_ref}"
    origin = Referral(source="optin", type=optin.type or "checkbox", ref=optin.ref or optin.payload)
    return Unsupported(
        event_id=f"optin:{account}:{user}:{ts}", type="optin", channel=channel,
        account_id=account, user_id=user, timestamp_ms=ts, origin=origin,
    )
