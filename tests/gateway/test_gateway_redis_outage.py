"""Redis stopped mid-traffic: the webhook answers 503 (Meta retries), then accepts again.

Runs its OWN redis-server on a free port (the shared one is never stopped)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from gateway_support import (
    FRESH_NOW,
    PAGE_ID,
    WA_PHONE_ID,
    make_settings,
    route,
    signed,
    stream_entries,
)

from mtdesk.cli.compose import build_app
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis, connect

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("own redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_client(own_redis: OwnRedis) -> AsyncIterator[tuple[TestClient, Redis]]:
    own_redis.start()
    redis = connect(own_redis.url)
    settings = make_settings(own_redis.url)
    from mtdesk.cli.compose import make_redis

    app_redis = make_redis(settings)  # the production client, with its short retries
    app = build_app(settings, redis=app_redis, clock=FakeClock(FRESH_NOW))
    try:
        async with TestClient(TestServer(app)) as c:
            yield c, redis
    finally:
        await app_redis.aclose()
        await redis.aclose()


async def test_redis_down_is_503_and_back_up_is_accepted(
    own_redis: OwnRedis, own_client: tuple[TestClient, Redis], fixture_bodies: dict[str, bytes]
) -> None:
    client, redis = own_client
    await route(redis, "messenger", PAGE_ID)
    first = fixture_bodies["messenger_text"]
    assert (await client.post("/webhooks/meta", data=first, headers=signed(first))).status == 200

    own_redis.stop()
    second = fixture_bodies["whatsapp_text"]
    resp = await client.post("/webhooks/meta", data=second, headers=signed(second))
    assert resp.status == 503
    assert (await resp.json())["error"]["field"] == "redis"
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200
    undecodable = b"not json"
    assert (await client.post("/webhooks/meta", data=undecodable, headers=signed(undecodable))).status == 503

    # Back up, empty (a fresh server: the script cache is gone too). Meta's retry lands.
    own_redis.start()
    await redis.connection_pool.disconnect()  # the test's own client: drop dead sockets
    await route(redis, "whatsapp", WA_PHONE_ID)
    assert (await client.post("/webhooks/meta", data=second, headers=signed(second))).status == 200
    (entry,) = await stream_entries(redis, 8)
    assert entry[b"t"] == b"t1"
    assert (await client.get("/readyz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'mtdesk_gateway_redis_errors_total{op="ingest"} 1.0' in metrics
