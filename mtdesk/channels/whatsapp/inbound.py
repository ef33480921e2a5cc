"""WhatsApp Cloud API (``object: "whatsapp_business_account"``): wire types of a
``changes[].value`` with ``field == "messages"`` and their translation.

Users: WhatsApp in 2026 gives a business-scoped user id (``contacts[].user_id``,
``messages[].from_user_id``, ``statuses[].recipient_user_id``) beside the phone-based
``wa_id``, and a user with a username may come with no ``wa_id``/``from`` at all. The
event's ``user_id`` is that business-scoped id when present, else the ``wa_id``; the
``wa_id`` is kept on the event when Meta gave one. Timestamps are epoch seconds in
strings; events carry milliseconds.

Statuses get synthesized ids ``status:{wamid}:{status}`` (one per transition, so a
redelivery is a duplicate but ``delivered`` after ``sent`` is not). A status
``deleted`` is the user deleting their message: an :class:`Unsend`.
"""

from __future__ import annotations

from typing import TypedDict

import msgspec

from mtdesk.core.events import (
    Attachment,
    Channel,
    Event,
    Location,
    Message,
    Reaction,
    Status,
    StatusError,
    Unsend,
    Unsupported,
)

OBJECT = "whatsapp_business_account"

# --- wire types -------------------------------------------------------------------------


class WAMetadata(msgspec.Struct, frozen=True, gc=False):
    phone_number_id: str | None = None
    display_phone_number: str | None = None


class WAProfile(msgspec.Struct, frozen=True, gc=False):
    name: str | None = None


class WAContact(msgspec.Struct, frozen=True, gc=False):
    wa_id: str | None = None
    user_id: str | None = None
    profile: WAProfile | None = None


class WAText(msgspec.Struct, frozen=True, gc=False):
    body: str | None = None


class WAMedia(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    url: str | None = None


class WALocation(msgspec.Struct, frozen=True, gc=False):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class WAReaction(msgspec.Struct, frozen=True, gc=False):
    message_id: str | None = None
    emoji: str | None = None


class WAReply(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    title: str | None = None


class WAInteractive(msgspec.Struct, frozen=True, gc=False):
    type: str | None = None
    button_reply: WAReply | None = None
    list_reply: WAReply | None = None


class WAButton(msgspec.Struct, frozen=True, gc=False):
    text: str | None = None
    payload: str | None = None


class WAContext(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None


class WAReferral(msgspec.Struct, frozen=True, gc=False):
    source_id: str | None = None
    source_url: str | None = None
    ctwa_clid: str | None = None


class WAErrorData(msgspec.Struct, frozen=True, gc=False):
    details: str | None = None


class WAError(msgspec.Struct, frozen=True, gc=False):
    code: int = 0
    title: str | None = None
    message: str | None = None
    error_data: WAErrorData | None = None


class WAUnsupported(msgspec.Struct, frozen=True, gc=False):
    type: str | None = None


class WAMessage(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    id: str | None = None
    from_: str | None = None
    from_user_id: str | None = None
    timestamp: str | int | None = None
    type: str = "unknown"
    text: WAText | None = None
    image: WAMedia | None = None
    audio: WAMedia | None = None
    video: WAMedia | None = None
    sticker: WAMedia | None = None
    document: WAMedia | None = None
    location: WALocation | None = None
    reaction: WAReaction | None = None
    interactive: WAInteractive | None = None
    button: WAButton | None = None
    context: WAContext | None = None
    referral: WAReferral | None = None
    errors: list[WAError] | None = None
    unsupported: WAUnsupported | None = None


class WAStatus(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    status: str | None = None
    timestamp: str | int | None = None
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    errors: list[WAError] | None = None


class WAValue(msgspec.Struct, frozen=True, gc=False):
    """``changes[].value`` of ``field == "messages"``."""

    metadata: WAMetadata | None = None
    contacts: list[WAContact] | None = None
    messages: list[WAMessage] | None = None
    statuses: list[WAStatus] | None = None
    errors: list[WAError] | None = None


value_decoder: msgspec.json.Decoder[WAValue] = msgspec.json.Decoder(WAValue)

_MEDIA = ("image", "audio", "video", "sticker", "document")
_STATUSES = frozenset(("sent", "delivered", "read", "failed", "deleted", "warning", "played"))


# --- translation ------------------------------------------------------------------------


def _ms(ts: str | int | None) -> int:
    if ts is None:
        return 0
    try:
        return int(ts) * 1000
    except ValueError:
        return 0


def _error(e: WAError) -> StatusError:
    return StatusError(
        code=e.code,
        title=e.title,
        message=e.message,
        details=e.error_data.details if e.error_data is not None else None,
    )


class _Who(msgspec.Struct, frozen=True, gc=False):
    user_id: str
    wa_id: str | None
    name: str | None


def _resolve(contacts: list[WAContact], wa_id: str | None, bsuid: str | None) -> _Who:
    """The user's ids from the item and the ``contacts`` beside it (matched by either id)."""
    match: WAContact | None = None
    for c in contacts:
        if (wa_id and c.wa_id == wa_id) or (bsuid and c.user_id == bsuid):
            match = c
            break
    if match is None and len(contacts) == 1 and not (wa_id and bsuid):
        match = contacts[0]
    if match is not None:
        bsuid = bsuid or match.user_id
        wa_id = wa_id or match.wa_id
    name = match.profile.name if match is not None and match.profile is not None else None
    return _Who(user_id=bsuid or wa_id or "", wa_id=wa_id, name=name)


class _Base(TypedDict):
    """The fields every WhatsApp event shares (typed, so ``**base`` is checked)."""

    channel: Channel
    account_id: str
    user_id: str
    timestamp_ms: int
    wa_id: str | None


class _MessageBase(_Base):
    event_id: str
    user_name: str | None


class _Common(_MessageBase):
    """A message's fields besides its content."""

    reply_to: str | None
    referral: str | None
    type: str


def _message(account: str, contacts: list[WAContact], m: WAMessage, unknown: list[str]) -> Event:
    who = _resolve(contacts, m.from_, m.from_user_id)
    ts = _ms(m.timestamp)
    eid = m.id or f"wamsg:{account}:{who.user_id}:{ts}"
    base: _MessageBase = {
        "event_id": eid, "channel": "whatsapp", "account_id": account, "user_id": who.user_id,
        "timestamp_ms": ts, "wa_id": who.wa_id, "user_name": who.name,
    }
    t = m.type
    if t == "reaction" and m.reaction is not None:
        emoji = m.reaction.emoji or None
        return Reaction(
            target_id=m.reaction.message_id or "",
            emoji=emoji,
            action="react" if emoji else "unreact",  # an empty emoji removes the reaction
            **base,
        )
    if t in ("unsupported", "unknown") or (m.errors and t not in _KNOWN_TYPES):
        inner = m.unsupported.type if m.unsupported is not None and m.unsupported.type else t
        return Unsupported(type=inner, **base)
    reply_to = m.context.id if m.context is not None else None
    referral = (m.referral.source_id or m.referral.ctwa_clid) if m.referral is not None else None
    common: _Common = {"reply_to": reply_to, "referral": referral, "type": t, **base}
    if t == "text" and m.text is not None:
        return Message(text=m.text.body, **common)
    if t in _MEDIA:
        media: WAMedia | None = getattr(m, t)
        if media is None:
            return Unsupported(type=t, **base)
        att = Attachment(
            type=t,
            media_id=media.id,
            mime_type=media.mime_type,
            caption=media.caption,
            filename=media.filename,
            url=media.url,
        )
        return Message(text=media.caption, attachments=(att,), **common)
    if t == "location" and m.location is not None:
        loc = m.location
        return Message(
            location=Location(
                latitude=loc.latitude, longitude=loc.longitude, name=loc.name, address=loc.address
            ),
            **common,
        )
    if t == "interactive" and m.interactive is not None:
        reply = m.interactive.button_reply or m.interactive.list_reply
        if reply is not None:
            return Message(text=reply.title, interactive_id=reply.id, **common)
    if t == "button" and m.button is not None:
        return Message(text=m.button.text, quick_reply=m.button.payload, **common)
    unknown.append(f"whatsapp:message:{t}"[:64])
    return Unsupported(type=t, **base)


_KNOWN_TYPES = frozenset(("text", *_MEDIA, "location", "interactive", "button", "reaction"))


def _status(account: str, contacts: list[WAContact], s: WAStatus, unknown: list[str]) -> Event:
    who = _resolve(contacts, s.recipient_id, s.recipient_user_id)
    ts = _ms(s.timestamp)
    wamid = s.id or ""
    name = s.status or "unknown"
    base: _Base = {
        "channel": "whatsapp", "account_id": account, "user_id": who.user_id,
        "timestamp_ms": ts, "wa_id": who.wa_id,
    }
    if name == "deleted":
        return Unsend(event_id=f"unsend:{wamid}", target_id=wamid, **base)
    if name not in _STATUSES:
        unknown.append("whatsapp:status")
        return Unsupported(event_id=f"status:{wamid}:{name}"[:512], type=f"status:{name}"[:64], **base)
    return Status(
        event_id=f"status:{wamid}:{name}",
        message_id=wamid,
        status=name,  # type: ignore[arg-type]  # checked against _STATUSES above
        errors=tuple(_error(e) for e in s.errors or ()),
        **base,
    )


def whatsapp_events(entry_id: str, value: WAValue, unknown: list[str]) -> list[Event]:
    """Normalized events of one ``messages`` change (all its messages and statuses)."""
    account = (value.metadata.phone_number_id if value.metadata is not None else None) or entry_id
    contacts = value.contacts or []
    out: list[Event] = [_message(account, contacts, m, unknown) for m in value.messages or ()]
    out.extend(_status(account, contacts, s, unknown) for s in value.statuses or ())
    if value.errors:
        # Errors about the number or the app, not about a user: counted (and logged by id).
        unknown.append("whatsapp:errors")
    return out
