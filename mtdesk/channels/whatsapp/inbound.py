"""WhatsApp Cloud API (``object: "whatsapp_business_account"``): wire types of a
``changes[].value`` with ``field == "messages"`` and their translation.

Users: WhatsApp in 2026 gives a business-scoped user id (``contacts[].user_id``,
``messages[].from_user_id``, ``statuses[].recipient_user_id``) beside the phone-based
``wa_id``, and a user with a username may come with no ``wa_id``/``from`` at all. The
event's ``user_id`` is that business-scoped id when present, else the ``wa_id``; the
``wa_id`` is kept on the event when Meta gave one. Timestamps are epoch seconds in
strings; events carry milliseconds.

Statuses get synthesized ids ``status:{wamid}:{status}`` (one per transition, so a
redelivery is a duplicate but ``delivered`` after ``sent`` is not) and keep Meta's
``pricing`` (category, billable) for cost metering. A status ``deleted`` and a message
``revoke`` are the user deleting their message: one :class:`Unsend` of the original,
``unsend:{original wamid}`` (so both for the same message are one event).

Readable content: a submitted Flow form (``interactive.nfm_reply``), shared
``contacts`` and an ``order`` are messages whose ``text`` says what was sent (form
answers, contact cards, ordered items) and whose ``form`` / ``contacts`` / ``order``
hold it structured. Ad referrals are kept whole in ``origin``.

One malformed item of a ``value`` (a message or status Meta or a forger shaped wrong)
costs only itself: :func:`decode_value_items` decodes the others one by one.
"""

from __future__ import annotations

import re
from typing import TypedDict, TypeVar

import msgspec

from mtdesk.core.events import (
    Attachment,
    Channel,
    ContactCard,
    Echo,
    Edit,
    Event,
    FormField,
    Imported,
    Location,
    Message,
    Order,
    OrderItem,
    Pricing,
    Reaction,
    Referral,
    Status,
    StatusError,
    Unsend,
    Unsupported,
    UserChanged,
)

OBJECT = "whatsapp_business_account"

_T = TypeVar("_T")

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


class WAFormReply(msgspec.Struct, frozen=True, gc=False):
    name: str | None = None  # "flow", "address_message"
    body: str | None = None
    response_json: str | None = None  # the form's answers, a JSON object in a string


class WAInteractive(msgspec.Struct, frozen=True, gc=False):
    type: str | None = None
    button_reply: WAReply | None = None
    list_reply: WAReply | None = None
    nfm_reply: WAFormReply | None = None


class WACardName(msgspec.Struct, frozen=True, gc=False):
    formatted_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class WACardPhone(msgspec.Struct, frozen=True, gc=False):
    phone: str | None = None
    wa_id: str | None = None


class WACardEmail(msgspec.Struct, frozen=True, gc=False):
    email: str | None = None


class WACardUrl(msgspec.Struct, frozen=True, gc=False):
    url: str | None = None


class WACardOrg(msgspec.Struct, frozen=True, gc=False):
    company: str | None = None


class WACard(msgspec.Struct, frozen=True, gc=False):
    """A shared contact (``messages[].contacts[]``; not the sender's ``value.contacts``)."""

    name: WACardName | None = None
    phones: list[WACardPhone] | None = None
    emails: list[WACardEmail] | None = None
    org: WACardOrg | None = None
    urls: list[WACardUrl] | None = None


class WAOrderItem(msgspec.Struct, frozen=True, gc=False):
    product_retailer_id: str | None = None
    quantity: int | str | None = None
    item_price: float | str | None = None
    currency: str | None = None


class WAOrder(msgspec.Struct, frozen=True, gc=False):
    catalog_id: str | None = None
    text: str | None = None
    product_items: list[WAOrderItem] | None = None


class WARevoke(msgspec.Struct, frozen=True, gc=False):
    original_message_id: str | None = None


class WAEditedText(msgspec.Struct, frozen=True, gc=False):
    body: str | None = None


class WAEditedMedia(msgspec.Struct, frozen=True, gc=False):
    caption: str | None = None


class WAEditedMessage(msgspec.Struct, frozen=True, gc=False):
    """The new version inside an ``edit`` (text, or media with a caption)."""

    type: str | None = None
    text: WAEditedText | None = None
    image: WAEditedMedia | None = None
    video: WAEditedMedia | None = None
    document: WAEditedMedia | None = None

    def new_text(self) -> str | None:
        if self.text is not None:
            return self.text.body
        media = self.image or self.video or self.document
        return media.caption if media is not None else None


class WAEdit(msgspec.Struct, frozen=True, gc=False):
    original_message_id: str | None = None
    message: WAEditedMessage | None = None


class WAButton(msgspec.Struct, frozen=True, gc=False):
    text: str | None = None
    payload: str | None = None


class WAContext(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None


class WAReferral(msgspec.Struct, frozen=True, gc=False):
    source_id: str | None = None
    source_url: str | None = None
    source_type: str | None = None  # "ad", "post"
    headline: str | None = None
    body: str | None = None
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


class WASystem(msgspec.Struct, frozen=True, gc=False):
    """A system message: the person changed their number or their business-scoped id."""

    type: str | None = None  # user_changed_number | user_changed_user_id | …
    body: str | None = None
    wa_id: str | None = None  # the new phone-based id (user_changed_number)
    new_wa_id: str | None = None  # older API versions' name for it
    user_id: str | None = None  # the new business-scoped id
    previous_user_id: str | None = None


class WAHistoryContext(msgspec.Struct, frozen=True, gc=False):
    status: str | None = None
    from_me: bool | None = None


class WAMessage(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    id: str | None = None
    from_: str | None = None
    from_user_id: str | None = None
    to: str | None = None  # Business-app echoes and imported history: the person written to
    to_user_id: str | None = None
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
    contacts: list[WACard] | None = None
    order: WAOrder | None = None
    revoke: WARevoke | None = None
    edit: WAEdit | None = None
    system: WASystem | None = None
    history_context: WAHistoryContext | None = None


class WAPricing(msgspec.Struct, frozen=True, gc=False):
    billable: bool | None = None
    pricing_model: str | None = None
    category: str | None = None
    type: str | None = None


class WAStatus(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    status: str | None = None
    timestamp: str | int | None = None
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    errors: list[WAError] | None = None
    pricing: WAPricing | None = None
    biz_opaque_callback_data: str | None = None  # what our send put there (≤ 512 chars)


class WAHistoryMeta(msgspec.Struct, frozen=True, gc=False):
    phase: int | str | None = None
    chunk_order: int | str | None = None
    progress: int | str | None = None


class WAThread(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None  # the person's phone number
    user_id: str | None = None
    messages: list[WAMessage] | None = None


class WAHistoryChunk(msgspec.Struct, frozen=True, gc=False):
    metadata: WAHistoryMeta | None = None
    threads: list[WAThread] | None = None
    errors: list[WAError] | None = None  # e.g. 2593109: the business declined to share


class WAValue(msgspec.Struct, frozen=True, gc=False):
    """``changes[].value`` of ``field == "messages"`` (and of the coexistence fields
    ``smb_message_echoes`` and ``history``, which add their own lists)."""

    metadata: WAMetadata | None = None
    contacts: list[WAContact] | None = None
    messages: list[WAMessage] | None = None
    statuses: list[WAStatus] | None = None
    errors: list[WAError] | None = None
    message_echoes: list[WAMessage] | None = None
    history: list[WAHistoryChunk] | None = None


value_decoder: msgspec.json.Decoder[WAValue] = msgspec.json.Decoder(WAValue)


_NO_METADATA = msgspec.Raw(b"null")


class _RawValue(msgspec.Struct, frozen=True, gc=False):
    metadata: msgspec.Raw = _NO_METADATA  # (``Raw | None`` would only accept null)
    contacts: list[msgspec.Raw] | None = None
    messages: list[msgspec.Raw] | None = None
    statuses: list[msgspec.Raw] | None = None
    errors: list[msgspec.Raw] | None = None


_raw_value_decoder = msgspec.json.Decoder(_RawValue)
_metadata_decoder = msgspec.json.Decoder(WAMetadata)
_contact_decoder = msgspec.json.Decoder(WAContact)
_message_decoder = msgspec.json.Decoder(WAMessage)
_status_decoder = msgspec.json.Decoder(WAStatus)
_error_decoder = msgspec.json.Decoder(WAError)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def decode_value_items(raw: msgspec.Raw | bytes) -> tuple[WAValue | None, int]:
    """A ``value`` that did not decode whole, item by item: (what decoded, items that did
    not). ``None`` when even its outline (an object of lists) is wrong."""
    try:
        outline = _raw_value_decoder.decode(raw)
    except _DECODE_ERRORS:
        return None, 1
    bad = 0

    def each(items: list[msgspec.Raw] | None, decoder: msgspec.json.Decoder[_T]) -> list[_T] | None:
        nonlocal bad
        if items is None:
            return None
        out: list[_T] = []
        for item in items:
            try:
                out.append(decoder.decode(item))
            except _DECODE_ERRORS:
                bad += 1
        return out

    metadata: WAMetadata | None = None
    if outline.metadata is not _NO_METADATA:
        try:
            metadata = _metadata_decoder.decode(outline.metadata)
        except _DECODE_ERRORS:
            bad += 1
    value = WAValue(
        metadata=metadata,
        contacts=each(outline.contacts, _contact_decoder),
        messages=each(outline.messages, _message_decoder),
        statuses=each(outline.statuses, _status_decoder),
        errors=each(outline.errors, _error_decoder),
    )
    return value, bad

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
    origin: Referral | None
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
    if t == "revoke" and m.revoke is not None and m.revoke.original_message_id:
        # The user deleted their message: the original goes, as with a status "deleted".
        original = m.revoke.original_message_id
        return Unsend(
            event_id=f"unsend:{original}", target_id=original, channel="whatsapp",
            account_id=account, user_id=who.user_id, timestamp_ms=ts, wa_id=who.wa_id,
            user_name=who.name,
        )
    if t == "edit" and m.edit is not None and m.edit.original_message_id:
        return Edit(
            target_id=m.edit.original_message_id,
            text=m.edit.message.new_text() if m.edit.message is not None else None,
            **base,
        )
    if t == "system" and m.system is not None:
        changed = _user_changed(m.system, who, base)
        if changed is not None:
            return changed
        return Unsupported(type=f"system:{m.system.type or 'unknown'}"[:64], **base)
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
    ref = m.referral
    referral = (ref.source_id or ref.ctwa_clid) if ref is not None else None
    common: _Common = {
        "reply_to": reply_to, "referral": referral, "type": t,
        "origin": _origin(ref) if ref is not None else None, **base,
    }
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
        if m.interactive.nfm_reply is not None:
            form = form_fields(m.interactive.nfm_reply.response_json)
            return Message(text=form_text(m.interactive.nfm_reply, form), form=form, **common)
    if t == "button" and m.button is not None:
        return Message(text=m.button.text, quick_reply=m.button.payload, **common)
    if t == "contacts" and m.contacts:
        cards = tuple(_card(c) for c in m.contacts)
        return Message(text=contacts_text(cards), contacts=cards, **common)
    if t == "order" and m.order is not None:
        order = _order(m.order)
        return Message(text=order_text(order), order=order, **common)
    unknown.append(f"whatsapp:message:{t}"[:64])
    return Unsupported(type=t, **base)


_KNOWN_TYPES = frozenset((
    "text", *_MEDIA, "location", "interactive", "button", "reaction", "contacts", "order", "revoke",
    "edit", "system",
))
USER_CHANGES = frozenset(("user_changed_number", "user_changed_user_id"))


def _user_changed(system: WASystem, who: _Who, base: _MessageBase) -> UserChanged | None:
    """The person's new id after a number or business-scoped id change; None when the
    message names no change we can follow (or none at all: the id stays)."""
    if system.type not in USER_CHANGES:
        return None
    new_wa_id = system.wa_id or system.new_wa_id
    if system.type == "user_changed_user_id":
        new_user = system.user_id
    elif who.user_id and who.user_id == who.wa_id:
        # Keyed on the phone-based id: the conversation follows the new number (or the
        # business-scoped id Meta gives with it).
        new_user = system.user_id or new_wa_id
    else:
        new_user = system.user_id or who.user_id  # keyed on a business-scoped id: it stays
    old_user = who.user_id or system.previous_user_id or ""
    if not new_user:
        return None
    fields = dict(base)
    fields["user_id"] = old_user
    return UserChanged(change=system.type, new_user_id=new_user, new_wa_id=new_wa_id,
                       text=system.body, **fields)  # type: ignore[arg-type]



def _origin(ref: WAReferral) -> Referral:
    return Referral(
        source=ref.source_type, ad_id=ref.source_id, url=ref.source_url,
        headline=ref.headline, body=ref.body, ctwa_clid=ref.ctwa_clid,
    )


# --- readable content -------------------------------------------------------------------

_form_decoder = msgspec.json.Decoder(dict[str, object])
_value_encoder = msgspec.json.Encoder()
# Flow Builder names fields like "screen_0_First_name_1": the label is the middle part.
_SCREEN_PREFIX = re.compile(r"^screen_\d+_")
_INDEX_SUFFIX = re.compile(r"_\d+$")


def form_fields(response_json: str | None) -> tuple[FormField, ...]:
    """The answers of a submitted form, in the order sent (``flow_token`` left out).
    A ``response_json`` that is not a JSON object gives none."""
    if not response_json:
        return ()
    try:
        answers = _form_decoder.decode(response_json)
    except _DECODE_ERRORS:
        return ()
    return tuple(
        FormField(str(name), value if isinstance(value, str) else _value_encoder.encode(value).decode())
        for name, value in answers.items()
        if name != "flow_token"
    )


def _label(name: str) -> str:
    label = _INDEX_SUFFIX.sub("", _SCREEN_PREFIX.sub("", name)).replace("_", " ").strip()
    return label or name


def form_text(reply: WAFormReply, form: tuple[FormField, ...]) -> str:
    """A form submission in words: what the bot and the inbox read."""
    head = "Address sent" if reply.name == "address_message" else "Form submitted"
    if not form:
        return f"{head}: {reply.body}" if reply.body and reply.body != "Sent" else head
    return "\n".join([f"{head}:", *(f"{_label(f.name)}: {f.value}" for f in form)])


def _card(c: WACard) -> ContactCard:
    n = c.name
    name = (n.formatted_name or " ".join(x for x in (n.first_name, n.last_name) if x) or None) if n else None
    return ContactCard(
        name=name,
        phones=tuple(p.phone or p.wa_id or "" for p in c.phones or () if p.phone or p.wa_id),
        emails=tuple(e.email for e in c.emails or () if e.email),
        organization=c.org.company if c.org is not None else None,
        urls=tuple(u.url for u in c.urls or () if u.url),
    )


def contacts_text(cards: tuple[ContactCard, ...]) -> str:
    """Shared contact cards in words, one line each."""
    lines = []
    for card in cards:
        parts = [card.name or "(no name)"]
        if card.organization:
            parts.append(card.organization)
        parts.extend(card.phones)
        parts.extend(card.emails)
        parts.extend(card.urls)
        lines.append(", ".join(parts))
    head = "Shared a contact:" if len(cards) == 1 else f"Shared {len(cards)} contacts:"
    return "\n".join([head, *lines])


def _number(value: int | float | str | None, kind: type[int] | type[float]) -> int | float | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        return None


def _order(o: WAOrder) -> Order:
    items = []
    for it in o.product_items or ():
        quantity = _number(it.quantity, int)
        items.append(OrderItem(
            product_id=it.product_retailer_id or "",
            quantity=int(quantity) if quantity is not None else 1,
            price=_number(it.item_price, float),
            currency=it.currency,
        ))
    return Order(catalog_id=o.catalog_id, note=o.text, items=tuple(items))


def order_text(order: Order) -> str:
    """An order in words: one line per item, then the note the person added."""
    lines = ["Sent an order:"]
    for it in order.items:
        price = f" at {it.price:g} {it.currency or ''}".rstrip() if it.price is not None else ""
        lines.append(f"{it.quantity} × {it.product_id}{price}")
    if order.note:
        lines.append(f"Note: {order.note}")
    return "\n".join(lines)


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
    p = s.pricing
    return Status(
        event_id=f"status:{wamid}:{name}",
        message_id=wamid,
        status=name,  # type: ignore[arg-type]  # checked against _STATUSES above
        errors=tuple(_error(e) for e in s.errors or ()),
        pricing=None if p is None else Pricing(
            category=p.category, billable=p.billable, model=p.pricing_model, type=p.type),
        callback_data=s.biz_opaque_callback_data,
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


# --- coexistence: the WhatsApp Business app on the same number --------------------------

COEXISTENCE_FIELDS = frozenset(("smb_message_echoes", "history", "smb_app_state_sync"))


def _content(account: str, m: WAMessage) -> Message | None:
    """What a message says (text, attachments, type), read as any inbound message is."""
    scratch: list[str] = []
    ev = _message(account, [], m, scratch)
    return ev if isinstance(ev, Message) else None


def _digits(number: str | None) -> str:
    return "".join(ch for ch in number or "" if ch.isdigit())


def echo_events(entry_id: str, value: WAValue, unknown: list[str]) -> list[Event]:
    """``smb_message_echoes``: what the business sent from the WhatsApp Business app (or
    a linked device). Each is an :class:`Echo` to the person written to (never ours:
    the bot pauses as for a human agent); an echo that edits or deletes one of the
    business's messages is an :class:`Edit` / :class:`Unsend` of it, ``by_business``
    (one that names no message is ``Unsupported`` ``echo:edit`` / ``echo:revoke``)."""
    account = (value.metadata.phone_number_id if value.metadata is not None else None) or entry_id
    out: list[Event] = []
    for m in value.message_echoes or ():
        user = m.to_user_id or m.to or ""
        ts = _ms(m.timestamp)
        eid = m.id or f"wecho:{account}:{user}:{ts}"
        if m.type == "revoke" and m.revoke is not None and m.revoke.original_message_id:
            original = m.revoke.original_message_id
            out.append(Unsend(event_id=f"unsend:{original}", target_id=original,
                              by_business=True, channel="whatsapp", account_id=account,
                              user_id=user, timestamp_ms=ts, wa_id=m.to))
            continue
        if m.type == "edit" and m.edit is not None and m.edit.original_message_id:
            out.append(Edit(
                event_id=eid, target_id=m.edit.original_message_id, by_business=True,
                text=m.edit.message.new_text() if m.edit.message is not None else None,
                channel="whatsapp", account_id=account, user_id=user, timestamp_ms=ts,
                wa_id=m.to))
            continue
        if m.type in ("revoke", "edit"):  # without the message it names
            out.append(Unsupported(event_id=eid, type=f"echo:{m.type}", channel="whatsapp",
                                   account_id=account, user_id=user, timestamp_ms=ts,
                                   wa_id=m.to))
            continue
        said = _content(account, m)
        if said is None:
            unknown.append(f"whatsapp:echo:{m.type}"[:64])
        out.append(Echo(
            event_id=eid, channel="whatsapp", account_id=account, user_id=user,
            timestamp_ms=ts, wa_id=m.to, text=said.text if said is not None else None,
            attachments=said.attachments if said is not None else (),
        ))
    return out


def history_events(entry_id: str, value: WAValue, unknown: list[str]) -> list[Event]:
    """``history``: past messages of the Business app's chats (up to 180 days), each an
    :class:`Imported` of the thread's person, ``out`` when the business wrote it (its own
    number as sender, or ``history_context.from_me``). A chunk with ``errors`` (the
    business declined to share) is counted."""
    meta = value.metadata
    account = (meta.phone_number_id if meta is not None else None) or entry_id
    business = _digits(meta.display_phone_number if meta is not None else None)
    out: list[Event] = []
    for chunk in value.history or ():
        if chunk.errors:
            unknown.append("whatsapp:history:errors")
        for thread in chunk.threads or ():
            for m in thread.messages or ():
                ctx = m.history_context
                mine = bool(ctx is not None and ctx.from_me) or (
                    bool(business) and _digits(m.from_) == business)
                user = thread.user_id or (m.to_user_id if mine else m.from_user_id) or \
                    thread.id or (m.to if mine else m.from_) or ""
                ts = _ms(m.timestamp)
                said = _content(account, m)
                out.append(Imported(
                    event_id=m.id or f"whist:{account}:{user}:{ts}", channel="whatsapp",
                    account_id=account, user_id=user, timestamp_ms=ts,
                    wa_id=thread.id, direction="out" if mine else "in", type=m.type,
                    text=said.text if said is not None else None,
                    attachments=said.attachments if said is not None else (),
                    status=ctx.status if ctx is not None else None,
                ))
    return out


def coexistence_events(field: str, entry_id: str, value: WAValue, unknown: list[str]) -> list[Event]:
    """Events of a coexistence field; ``smb_app_state_sync`` (the app's contact list)
    makes none (counted)."""
    if field == "smb_message_echoes":
        return echo_events(entry_id, value, unknown)
    if field == "history":
        return history_events(entry_id, value, unknown)
    unknown.append(f"whatsapp:field:{field}"[:64])
    return []
