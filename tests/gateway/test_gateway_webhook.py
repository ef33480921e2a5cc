"""POST /webhooks/meta over real HTTP into the real Redis: what Meta and the shards see."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer
from gateway_support import (
    FIXTURE_ACCOUNTS,
    OLD_SECRET,
    PAGE_ID,
    VERIFY_TOKEN,
    make_settings,
    route,
    signed,
    stream_entries,
)

from mtdesk.cli.compose import build_app
from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.events import Message, decode_event, partition_of
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings


async def provision_all(redis: Redis) -> None:
    for channel, account in FIXTURE_ACCOUNTS:
        await route(redis, channel, account, tenant="tenant-1")


async def test_every_fixture_is_acknowledged_and_queued_for_its_tenant(
    client: TestClient, redis: Redis, settings: Settings, fixture_bodies: dict[str, bytes]
) -> None:
    await provision_all(redis)
    for name, body in fixture_bodies.items():
        resp = await client.post("/webhooks/meta", data=body, headers=signed(body))
        assert resp.status == 200, name
    entries = await stream_entries(redis, settings.partitions)
    assert len(entries) == 11  # ten fixtures, the delivery/read one holds two events
    for fields in entries:
        assert fields[b"t"] == b"tenant-1" and fields[b"r"].isdigit() and b"s" not in fields
        ev = decode_event(fields[b"e"])
        # The shards find a conversation's events in its partition.
        p = partition_of(ev.conversation, settings.partitions)
        ids = [decode_event(f[b"e"]).event_id for _, f in await redis.xrange(keys.inbound(p))]
        assert ev.event_id in ids


async def test_events_of_one_conversation_keep_body_order(client: TestClient, redis: Redis, settings: Settings) -> None:
    await provision_all(redis)
    items = [
        {"sender": {"id": "u1"}, "recipient": {"id": PAGE_ID}, "timestamp": 1751142800000 + i,
         "message": {"mid": f"m_{i}", "text": str(i)}}
        for i in range(20)
    ]
    body = json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": items}]}).encode()
    assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    entries = await stream_entries(redis, settings.partitions)
    assert [decode_event(f[b"e"]).event_id for f in entries] == [f"m_{i}" for i in range(20)]


async def test_redelivery_is_acknowledged_but_not_queued_twice(
    client: TestClient, redis: Redis, settings: Settings, fixture_bodies: dict[str, bytes]
) -> None:
    await provision_all(redis)
    body = fixture_bodies["whatsapp_text"]
    for _ in range(3):
        assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    assert len(await stream_entries(redis, settings.partitions)) == 1
    [entry] = await stream_entries(redis, settings.partitions)
    event = decode_event(entry[b"e"])
    assert event.event_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    part = partition_of(event.conversation, settings.partitions)
    ttl = await redis.ttl(keys.seen(event.event_id, part))
    assert ttl >= 7 * 24 * 3600
    metrics = await (await client.get("/metrics")).text()
    assert 'mtdesk_gateway_events_total{channel="whatsapp",kind="message",outcome="duplicate"} 2.0' in metrics


async def test_fifty_concurrent_deliveries_leave_one_entry_per_event(
    client: TestClient, redis: Redis, settings: Settings, fixture_bodies: dict[str, bytes]
) -> None:
    await provision_all(redis)
    entries = []
    for name in ("messenger_delivery_read", "whatsapp_text", "whatsapp_status_failed"):
        entries.extend(json.loads(fixture_bodies[name])["entry"])
    # One body with entries of two objects is not what Meta sends; post each object's batch.
    page = json.dumps({"object": "page", "entry": entries[:1]}).encode()
    wa = json.dumps({"object": "whatsapp_business_account", "entry": entries[1:]}).encode()
    posts = [client.post("/webhooks/meta", data=b, headers=signed(b)) for b in (page, wa) for _ in range(50)]
    responses = await asyncio.gather(*posts)
    assert [r.status for r in responses] == [200] * 100
    ids = sorted(decode_event(f[b"e"]).event_id for f in await stream_entries(redis, settings.partitions))
    assert len(ids) == 4 and len(set(ids)) == 4


async def test_unknown_account_is_acknowledged_counted_and_not_stored(
    client: TestClient, redis: Redis, settings: Settings, fixture_bodies: dict[str, bytes]
) -> None:
    body = fixture_bodies["messenger_text"]
    assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    assert await stream_entries(redis, settings.partitions) == []
    metrics = await (await client.get("/metrics")).text()
    assert 'mtdesk_gateway_events_total{channel="messenger",kind="message",outcome="unknown"} 1.0' in metrics
    # Provisioned later, the redelivery is queued: unknown events leave no dedup marker.
    await provision_all(redis)
    assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    assert len(await stream_entries(redis, settings.partitions)) == 1


async def test_old_events_are_stored_marked_stale(redis: Redis, redis_url: str, fixture_bodies: dict[str, bytes]) -> None:
    await provision_all(redis)
    body = fixture_bodies["messenger_text"]  # sent at 1717171716.990
    settings = make_settings(redis_url, max_event_age_s=3600)
    for now, stale in ((1717171716.990 + 3599, False), (1717171716.990 + 3601, True)):
        await redis.flushdb()
        await provision_all(redis)
        app = build_app(settings, redis=redis, clock=FakeClock(now))
        async with TestClient(TestServer(app)) as c:
            assert (await c.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
        (fields,) = await stream_entries(redis, settings.partitions)
        assert (fields.get(b"s") == b"1") is stale
        assert isinstance(decode_event(fields[b"e"]), Message)


async def test_bad_signature_is_403_and_counted(client: TestClient, redis: Redis, settings: Settings, fixture_bodies: dict[str, bytes]) -> None:
    await provision_all(redis)
    body = fixture_bodies["messenger_text"]
    for headers in ({}, {"X-Hub-Signature-256": "sha1=abc"}, signed(body, "wrong"), signed(body + b" ")):
        resp = await client.post("/webhooks/meta", data=body, headers=headers)
        assert resp.status == 403
        assert (await resp.json())["error"]["field"] == "X-Hub-Signature-256"
    assert await stream_entries(redis, settings.partitions) == []
    assert "mtdesk_gateway_signature_failures_total 4.0" in await (await client.get("/metrics")).text()


async def test_old_secret_still_accepted_during_rotation(client: TestClient, redis: Redis, fixture_bodies: dict[str, bytes]) -> None:
    body = fixture_bodies["instagram_text"]
    assert (await client.post("/webhooks/meta", data=body, headers=signed(body, OLD_SECRET))).status == 200


async def test_body_over_the_limit_is_413(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, max_body_bytes=2048)
    async with TestClient(TestServer(build_app(settings, redis=redis))) as c:
        big = b'{"object":"page","entry":[]}' + b" " * 4096
        assert (await c.post("/webhooks/meta", data=big, headers=signed(big))).status == 413

        async def chunks():  # no Content-Length: chunked transfer
            for _ in range(10):
                yield b" " * 1024

        assert (await c.post("/webhooks/meta", data=chunks(), headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})).status == 413
        small = b'{"object":"page","entry":[]}'
        assert (await c.post("/webhooks/meta", data=small, headers=signed(small))).status == 200


async def test_signed_undecodable_body_is_dead_lettered(client: TestClient, redis: Redis) -> None:
    body = b'{"object":"page","entry":"not a list"}'
    assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    (entry,) = await redis.xrange(keys.DEAD_LETTERS)
    assert entry[1][b"b"] == body
    assert 'mtdesk_gateway_dead_letters_total{reason="undecodable"} 1.0' in await (await client.get("/metrics")).text()


async def test_unknown_object_is_acknowledged_and_counted(client: TestClient) -> None:
    body = b'{"object":"permissions","entry":[{"id":"1","time":2,"changes":[{"field":"ads_management","value":{}}]}]}'
    assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    assert 'mtdesk_gateway_unknown_total{what="object"} 1.0' in await (await client.get("/metrics")).text()


async def test_handshake(client: TestClient) -> None:
    ok = await client.get("/webhooks/meta", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
    assert ok.status == 200 and await ok.text() == "1158201444" and ok.content_type == "text/plain"
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "v\u00e9rify", "hub.challenge": "1"},
        {},
    ):
        assert (await client.get("/webhooks/meta", params=params)).status == 403


async def test_health_and_readiness(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"] == {"redis": "ok"}


async def test_metrics_scrape_shows_every_answered_post_in_the_ack_histogram(
    client: TestClient, redis: Redis, fixture_bodies: dict[str, bytes]
) -> None:
    # The hot path counts in plain ints; a scrape must show all of them, twice in a row.
    await provision_all(redis)
    body = fixture_bodies["whatsapp_text"]
    for _ in range(3):
        assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
    bad = b'{"object":"page","entry":[]}'
    assert (await client.post("/webhooks/meta", data=bad, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})).status == 403
    for _ in range(2):
        metrics = await (await client.get("/metrics")).text()
        assert 'mtdesk_gateway_requests_total{status="200"} 3.0' in metrics
        assert 'mtdesk_gateway_requests_total{status="403"} 1.0' in metrics
        assert "mtdesk_gateway_ack_seconds_count 4.0" in metrics
        assert 'mtdesk_gateway_ack_seconds_bucket{le="+Inf"} 4.0' in metrics
        assert 'mtdesk_gateway_events_total{channel="whatsapp",kind="message",outcome="enqueued"} 1.0' in metrics
        assert 'mtdesk_gateway_events_total{channel="whatsapp",kind="message",outcome="duplicate"} 2.0' in metrics
        sum_line = next(line for line in metrics.splitlines() if line.startswith("mtdesk_gateway_ack_seconds_sum"))
        assert float(sum_line.split()[1]) > 0
