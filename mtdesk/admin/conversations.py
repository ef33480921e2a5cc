"""Conversation routes: a tenant's conversations, newest first, and their messages.

``GET /admin/api/v1/conversations?limit=&before=&status=&channel=&q=`` pages by last
activity: ``before`` is the ``last_activity_ms`` of the last row already seen (answers
carry it as ``next``). Each row is the conversation's inbox card
(:class:`mtdesk.core.inbox.Card`: the person's name and picture, channel, last message,
status ``bot``/``human``/``closed``, unread count, assignee); ``status`` and ``channel``
filter, ``q`` searches the name, the person's id and the last message.
``GET /admin/api/v1/conversations/{key}`` is one card.
``GET /admin/api/v1/conversations/{key}/messages?limit=&after=`` gives messages oldest
first; ``after`` is the ``entry`` of the last message already seen (``next``). The key is
``channel:account_id:user_id``, URL-encoded.

``GET /admin/api/v1/conversations/{key}/media/{ref}`` gives the bytes of a file the
customer sent (``ref`` from a ``media`` message's ``media[].ref``): pictures
(JPEG, PNG, GIF, WebP) inline with their type, anything else as an attachment
download; never sniffed or run by the browser (``nosniff``, a sandboxing CSP). 404 once
the file is gone (erased, past retention, unsent).
"""

from __future__ import annotations

import re

from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import tenant_scope
from mtdesk.core import keys
from mtdesk.core.appkeys import REDIS, SETTINGS, cipher_of
from mtdesk.core.errors import NotFound, ValidationError
from mtdesk.core.events import CHANNELS
from mtdesk.core.history import MessageStore
from mtdesk.core.http import json_response
from mtdesk.core.inbox import STATUSES, Inbox
from mtdesk.core.media import MediaStore

# Types a browser may show inline from our origin (never HTML, SVG or scripts).
_INLINE = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_ENTRY = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # fullmatch: "$" would take "1-2\n"
_DIGITS = re.compile(r"[0-9]{1,20}")


def _limit(request: web.Request, default: int = 50, most: int = 200) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw):
        raise ValidationError("limit", "must be a whole number")
    value = int(raw)
    if not 1 <= value <= most:
        raise ValidationError("limit", f"must be between 1 and {most}")
    return value


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise ValidationError(name, f"must be one of {', '.join(allowed)}")
    return value


async def list_conversations(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    limit = _limit(request)
    raw_before = request.query.get("before")
    before: int | None = None
    if raw_before is not None:
        if not _DIGITS.fullmatch(raw_before):  # str.isdigit() also takes "١٢" or "²"
            raise ValidationError("before", "must be a last_activity_ms from a previous page")
        before = int(raw_before)
    status = _choice(request, "status", STATUSES)
    channel = _choice(request, "channel", CHANNELS)
    query = request.query.get("q", "").strip() or None
    if query is not None and len(query) > 200:
        raise ValidationError("q", "must be at most 200 characters")
    cards, nxt = await Inbox(request.config_dict[REDIS], cipher_of(request.config_dict)).page(
        tid, limit=limit, before=before, status=status, channel=channel, query=query)
    return json_response({"conversations": cards, "next": nxt})


async def get_conversation(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    conv = request.match_info["key"]
    card = await Inbox(request.config_dict[REDIS], cipher_of(request.config_dict)).card(tid, conv)
    if card is None:
        raise NotFound(f"conversation {conv!r} not found")
    return json_response(card)


async def list_messages(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    conv = request.match_info["key"]
    limit = _limit(request)
    after = request.query.get("after")
    if after is not None and not _ENTRY.fullmatch(after):
        raise ValidationError("after", "must be the entry of a message from a previous page")
    redis = request.config_dict[REDIS]
    if await redis.zscore(keys.conversations(tid), conv) is None:
        raise NotFound(f"conversation {conv!r} not found")
    store = MessageStore(redis, retention_days=request.config_dict[SETTINGS].retention_days,
                         cipher=cipher_of(request.config_dict))
    messages = await store.read(
        tid, conv, start="-" if after is None else f"({after}", count=limit
    )
    nxt = messages[-1].entry if len(messages) == limit else None
    return json_response({"conversation": conv, "messages": messages, "next": nxt})


async def get_media(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    conv = request.match_info["key"]
    ref = request.match_info["ref"]
    if not _ENTRY.fullmatch(ref):
        raise ValidationError("ref", "must be the ref of a file from a media message")
    redis = request.config_dict[REDIS]
    store = MediaStore(redis, cipher=cipher_of(request.config_dict))
    found = await store.get(tid, conv, ref)
    if found is None:
        raise NotFound(f"file {ref!r} not found in conversation {conv!r}")
    mime = found.mime_type.split(";")[0].strip().lower()
    inline = mime in _INLINE
    return web.Response(
        body=found.content, content_type=mime if inline else "application/octet-stream",
        headers={
            "Content-Disposition": "inline" if inline else
            f'attachment; filename="media-{ref}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
            "X-Media-Type": mime[:100],
        })


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get(f"{API_BASE}/conversations", list_conversations)
    r.add_get(f"{API_BASE}/conversations/{{key}}", get_conversation)
    r.add_get(f"{API_BASE}/conversations/{{key}}/messages", list_messages)
    r.add_get(f"{API_BASE}/conversations/{{key}}/media/{{ref}}", get_media)
