"""The inbox over real HTTP: conversations listed as people see them (name, last message,
status, unread), filtered and searched; a person's reply queued for the shard with the
bot silenced at once; Meta's windows enforced with a 409 that says why; assign, close,
reopen, hand back; bad input named."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import pytest
from admin_harness import bearer, client_fixture, make_app, op  # noqa: F401
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK
from mtdesk.core.clock import now_ms
from mtdesk.core.events import AgentReply, decode_event
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.inbox import Inbox
from mtdesk.core.redis import Redis
from mtdesk.core.users import Users
from mtdesk.fakes.graph import FakeGraphAPI

API = "/admin/api/v1"
HOUR_MS = 3_600_000


async def _tenant(client: TestClient, *, channels: bool = True) -> tuple[str, str]:
    r = await client.post(f"{API}/tenants", json={"name": "Acme", "email": "o@acme.example"},
                          headers=op())
    body = await r.json()
    tid, key = body["id"], body["api_key"]
    for channel, account in (("messenger", "9"), ("whatsapp", "77")) if channels else ():
        r = await client.post(f"{API}/channels", headers=bearer(key), json={
            "channel": channel, "account_id": account, "access_token": "EAAtoken"})
        assert r.status == 201, await r.text()
    return tid, key


def _now(client: TestClient) -> int:
    return now_ms(client.server.app[CLOCK])


async def _says(redis: Redis, tid: str, user: str, text: str, *, at_ms: int,
                channel: str = "messenger", account: str = "9") -> str:
    message = StoredMessage(direction="in", message_id=f"mid.{user}.{at_ms}", kind="message",
                            channel=channel, account_id=account, user_id=user,
                            timestamp_ms=at_ms, text=text)
    await MessageStore(redis).append(tid, message, now_ms=at_ms)
    return f"{channel}:{account}:{user}"


def _path(conv: str, action: str = "") -> str:
    return f"{API}/conversations/{quote(conv, safe='')}" + (f"/{action}" if action else "")


async def _queued(redis: Redis) -> list[AgentReply]:
    found = []
    for p in range(64):
        for _id, fields in await redis.xrange(keys.inbound(p)):
            event = decode_event(fields[b"e"])
            if isinstance(event, AgentReply):
                found.append(event)
    return found


async def test_the_list_shows_the_last_message_status_and_unread_and_filters(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    now = _now(client)
    ann = await _says(redis, tid, "ann", "Where is my parcel?", at_ms=now - 3000)
    await _says(redis, tid, "ann", "Hello??", at_ms=now - 2000)
    bob = await _says(redis, tid, "15550001", "Hola", at_ms=now - 1000, channel="whatsapp",
                      account="77")
    await Inbox(redis).set_profile(tid, bob, name="Bob Ruiz", picture=None, now_ms=now)
    r = await client.get(f"{API}/conversations", headers=bearer(key))
    rows = (await r.json())["conversations"]
    assert [(c["conversation"], c["channel"], c["last_text"], c["unread"], c["status"])
            for c in rows] == [(bob, "whatsapp", "Hola", 1, "bot"),
                               (ann, "messenger", "Hello??", 2, "bot")]
    assert rows[0]["name"] == "Bob Ruiz"
    r = await client.get(f"{API}/conversations?channel=messenger", headers=bearer(key))
    assert [c["conversation"] for c in (await r.json())["conversations"]] == [ann]
    r = await client.get(f"{API}/conversations?q=bob", headers=bearer(key))
    assert [c["conversation"] for c in (await r.json())["conversations"]] == [bob]
    r = await client.get(f"{API}/conversations?q=PARCEL", headers=bearer(key))
    assert [c["conversation"] for c in (await r.json())["conversations"]] == []  # not last
    r = await client.post(_path(ann, "close"), headers=bearer(key))
    assert r.status == 200 and (await r.json())["status"] == "closed"
    r = await client.get(f"{API}/conversations?status=closed", headers=bearer(key))
    assert [c["conversation"] for c in (await r.json())["conversations"]] == [ann]
    r = await client.post(_path(ann, "reopen"), headers=bearer(key))
    assert (await r.json())["status"] == "bot"
    await client.post(_path(ann, "close"), headers=bearer(key))
    await _says(redis, tid, "ann", "Still there?", at_ms=now - 500)  # a message reopens it
    r = await client.get(_path(ann), headers=bearer(key))
    assert (await r.json())["status"] == "bot"
    r = await client.post(_path(ann, "read"), headers=bearer(key))
    assert (await r.json())["unread"] == 0
    r = await client.get(f"{API}/conversations?status=asleep", headers=bearer(key))
    assert r.status == 400 and (await r.json())["error"]["field"] == "status"
    r = await client.get(f"{API}/conversations?channel=sms", headers=bearer(key))
    assert r.status == 400 and (await r.json())["error"]["field"] == "channel"


async def test_a_reply_is_accepted_queued_and_silences_the_bot_at_once(
    client: TestClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    tid, key = await _tenant(client)
    conv = await _says(redis, tid, "ann", "help", at_ms=_now(client) - HOUR_MS)
    caplog.set_level(logging.DEBUG)
    r = await client.post(_path(conv, "reply"), headers=bearer(key),
                          json={"text": "  Ann here, one moment.  "})
    assert r.status == 202, await r.text()
    body = await r.json()
    assert body["tag"] is None and body["conversation"] == conv
    assert await redis.exists(keys.paused(tid, conv))
    [queued] = await _queued(redis)
    assert (queued.event_id, queued.text, queued.author) == (body["id"], "Ann here, one moment.",
                                                             "api")
    assert "one moment" not in caplog.text
    r = await client.get(_path(conv), headers=bearer(key))
    assert (await r.json())["status"] == "human"
    r = await client.post(_path(conv, "handback"), headers=bearer(key))
    assert r.status == 200 and (await r.json())["status"] == "bot"
    assert not await redis.exists(keys.paused(tid, conv))


async def test_outside_the_window_messenger_goes_tagged_then_is_refused_after_a_week(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    now = _now(client)
    recent = await _says(redis, tid, "two_days", "hi", at_ms=now - 48 * HOUR_MS)
    r = await client.post(_path(recent, "reply"), headers=bearer(key), json={"text": "Sorry!"})
    assert r.status == 202 and (await r.json())["tag"] == "HUMAN_AGENT"
    old = await _says(redis, tid, "eight_days", "hi", at_ms=now - 8 * 24 * HOUR_MS)
    r = await client.post(_path(old, "reply"), headers=bearer(key), json={"text": "Sorry!"})
    assert r.status == 409
    error = (await r.json())["error"]
    assert error["field"] == "text" and "7-day human agent window" in error["message"]
    assert not await redis.exists(keys.paused(tid, old))  # nothing half-done


async def test_whatsapp_outside_the_window_needs_a_template(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    conv = await _says(redis, tid, "15550001", "hola", at_ms=_now(client) - 30 * HOUR_MS,
                       channel="whatsapp", account="77")
    r = await client.post(_path(conv, "reply"), headers=bearer(key), json={"text": "Hola!"})
    assert r.status == 409 and "only an approved template" in (await r.json())["error"]["message"]
    r = await client.post(_path(conv, "reply"), headers=bearer(key), json={"template": {
        "name": "order_update", "language": "es", "parameters": ["Bob"]}})
    assert r.status == 202
    [queued] = await _queued(redis)
    assert queued.template is not None and queued.template.parameters == ("Bob",)


@pytest.mark.parametrize(("body", "status", "field"), [
    ({}, 400, "text"),
    ({"text": "   "}, 400, "text"),
    ({"text": 5}, 422, "text"),
    ({"text": "x" * 8001}, 422, "text"),
    ({"text": "hi", "cc": "boss"}, 422, "cc"),
    ({"template": {"name": "Bad Name", "language": "en"}}, 422, "template.name"),
    ({"template": {"name": "ok", "language": "en"}}, 400, "template"),  # not WhatsApp
])
async def test_bad_replies_name_the_field_and_queue_nothing(
    client: TestClient, redis: Redis, body: dict[str, object], status: int, field: str
) -> None:
    tid, key = await _tenant(client)
    conv = await _says(redis, tid, "ann", "hi", at_ms=_now(client) - 1000)
    r = await client.post(_path(conv, "reply"), headers=bearer(key), json=body)
    assert r.status == status, await r.text()
    assert (await r.json())["error"]["field"] == field
    assert await _queued(redis) == [] and not await redis.exists(keys.paused(tid, conv))


async def test_unknown_conversations_and_other_tenants_are_not_found(
    client: TestClient, redis: Redis
) -> None:
    tid, key = await _tenant(client)
    _other, other_key = await _tenant(client, channels=False)
    conv = await _says(redis, tid, "ann", "hi", at_ms=_now(client) - 1000)
    for path in (_path(conv, "reply"), _path("messenger:9:nobody", "reply")):
        r = await client.post(path, headers=bearer(other_key if path == _path(conv, "reply")
                                                    else key), json={"text": "hi"})
        assert r.status == 404
    assert await _queued(redis) == []


async def test_assigning_takes_only_a_team_member(client: TestClient, redis: Redis) -> None:
    tid, key = await _tenant(client)
    conv = await _says(redis, tid, "ann", "hi", at_ms=_now(client) - 1000)
    member = await Users(redis, client.server.app[CLOCK]).add(
        tid, "Ann Agent", "ann@acme.example", "agent", None)
    r = await client.post(_path(conv, "assign"), headers=bearer(key), json={"user_id": member.id})
    assert r.status == 200 and (await r.json())["assignee"] == member.id
    r = await client.post(_path(conv, "assign"), headers=bearer(key), json={"user_id": "u_x"})
    assert r.status == 400 and (await r.json())["error"]["field"] == "user_id"
    r = await client.post(_path(conv, "assign"), headers=bearer(key), json={"user_id": None})
    assert (await r.json())["assignee"] is None


async def test_templates_list_the_numbers_approved_ones_from_meta(redis: Redis) -> None:
    async with FakeGraphAPI() as graph:
        graph.add_template("WABA1", "order_update", "en_US", "Hi {{1}}, order {{2}} ships.")
        graph.add_template("WABA1", "promo", "en_US", "Sale!", status="REJECTED")
        app = make_app(redis, extra={"MTDESK_GRAPH_API_BASE": graph.base_url})
        async with TestClient(TestServer(app)) as client:
            tid, key = await _tenant(client)
            conv = await _says(redis, tid, "15550001", "hola", at_ms=_now(client),
                               channel="whatsapp", account="77")
            r = await client.get(_path(conv, "templates"), headers=bearer(key))
            assert r.status == 409 and (await r.json())["error"]["field"] == "conversation"
            # What connecting the number through Meta's signup records: its account.
            [cid] = [c.decode() for c in await redis.smembers(keys.channels(tid))
                     if await redis.hget(keys.channel(tid, c.decode()), "channel") == b"whatsapp"]
            await redis.hset(keys.channel(tid, cid), "subscription_id", "WABA1")
            r = await client.get(_path(conv, "templates"), headers=bearer(key))
            assert r.status == 200, await r.text()
            assert (await r.json())["templates"] == [{
                "name": "order_update", "language": "en_US", "category": "UTILITY",
                "body": "Hi {{1}}, order {{2}} ships.", "parameters": 2}]
            messenger = await _says(redis, tid, "ann", "hi", at_ms=_now(client))
            r = await client.get(_path(messenger, "templates"), headers=bearer(key))
            assert r.status == 400


async def test_a_reply_counts_in_the_days_analytics_once_with_its_handoff(
    client: TestClient, redis: Redis
) -> None:
    clock = client.server.app[CLOCK]
    clock.advance(time.time() - clock.now())  # today: analytics keep a year, from the day
    tid, key = await _tenant(client)
    conv = await _says(redis, tid, "ann", "help", at_ms=_now(client) - HOUR_MS)
    for text in ("Ann here.", "One more thing."):
        r = await client.post(_path(conv, "reply"), headers=bearer(key), json={"text": text})
        assert r.status == 202
    today = time.strftime("%Y-%m-%d", time.gmtime(clock.now()))
    r = await client.get(f"{API}/analytics?from={today}&to={today}", headers=bearer(key))
    totals = (await r.json())["totals"]
    assert (totals["human_replies"], totals["handoffs"]) == (2, 1)
    assert totals["conversations_with_human"] == 1
