"""With a key store (``MTDESK_KEYSTORE_URL``) that goes down: events of tenants whose key
the gateway holds are still taken (sealed from memory, within the keys' 60 s); an event
whose tenant's key it does not hold is refused with 503 naming the key store, never
stored in the clear, and Meta's retry is taken once the key store is back."""

from __future__ import annotations

import json
import time

from aiohttp.test_utils import TestClient, TestServer
from gateway_support import make_settings, route, signed, stream_entries
from keystore_server import KeyStoreServer

from mtdesk.cli.compose import build_app
from mtdesk.core import keys
from mtdesk.core.events import EVENT_FAMILY, decode_event
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher, is_sealed
from mtdesk.core.secret import Secret
from mtdesk.policy.vault import generate_key

PAGE_A = "5550001"
PAGE_B = "5550002"


def body(page: str, mid: str, text: str) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"object": "page", "entry": [{"id": page, "time": now, "messaging": [
        {"sender": {"id": "U1"}, "recipient": {"id": page}, "timestamp": now,
         "message": {"mid": mid, "text": text}}]}]}).encode()


async def test_a_key_store_that_is_down_is_503_for_uncached_tenants_and_nothing_is_stored_in_the_clear(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer,
) -> None:
    settings = make_settings(redis_url, encryption_keys=(Secret(generate_key()),), partitions=1,
                             keystore_url=keystore_server.url)
    await route(redis, "messenger", PAGE_A, tenant="t_a")
    await route(redis, "messenger", PAGE_B, tenant="t_b")
    app = build_app(settings, redis=redis)
    async with TestClient(TestServer(app)) as client:
        first = body(PAGE_A, "m.1", "secret one")
        assert (await client.post("/webhooks/meta", data=first, headers=signed(first))).status == 200
        assert (await client.get("/readyz")).status == 200

        keystore_server.stop()
        # Tenant A's key is in memory: still taken, sealed.
        second = body(PAGE_A, "m.2", "secret two")
        assert (await client.post("/webhooks/meta", data=second, headers=signed(second))).status == 200
        # Tenant B's key is not: refused, so Meta retries; nothing of it is stored.
        third = body(PAGE_B, "m.3", "secret three")
        refused = await client.post("/webhooks/meta", data=third, headers=signed(third))
        assert refused.status == 503
        assert (await refused.json())["error"]["field"] == "keystore"
        assert len(await stream_entries(redis, 1)) == 2
        ready = await client.get("/readyz")
        assert ready.status == 503 and "keystore" in (await ready.json())["checks"]

        keystore_server.start()  # back, with its data (AOF): Meta's retry is taken
        for _attempt in range(20):
            retried = await client.post("/webhooks/meta", data=third, headers=signed(third))
            if retried.status == 200:
                break
        assert retried.status == 200
        metrics = await (await client.get("/metrics")).text()
        assert 'mtdesk_gateway_redis_errors_total{op="keystore"} 1.0' in metrics

    entries = await stream_entries(redis, 1)
    assert [e[b"t"] for e in entries] == [b"t_a", b"t_a", b"t_b"]
    assert await redis.get(keys.data_key("t_a")) is None  # the keys are in the key store only
    reader = TenantCipher.from_settings(redis, settings)
    for fields in entries:
        assert is_sealed(fields[b"e"]) and b"secret" not in fields[b"e"]
        key = await reader.key(fields[b"t"].decode(), create=False)
        assert decode_event(key.open(EVENT_FAMILY, "", fields[b"e"])).text.startswith("secret")  # type: ignore[union-attr]
    await reader.aclose()
