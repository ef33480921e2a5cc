"""The gateway seals each event with its tenant's data key before it enters a stream,
from routes kept in memory; a route that changed since is caught by the ingest script,
read again, and the event is sealed for the tenant that owns the account now."""

from __future__ import annotations

import json
import time

from aiohttp.test_utils import TestClient, TestServer
from gateway_support import make_settings, signed, stream_entries

from mtdesk.cli.compose import build_app
from mtdesk.core import keys
from mtdesk.core.events import EVENT_FAMILY, decode_event
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import KeyRing, TenantCipher, is_sealed
from mtdesk.core.secret import Secret
from mtdesk.gateway.routes import SEALER
from mtdesk.policy.vault import generate_key

PAGE = "5550001"


def body(mid: str, text: str) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"object": "page", "entry": [{"id": PAGE, "time": now, "messaging": [
        {"sender": {"id": "U1"}, "recipient": {"id": PAGE}, "timestamp": now,
         "message": {"mid": mid, "text": text}}]}]}).encode()


async def test_events_are_sealed_for_the_tenant_that_owns_the_account_even_after_it_moved(
    redis: Redis, redis_url: str,
) -> None:
    settings = make_settings(redis_url, encryption_keys=(Secret(generate_key()),), partitions=1)
    cipher = TenantCipher(redis, KeyRing(settings.encryption_keys))
    await redis.hset(keys.account("messenger", PAGE), mapping={"tenant": "t_a", "channel_id": "c1"})
    app = build_app(settings, redis=redis)
    async with TestClient(TestServer(app)) as client:
        for i in range(3):
            raw = body(f"m.{i}", f"secret number {i}")
            assert (await client.post("/webhooks/meta", data=raw, headers=signed(raw))).status == 200
        assert app[SEALER].lookups == 1  # one routing read, then from memory
        # The account moves to another tenant; the gateway's cached route is now stale.
        await redis.hset(keys.account("messenger", PAGE), "tenant", "t_b")
        raw = body("m.moved", "secret after the move")
        assert (await client.post("/webhooks/meta", data=raw, headers=signed(raw))).status == 200
        assert app[SEALER].lookups == 2
    entries = await stream_entries(redis, 1)
    assert [e[b"t"] for e in entries] == [b"t_a", b"t_a", b"t_a", b"t_b"]
    for fields in entries:
        assert is_sealed(fields[b"e"]) and b"secret" not in fields[b"e"]
        tenant = fields[b"t"].decode()
        event = decode_event((await cipher.key(tenant, create=False)).open(EVENT_FAMILY, "", fields[b"e"]))
        assert event.text.startswith("secret")  # type: ignore[union-attr]
