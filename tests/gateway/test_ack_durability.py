"""MTDESK_ACK_DURABILITY: what the webhook's 200 waits for, and what serve refuses.

Runs its OWN redis-servers (a master, a replica of it) on free ports: the shared test
Redis is never reconfigured."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from gateway_support import FRESH_NOW, PAGE_ID, make_settings, route, signed, stream_entries

from mtdesk.cli.cmd_serve import prepare_store
from mtdesk.cli.compose import build_app
from mtdesk.cli.localredis import free_port, redis_answers
from mtdesk.core.clock import FakeClock
from mtdesk.core.durability import ack_wait
from mtdesk.core.errors import ConfigError
from mtdesk.core.redis import Redis, connect

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


class Server:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(workdir), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if redis_answers(self.url):
                return
            self.proc.poll()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for s in started:
            s.stop()


@pytest.fixture
async def pair(servers: list[Server], tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    master = Server(tmp_path / "m", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
    servers.append(master)
    replica = Server(tmp_path / "r", "--appendonly", "no", "--replicaof", "127.0.0.1",
                     str(master.port))
    servers.append(replica)
    client = connect(master.url)
    try:
        for _ in range(500):  # until the replica is in sync (WAIT counts it from then)
            info = await client.info("replication")
            if (info.get("slave0") or {}).get("state") == "online":
                break
            await asyncio.sleep(0.02)
        yield master, replica
    finally:
        await client.aclose()


async def test_memory_waits_for_nothing_more(redis: Redis) -> None:
    assert await ack_wait(redis, "memory", 1000) is None


async def test_fsync_is_refused_unless_every_write_reaches_the_disk(
    servers: list[Server], tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lazy = Server(tmp_path / "a", "--appendonly", "yes", "--appendfsync", "everysec")
    servers.append(lazy)
    settings = make_settings(lazy.url, ack_durability="fsync")
    with pytest.raises(ConfigError) as refused:
        await prepare_store(settings)
    assert refused.value.variable == "MTDESK_ACK_DURABILITY"
    assert "appendfsync always" in str(refused.value) and "everysec" in str(refused.value)
    no_aof = make_settings(servers[0].url, ack_durability="fsync")
    client = connect(lazy.url)
    await client.config_set("appendonly", "no")
    await client.aclose()
    with pytest.raises(ConfigError, match="appendonly yes"):
        await prepare_store(no_aof)
    strict = Server(tmp_path / "b", "--appendonly", "yes", "--appendfsync", "always")
    servers.append(strict)
    await prepare_store(make_settings(strict.url, ack_durability="fsync"))  # starts


async def test_replica_is_refused_without_a_replica(servers: list[Server], tmp_path: Path) -> None:
    alone = Server(tmp_path, "--appendonly", "no")
    servers.append(alone)
    with pytest.raises(ConfigError, match="no connected replica"):
        await prepare_store(make_settings(alone.url, ack_durability="replica"))


async def test_replica_acknowledges_a_batch_once_a_replica_has_it_else_503_and_nothing_lost(
    pair: tuple[Server, Server], fixture_bodies: dict[str, bytes]
) -> None:
    master, replica = pair
    settings = msgspec.structs.replace(
        make_settings(master.url), ack_durability="replica", ack_timeout_ms=2000)
    redis = connect(master.url)
    app = build_app(settings, redis=redis, clock=FakeClock(FRESH_NOW))
    try:
        await route(redis, "messenger", PAGE_ID)
        async with TestClient(TestServer(app)) as client:
            body = fixture_bodies["messenger_text"]
            assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200
            replica_redis = connect(replica.url)
            assert len(await stream_entries(replica_redis, settings.partitions)) == 1
            os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica stops acknowledging
            try:
                second = fixture_bodies["messenger_postback"]
                answer = await client.post("/webhooks/meta", data=second, headers=signed(second))
                assert answer.status == 503
            finally:
                os.kill(replica.proc.pid, signal.SIGCONT)
            # Meta retries: the entry is there once, and now the replica has it too.
            answer = await client.post("/webhooks/meta", data=second, headers=signed(second))
            assert answer.status == 200
            assert len(await stream_entries(redis, settings.partitions)) == 2
            assert len(await stream_entries(replica_redis, settings.partitions)) == 2
            await replica_redis.aclose()
    finally:
        await redis.aclose()
