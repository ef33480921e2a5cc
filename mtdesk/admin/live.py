"""The inbox's live feed: server-sent events of a tenant's conversations, no polling.

``GET /admin/api/v1/inbox/events[?conversation=KEY]`` (session cookie or bearer; the
browser's ``EventSource`` sends the cookie) answers ``text/event-stream`` and pushes:

- ``message`` ``{"conversation", "message"}`` — a message stored (the customer's, the
  bot's, a person's), as ``GET …/messages`` shows it; the event's ``id`` is its entry;
- ``status`` ``{"conversation", "entry", "status"}`` — a sent message was delivered or
  read (or failed);
- ``conversation`` ``{card}`` — a conversation's card changed (a message, a person's
  reply queued, hand back, assign, close, reopen, read).

With ``conversation`` only that conversation's events come (its transcript); without,
every conversation's (the list). The events come from what the shards and the admin
already write: the history append, the status update and the inbox's actions each
publish one line on the tenant's pub/sub channel (``keys.live``), which this handler
subscribes to; nothing more is stored. A browser reconnecting with ``Last-Event-ID`` to a
conversation's feed gets the messages stored after that entry first (from the history,
at most 200). A comment line every 15 s keeps proxies from closing an idle stream.

The shards tell the live channel only while someone listens (they ask Redis every half
second who does: mtdesk/actors/watchers.py), so a feed just opened can miss what was
stored before they noticed it. It makes that good itself: :data:`CATCH_UP_S` in, it
reads once what was stored from :data:`CATCH_UP_BEFORE_MS` before it subscribed (the
conversations changed since, at most :data:`CATCH_UP_MOST`: their messages and cards) and
sends what it has not sent yet; a message is never sent twice by one feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any, Final

import msgspec
from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import tenant_scope
from mtdesk.core import keys
from mtdesk.core.appkeys import REDIS, SETTINGS, cipher_of
from mtdesk.core.errors import NotFound
from mtdesk.core.history import MessageStore
from mtdesk.core.inbox import Inbox

KEEPALIVE_S: Final = 15.0
REPLAY_MOST: Final = 200
CATCH_UP_S: Final = 2.5  # the shards see a new listener within 0.5 s (1.5 s at worst)
CATCH_UP_BEFORE_MS: Final = 2000
CATCH_UP_MOST: Final = 100
# After the catch-up, the live events of what it read may still be on their way: a
# message stored before it is checked against what was sent for this much longer.
_DEDUPE_AFTER_S: Final = 10.0
_ENTRY = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_encoder = msgspec.json.Encoder()


def sse(event: str, data: Any, *, event_id: str | None = None) -> bytes:
    """One server-sent event (the JSON is one line: it never holds a raw newline)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\n".encode() + b"data: " + _encoder.encode(data) + b"\n\n"


class _Feed:
    """Turns the live channel's lines into events for one tenant (and conversation)."""

    def __init__(self, request: web.Request, tenant_id: str, conversation: str | None) -> None:
        redis = request.config_dict[REDIS]
        self.tenant_id = tenant_id
        self.conversation = conversation
        cipher = cipher_of(request.config_dict)
        self.inbox = Inbox(redis, cipher)
        self.store = MessageStore(redis, cipher=cipher,
                                  retention_days=request.config_dict[SETTINGS].retention_days)
        self.redis = redis
        self._sent: set[tuple[str, str]] = set()  # (conversation, entry) sent, for a while
        self._checked_upto_ms: int | None = None  # None: still before the catch-up

    def _fresh(self, conv: str, entry: str) -> bool:
        """False when this feed sent the message already (around its catch-up)."""
        if self._checked_upto_ms is not None:
            head = entry.partition("-")[0]
            if not head.isdigit() or int(head) > self._checked_upto_ms:
                return True  # stored after the catch-up read: it cannot have sent it
        if (conv, entry) in self._sent:
            return False
        self._sent.add((conv, entry))
        return True

    async def catch_up(self, since_ms: int) -> list[bytes]:
        """What was stored from ``since_ms`` on and not sent by this feed yet: the
        messages and cards of the conversations changed since then."""
        self._checked_upto_ms = int(time.time() * 1000)
        index = keys.conversations(self.tenant_id)
        if self.conversation is not None:
            score = await self.redis.zscore(index, self.conversation)
            convs = [self.conversation] if score is not None and score >= since_ms else []
        else:
            convs = [c.decode() if isinstance(c, bytes) else str(c)
                     for c in await self.redis.zrangebyscore(index, since_ms, "+inf", start=0,
                                                             num=CATCH_UP_MOST)]
        out: list[bytes] = []
        for conv in convs:
            out += await self.messages(conv, f"{since_ms}-0", count=REPLAY_MOST)
            card = await self.inbox.card(self.tenant_id, conv)
            if card is not None and self.conversation is None:
                out.append(sse("conversation", card))
        return out

    def forget_sent(self) -> None:
        """The catch-up's live events have come: nothing more to check."""
        self._sent.clear()
        self._checked_upto_ms = 0

    async def events(self, line: str) -> list[bytes]:
        kind, _, rest = line.partition(" ")
        parts = rest.split(" ")
        conv = parts[0] if parts else ""
        if not conv or (self.conversation is not None and conv != self.conversation):
            return []
        out: list[bytes] = []
        if kind == "m" and len(parts) >= 2:
            out += await self.messages(conv, parts[1], parts[1])
        elif kind == "s" and len(parts) >= 3:
            return [sse("status", {"conversation": conv, "entry": parts[1],
                                   "status": parts[2]})]
        elif kind != "c":
            return []
        card = await self.inbox.card(self.tenant_id, conv)
        if card is not None:
            out.append(sse("conversation", card))
        return out

    async def messages(self, conv: str, start: str, end: str = "+",
                       count: int | None = None) -> list[bytes]:
        found = await self.store.read(self.tenant_id, conv, start=start, end=end, count=count)
        return [sse("message", {"conversation": conv, "message": m}, event_id=m.entry)
                for m in found if m.entry is None or self._fresh(conv, m.entry)]


async def events(request: web.Request) -> web.StreamResponse:
    tid = tenant_scope(request)
    conv = request.query.get("conversation") or None
    redis = request.config_dict[REDIS]
    if conv is not None and await redis.zscore(keys.conversations(tid), conv) is None:
        raise NotFound(f"conversation {conv!r} not found")
    feed = _Feed(request, tid, conv)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.live(tid))
    since_ms = int(time.time() * 1000) - CATCH_UP_BEFORE_MS
    loop = asyncio.get_running_loop()
    catch_up_at: float | None = loop.time() + CATCH_UP_S
    forget_at: float | None = None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-store",
        "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n" + sse("ready", {"conversation": conv}))
        last = request.headers.get("Last-Event-ID", "")
        if conv is not None and _ENTRY.fullmatch(last):
            for chunk in await feed.messages(conv, f"({last}", count=REPLAY_MOST):
                await response.write(chunk)
        keepalive_at = loop.time() + KEEPALIVE_S
        while True:
            now = loop.time()
            if catch_up_at is not None and now >= catch_up_at:
                catch_up_at, forget_at = None, now + _DEDUPE_AFTER_S
                for chunk in await feed.catch_up(since_ms):
                    await response.write(chunk)
            elif forget_at is not None and now >= forget_at:
                forget_at = None
                feed.forget_sent()
            if now >= keepalive_at:
                await response.write(b": keepalive\n\n")
                keepalive_at = now + KEEPALIVE_S
            due = min(t for t in (catch_up_at, forget_at, keepalive_at) if t is not None)
            message = await pubsub.get_message(timeout=max(0.01, due - loop.time()))
            if message is None:
                continue
            data = message.get("data")
            if not isinstance(data, bytes):
                continue
            for chunk in await feed.events(data.decode("utf-8", "replace")):
                await response.write(chunk)
    except ConnectionResetError:
        pass  # the browser went away: nothing more to answer
    finally:
        with contextlib.suppress(Exception):
            await pubsub.unsubscribe()
        with contextlib.suppress(Exception):
            await pubsub.aclose()
    return response


def add_routes(admin: web.Application) -> None:
    admin_routes(admin).add_get(f"{API_BASE}/inbox/events", events)
