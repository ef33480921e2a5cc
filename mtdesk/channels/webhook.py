"""A webhook body → normalized events, for all three channels.

:func:`parse_webhook` decodes the envelope once (msgspec, only the fields used), then
hands every ``entry[].messaging[]`` item and every ``entry[].changes[]`` item to its
channel adapter. Callers may rely on:

- a body that is not a JSON object with ``object`` (string) and ``entry`` (list)
  raises :class:`UndecodableBody` (the route dead-letters it and answers 200);
- unknown ``object`` values, unknown change fields and unknown item kinds are not
  errors: they are listed in ``ParsedWebhook.unknown`` (the route counts them);
- one malformed item does not lose its neighbours: its events are missing, the others
  are returned, and ``ParsedWebhook.malformed`` says the body should be dead-lettered too.
  That holds for Messenger/Instagram ``messaging`` items and for each message, status
  and contact of a WhatsApp ``value``;
- items of ``entry[].standby[]`` (Messenger/Instagram: another app owns the thread) are
  the events they describe, marked ``standby`` (recorded, never answered);
- Instagram's App Dashboard "Test" (a messaging item as a ``changes`` value, with a
  string timestamp in seconds) is read as the message it is.

Speed: the common body decodes in one msgspec pass (:data:`_typed_envelope_decoder`);
only a body that fails it, or that needs a change value in another shape, is decoded
again item by item.
"""

from __future__ import annotations

from typing import cast

import msgspec

from mtdesk.channels.instagram import inbound as instagram
from mtdesk.channels.messenger.inbound import (
    MessagingItem,
    messaging_events,
    messaging_item_decoder,
)
from mtdesk.channels.whatsapp import inbound as whatsapp
from mtdesk.core.events import Event

OBJECT_CHANNEL = {"page": "messenger", "instagram": "instagram", whatsapp.OBJECT: "whatsapp"}


class UndecodableBody(Exception):
    """The body is not a Meta webhook envelope."""


_NO_VALUE = msgspec.Raw(b"null")


class _Change(msgspec.Struct, frozen=True, gc=False):
    field: str = ""
    value: msgspec.Raw = _NO_VALUE


class _Entry(msgspec.Struct, frozen=True, gc=False):
    id: str | int | None = None
    messaging: list[msgspec.Raw] | None = None
    changes: list[_Change] | None = None
    standby: list[msgspec.Raw] | None = None


class _Envelope(msgspec.Struct, frozen=True, gc=False):
    object: str
    entry: list[_Entry]


_envelope_decoder: msgspec.json.Decoder[_Envelope] = msgspec.json.Decoder(_Envelope)


class _TypedChange(msgspec.Struct, frozen=True, gc=False):
    field: str = ""
    # WhatsApp's value, decoded with the envelope (every WAValue field is optional, so
    # other fields' values decode too; their field name sends them to ``unknown``).
    value: whatsapp.WAValue | None = None


class _TypedEntry(msgspec.Struct, frozen=True, gc=False):
    id: str | int | None = None
    messaging: list[MessagingItem] | None = None
    changes: list[_TypedChange] | None = None
    standby: list[msgspec.Raw] | None = None


class _TypedEnvelope(msgspec.Struct, frozen=True, gc=False):
    object: str
    entry: list[_TypedEntry]


# The fast path: one decode for the envelope and its messaging items. Any item it cannot
# decode sends the body down the item-by-item path (one bad item must not lose the rest).
_typed_envelope_decoder: msgspec.json.Decoder[_TypedEnvelope] = msgspec.json.Decoder(_TypedEnvelope)


class ParsedWebhook(msgspec.Struct, kw_only=True):
    object: str
    events: list[Event]
    unknown: list[str]  # labels of what was tolerated but not understood (for metrics)
    malformed: int = 0  # items that could not be decoded (the body goes to dead letters)


class _NeedsRawItems(Exception):
    """The typed decode lacks what this body needs (a change value of another shape)."""


def parse_webhook(body: bytes) -> ParsedWebhook:
    """All events of one webhook body, in body order. Raises :class:`UndecodableBody`."""
    env: _Envelope | _TypedEnvelope
    try:
        env = _typed_envelope_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _parse(_raw_envelope(body))
    try:
        return _parse(env)
    except _NeedsRawItems:
        return _parse(_raw_envelope(body))


def _raw_envelope(body: bytes) -> _Envelope:
    try:
        return _envelope_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UndecodableBody(str(exc)) from exc


def _parse(env: _Envelope | _TypedEnvelope) -> ParsedWebhook:
    events: list[Event] = []
    unknown: list[str] = []
    malformed = 0
    obj = env.object
    channel = OBJECT_CHANNEL.get(obj)
    if channel is None:
        unknown.append("object")
        return ParsedWebhook(object=obj, events=events, unknown=unknown)
    for entry in env.entry:
        entry_id = "" if entry.id is None else str(entry.id)
        for raw in entry.messaging or ():
            if channel == "whatsapp":
                unknown.append("whatsapp:messaging")
                continue
            if type(raw) is MessagingItem:
                item = raw  # decoded with the envelope
            else:
                try:
                    # ``type(raw) is`` does not narrow the union for mypy: here it is Raw.
                    item = messaging_item_decoder.decode(cast(msgspec.Raw, raw))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    malformed += 1
                    continue
            if channel == "instagram":
                events.extend(instagram.instagram_events(entry_id, item, unknown))
            else:
                events.extend(messaging_events("messenger", entry_id, item, unknown))
        for change in entry.changes or ():
            if channel == "instagram" and change.field == "messages":
                # The App Dashboard's "Test" sends a messaging item as a change value.
                if type(change) is _TypedChange:
                    raise _NeedsRawItems
                raw_item = cast(_Change, change).value
                try:
                    item = messaging_item_decoder.decode(raw_item)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    malformed += 1
                    continue
                events.extend(instagram.instagram_events(entry_id, item, unknown))
                continue
            wa_field = change.field == "messages" or change.field in whatsapp.COEXISTENCE_FIELDS
            if channel != "whatsapp" or not wa_field:
                # Page feed, Instagram comments, WhatsApp template/account updates, …
                unknown.append(f"{channel}:field:{change.field}"[:64])
                continue
            if type(change) is _TypedChange:
                value = change.value  # decoded with the envelope
                if value is None:
                    unknown.append(f"{channel}:field:{change.field}"[:64])
                    continue
            else:
                raw_value = cast(_Change, change).value
                if raw_value is _NO_VALUE:
                    unknown.append(f"{channel}:field:{change.field}"[:64])
                    continue
                try:
                    value = whatsapp.value_decoder.decode(raw_value)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    # One bad message or status must not lose the others of the value.
                    decoded, bad = whatsapp.decode_value_items(raw_value)
                    malformed += bad
                    if decoded is None:
                        continue
                    value = decoded
            if change.field == "messages":
                events.extend(whatsapp.whatsapp_events(entry_id, value, unknown))
            else:
                events.extend(whatsapp.coexistence_events(change.field, entry_id, value, unknown))
        for raw in entry.standby or ():
            # Handover protocol: another app owns the thread; we record, never answer.
            if channel == "whatsapp":
                unknown.append("whatsapp:standby")
                continue
            try:
                item = messaging_item_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                malformed += 1
                continue
            watched = (instagram.instagram_events(entry_id, item, unknown)
                       if channel == "instagram"
                       else messaging_events("messenger", entry_id, item, unknown))
            events.extend(msgspec.structs.replace(ev, standby=True) for ev in watched)
    return ParsedWebhook(object=obj, events=events, unknown=unknown, malformed=malformed)
