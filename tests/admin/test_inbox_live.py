"""The live transcript over real HTTP: server-sent events pushed as messages are stored
and their marks move (no polling), for one conversation or all of a tenant's; a
reconnect with Last-Event-ID gets what it missed; another tenant's events never come."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from admin_harness import bearer, client_fixture, op  # noqa: F401
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from mtdesk.actors.replies.store import ReplyStore
from mtdesk.admin import live
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.inbox import Inbox
from mtdesk.core.redis import Redis

API = "/admin/api/v1"


async def _tenant(client: TestClient) -> tuple[str, str]:
    r = await client.post(f"{API}/tenants", json={"name": "Acme", "email": "o@acme.example"},
                          headers=op())
    body = await r.json()
    return body["id"], body["api_key"]


def _message(user: str, text: str, *, direction: str = "in", mid: str = "") -> StoredMessage:
    return StoredMessage(direction=direction, message_id=mid or f"mid.{user}.{text}",  # type: ignore[arg-type]
                         kind="message" if direction == "in" else "reply",
                         channel="messenger", account_id="9", user_id=user,
                         timestamp_ms=1_750_000_000_000, text=text,
                         status="received" if direction == "in" else "sent")


async def _events(response: ClientResponse) -> AsyncIterator[tuple[str, str, Any]]:
    """(event, id, data) of each server-sent event, as they come."""
    name, event_id, data = "message", "", ""
    while True:
        raw = await response.content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                yield name, event_id, json.loads(data)
            name, event_id, data = "message", "", ""
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]


async def _next(stream: AsyncIterator[tuple[str, str, Any]], kind: str
                ) -> tuple[str, str, Any]:
    async def find() -> tuple[str, str, Any]:
        async for event in stream:
            if event[0] == kind:
                return event
        raise AssertionError("stream ended")
    return await asyncio.wait_for(find(), 10)


async def test_a_transcript_gets_each_message_and_its_marks_as_they_happen(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    store = MessageStore(redis)
    await store.append(tid, _message("ann", "hi"), now_ms=1)
    conv = "messenger:9:ann"
    async with client.get(f"{API}/inbox/events?conversation={quote(conv, safe='')}",
                          headers=bearer(key)) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        stream = _events(r)
        await _next(stream, "ready")
        await store.append(tid, _message("bob", "not this one"), now_ms=2)
        await store.append(tid, _message("ann", "where is my parcel?"), now_ms=3)
        _, entry, data = await _next(stream, "message")
        assert data["message"]["text"] == "where is my parcel?" and entry
        _, _, card = await _next(stream, "conversation")
        assert card["last_text"] == "where is my parcel?" and card["unread"] == 2
        sent = await store.append(tid, _message("ann", "It ships today.", direction="out",
                                                mid="m_out1"), now_ms=4)
        _, _, data = await _next(stream, "message")
        assert data["message"]["text"] == "It ships today."
        await store.update_status(tid, "m_out1", "delivered", now_ms=5)
        await store.update_status(tid, "m_out1", "read", now_ms=6)
        marks = [(await _next(stream, "status"))[2] for _ in range(2)]
        assert marks == [{"conversation": conv, "entry": sent, "status": s}
                         for s in ("delivered", "read")]
        await Inbox(redis).close(tid, conv)
        _, _, card = await _next(stream, "conversation")
        assert card["status"] == "closed"


async def test_the_tenant_feed_carries_every_conversation_and_no_other_tenants(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    other, _ = await _tenant(client)
    store = MessageStore(redis)
    async with client.get(f"{API}/inbox/events", headers=bearer(key)) as r:
        stream = _events(r)
        await _next(stream, "ready")
        await store.append(other, _message("eve", "secret of another tenant"), now_ms=1)
        await store.append(tid, _message("cat", "meow"), now_ms=2)
        _, _, data = await _next(stream, "message")
        assert (data["conversation"], data["message"]["text"]) == ("messenger:9:cat", "meow")


async def test_a_message_stored_untold_as_the_feed_opened_still_comes_once(
    client: TestClient, redis: Redis
) -> None:
    """The shards tell the live channel only once they have seen a listener (within a
    poll): a message they stored untold just as the feed opened comes anyway, a couple
    of seconds in, with its card; one that was told is not sent a second time."""
    tid, key = await _tenant(client)
    now = int(time.time() * 1000)
    untold = ReplyStore(redis, ttl_s=3600, history_ttl_s=86400, watched=lambda _tid: False)
    store = MessageStore(redis)
    got: list[tuple[str, str, Any]] = []
    async with client.get(f"{API}/inbox/events", headers=bearer(key)) as r:
        stream = _events(r)
        await _next(stream, "ready")
        await untold.store_inbound(tid, "mid.dan.1", _message("dan", "anyone there?",
                                                             mid="mid.dan.1"), now_ms=now)
        await store.append(tid, _message("eve", "hello"), now_ms=now)

        async def collect() -> None:
            async for event in stream:
                got.append(event)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), live.CATCH_UP_S + 2)
    texts = [data["message"]["text"] for kind, _, data in got if kind == "message"]
    assert texts == ["hello", "anyone there?"]  # told at once; then by the catch-up
    cards = [data["conversation"] for kind, _, data in got if kind == "conversation"]
    assert "messenger:9:dan" in cards


async def test_a_reconnect_with_last_event_id_gets_what_it_missed(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    store = MessageStore(redis)
    seen = await store.append(tid, _message("ann", "one"), now_ms=1)
    await store.append(tid, _message("ann", "two"), now_ms=2)
    await store.append(tid, _message("ann", "three"), now_ms=3)
    path = f"{API}/inbox/events?conversation={quote('messenger:9:ann', safe='')}"
    async with client.get(path, headers={**bearer(key), "Last-Event-ID": seen}) as r:
        stream = _events(r)
        texts = [(await _next(stream, "message"))[2]["message"]["text"] for _ in range(2)]
        assert texts == ["two", "three"]


async def test_the_feed_needs_a_sign_in_and_a_known_conversation(
    client: TestClient, redis: Redis
) -> None:
    _tid, key = await _tenant(client)
    r = await client.get(f"{API}/inbox/events")
    assert r.status == 401
    r = await client.get(f"{API}/inbox/events?conversation=messenger:9:nobody",
                         headers=bearer(key))
    assert r.status == 404
