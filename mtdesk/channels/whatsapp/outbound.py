"""WhatsApp outbound: the Cloud API text body, its address, and its limit.

Callers rely on :data:`MAX_CHARS` (4,096 characters), :func:`whatsapp_address` (the
phone number when known, else the business-scoped user id) and :func:`render_body`
(the first part quotes the message answered, via ``context``; every part carries our
mark ``mtdesk:<reply_key>#<part>`` as ``biz_opaque_callback_data``, which Meta returns
in the message's ``statuses`` webhooks, at most 512 characters), and
:func:`render_signals` (the message marked read with a typing indicator: WhatsApp shows
typing only together with a read mark, so with read receipts off it shows nothing).
"""

from __future__ import annotations

from typing import Final

import msgspec

from mtdesk.channels.messenger.outbound import metadata_for
from mtdesk.channels.suggestions import (
    BUTTON_TITLE,
    INTERACTIVE_BODY,
    MAX_BUTTONS,
    MAX_ROWS,
    ROW_DESCRIPTION,
    ROW_TITLE,
    payload_for,
    title_for,
)
from mtdesk.core.ports import OutboundMessage, SourceAttachment

MAX_CHARS: Final = 4096
CALLBACK_DATA_MAX_CHARS: Final = 512  # biz_opaque_callback_data


def callback_data_for(message: OutboundMessage, part: int) -> str | None:
    """Our mark on part ``part`` of ``message`` (None for a message of no reply)."""
    if not message.reply_key:
        return None
    return metadata_for(message.reply_key, part, max_chars=CALLBACK_DATA_MAX_CHARS)


class _WhatsAppText(msgspec.Struct, frozen=True):
    body: str
    preview_url: bool = False


class _Context(msgspec.Struct, frozen=True):
    message_id: str


class _Language(msgspec.Struct, frozen=True):
    code: str


class _Parameter(msgspec.Struct, frozen=True):
    type: str  # "text"
    text: str


class _Component(msgspec.Struct, frozen=True):
    type: str  # "body"
    parameters: tuple[_Parameter, ...]


class _Template(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    language: _Language
    components: tuple[_Component, ...] = ()


class WhatsAppSendBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """WhatsApp ``POST /{phone_number_id}/messages`` (text).

    The constant fields have no default so ``omit_defaults`` keeps them on the wire.
    """

    messaging_product: str  # "whatsapp"
    recipient_type: str  # "individual"
    to: str | None = None
    recipient: str | None = None  # the business-scoped user id, when there is no wa_id
    type: str  # "text" | "template"
    text: _WhatsAppText | None = None
    template: _Template | None = None
    context: _Context | None = None
    biz_opaque_callback_data: str | None = None


class _Reply(msgspec.Struct, frozen=True):
    id: str  # ≤ 256 characters
    title: str  # ≤ 20 characters


class _Button(msgspec.Struct, frozen=True):
    type: str  # "reply"
    reply: _Reply


class _Row(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str  # ≤ 200 characters
    title: str  # ≤ 24 characters
    description: str | None = None  # ≤ 72 characters


class _Section(msgspec.Struct, frozen=True):
    title: str
    rows: tuple[_Row, ...]


class _Action(msgspec.Struct, frozen=True, omit_defaults=True):
    buttons: tuple[_Button, ...] = ()
    button: str | None = None  # a list's button label (≤ 20 characters)
    sections: tuple[_Section, ...] = ()


class _Body(msgspec.Struct, frozen=True):
    text: str  # ≤ 1,024 characters


class _Interactive(msgspec.Struct, frozen=True):
    type: str  # "button" | "list"
    body: _Body
    action: _Action


class WhatsAppInteractiveBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """WhatsApp ``POST /{phone_number_id}/messages`` (interactive reply buttons or list)."""

    messaging_product: str  # "whatsapp"
    recipient_type: str  # "individual"
    to: str | None = None
    recipient: str | None = None
    type: str  # "interactive"
    interactive: _Interactive
    context: _Context | None = None
    biz_opaque_callback_data: str | None = None


LIST_BUTTON = "Options"
LIST_SECTION = "Related questions"


def interactive_for(text: str, suggestions: tuple[str, ...]) -> _Interactive | None:
    """Reply buttons when at most 3 suggestions each fit a 20-character title, else a
    list of at most 10 rows (a longer suggestion keeps its words in the row's
    description); None when ``text`` is too long for an interactive body."""
    if not suggestions or len(text) > INTERACTIVE_BODY:
        return None
    if len(suggestions) <= MAX_BUTTONS and all(len(s) <= BUTTON_TITLE for s in suggestions):
        buttons = tuple(_Button("reply", _Reply(payload_for(s, 256), s)) for s in suggestions)
        return _Interactive("button", _Body(text), _Action(buttons=buttons))
    rows = tuple(
        _Row(payload_for(s, 200), title_for(s, ROW_TITLE),
             None if len(s) <= ROW_TITLE else title_for(s, ROW_DESCRIPTION))
        for s in suggestions[:MAX_ROWS])
    return _Interactive("list", _Body(text), _Action(button=LIST_BUTTON,
                                                     sections=(_Section(LIST_SECTION, rows),)))


class _Link(msgspec.Struct, frozen=True, omit_defaults=True):
    link: str
    filename: str | None = None


class WhatsAppMediaBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """WhatsApp ``POST /{phone_number_id}/messages`` of a picture or document by link."""

    messaging_product: str  # "whatsapp"
    recipient_type: str  # "individual"
    to: str | None = None
    recipient: str | None = None
    type: str  # "image" | "document"
    image: _Link | None = None
    document: _Link | None = None


def render_attachment(message: OutboundMessage, attachment: SourceAttachment, part: int) -> bytes:
    """A picture or document sent by its public link (the Cloud API fetches it)."""
    to, recipient = whatsapp_address(message)
    image = attachment.type == "image"
    link = _Link(attachment.url, None if image else attachment.filename)
    return _encoder.encode(WhatsAppMediaBody(
        messaging_product="whatsapp", recipient_type="individual", to=to, recipient=recipient,
        type="image" if image else "document", image=link if image else None,
        document=None if image else link))


class _Typing(msgspec.Struct, frozen=True):
    type: str  # "text"


class WhatsAppReadBody(msgspec.Struct, frozen=True, kw_only=True):
    """WhatsApp ``POST /{phone_number_id}/messages``: a message read, typing shown."""

    messaging_product: str  # "whatsapp"
    status: str  # "read"
    message_id: str
    typing_indicator: _Typing


_encoder = msgspec.json.Encoder()


def fit(text: str) -> int:
    """How many leading characters of ``text`` fit one WhatsApp message."""
    return min(len(text), MAX_CHARS)


def whatsapp_address(message: OutboundMessage) -> tuple[str | None, str | None]:
    """(``to``, ``recipient``): the phone-number id when known, else the business-scoped id."""
    if message.wa_id:
        return message.wa_id, None
    if message.user_id.isdigit():  # no business-scoped id: user_id is the wa_id itself
        return message.user_id, None
    return None, message.user_id


def render_body(message: OutboundMessage, text: str, part: int,
                suggestions: tuple[str, ...] = ()) -> bytes:
    """The JSON body for part ``part`` (text ``text``) of ``message``; with
    ``suggestions``, an interactive message (:func:`interactive_for`) when the text fits
    one, else plain text."""
    to, recipient = whatsapp_address(message)
    if message.template is not None:  # one message: a template is never split
        t = message.template
        components = ((_Component("body", tuple(_Parameter("text", p) for p in t.parameters)),)
                      if t.parameters else ())
        return _encoder.encode(WhatsAppSendBody(
            messaging_product="whatsapp", recipient_type="individual", to=to,
            recipient=recipient, type="template",
            template=_Template(t.name, _Language(t.language), components),
            biz_opaque_callback_data=callback_data_for(message, part)))
    context = _Context(message.reply_to) if message.reply_to and part == 0 else None
    interactive = interactive_for(text, suggestions)
    if interactive is not None:
        return _encoder.encode(WhatsAppInteractiveBody(
            messaging_product="whatsapp", recipient_type="individual", to=to,
            recipient=recipient, type="interactive", interactive=interactive,
            context=context, biz_opaque_callback_data=callback_data_for(message, part)))
    return _encoder.encode(
        WhatsAppSendBody(
            messaging_product="whatsapp", recipient_type="individual", to=to,
            recipient=recipient, type="text", text=_WhatsAppText(text), context=context,
            biz_opaque_callback_data=callback_data_for(message, part),
        )
    )


def render_signals(user_id: str, message_id: str, *, read: bool, first: bool) -> list[bytes]:
    """``message_id`` (and every earlier message) marked read, with the typing indicator
    (Meta dismisses it after 25 s or when we answer); nothing when ``read`` is off.
    Sent again to refresh the indicator (``first`` changes nothing here)."""
    if not read:
        return []
    return [_encoder.encode(WhatsAppReadBody(
        messaging_product="whatsapp", status="read", message_id=message_id,
        typing_indicator=_Typing("text")))]
