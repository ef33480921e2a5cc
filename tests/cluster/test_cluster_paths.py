"""The message path and the privacy sweeps on a real Redis Cluster (three masters, a
replica each): signed webhooks in, answered by a shard exactly once, and an account
erasure that leaves nothing of the tenant on any master."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgspec
import pytest
from _privacy_world import build_world, where_found
from _privacy_world import make_settings as world_settings
from aiohttp.test_utils import TestClient, TestServer
from gateway_support import make_settings as gateway_settings
from gateway_support import signed
from keystore_server import KeyStoreServer
from shardkit import ACCOUNTS, desk, eventually

from mtdesk.cli.compose import build_app
from mtdesk.core import keys, ownership
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import DecryptionError
from mtdesk.core.events import Message, encode_event, partition_of
from mtdesk.core.redis import Redis, on_server, primaries
from mtdesk.core.sealing import TenantCipher
from mtdesk.gateway.ingest import IngestBatcher, Outcome, build_call
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker


async def masters_holding(redis: Redis, match: str) -> set[str]:
    """The masters that hold a key matching ``match``."""
    found = set()
    for node in primaries(redis):
        reply = await on_server(redis, node, "SCAN", 0, "MATCH", match, "COUNT", 10_000)
        names = reply[1] if not isinstance(reply[1], dict) else next(iter(reply[1].values()))
        if names:
            found.add(str(node))
    return found


def message(i: int, account: str = ACCOUNTS["messenger"], user: str = "") -> Message:
    return Message(event_id=f"m_{i}", channel="messenger", account_id=account,
                   user_id=user or f"U{i}", timestamp_ms=1, text=f"hello {i}")


async def test_ingest_spreads_partitions_over_the_masters_and_deduplicates(
    cluster_redis: Redis,
) -> None:
    await cluster_redis.hset(keys.account("messenger", ACCOUNTS["messenger"]),
                             mapping={"tenant": "t_1", "channel_id": "c1"})
    batcher = IngestBatcher(cluster_redis, dedup_ttl_s=3600)
    await batcher.start()
    try:
        events = [message(i) for i in range(40)]
        call = build_call(events, partitions=16, received_ms=5, stale_before_ms=0)
        assert await batcher.submit(call) == [Outcome.ENQUEUED] * 40
        again = build_call([*events[:5], message(99, account="nobody")], partitions=16,
                           received_ms=6, stale_before_ms=0)
        assert await batcher.submit(again) == [Outcome.DUPLICATE] * 5 + [Outcome.UNKNOWN]
    finally:
        await batcher.aclose()
    total = 0
    for p in range(16):
        for _id, fields in await cluster_redis.xrange(keys.inbound(p)):
            assert fields[b"t"] == b"t_1"
            total += 1
    assert total == 40
    assert len(await masters_holding(cluster_redis, "mt:in:*")) == 3


async def test_signed_webhooks_are_answered_once_each_by_a_shard(
    cluster_redis: Redis, redis_cluster: object,
) -> None:
    url = redis_cluster.url  # type: ignore[attr-defined]
    async with desk(cluster_redis, url, redis_cluster=True, partitions=8) as d:
        settings = gateway_settings(url, redis_cluster=True, partitions=8)
        app = build_app(settings, redis=cluster_redis)
        async with TestClient(TestServer(app)) as client:
            shard = await d.shard()
            await shard.start()
            users = [f"PSID{i}" for i in range(12)]
            for round_ in range(2):  # Meta redelivers: each body twice
                for i, user in enumerate(users):
                    body = json.dumps({"object": "page", "entry": [{
                        "id": ACCOUNTS["messenger"], "time": 1, "messaging": [{
                            "sender": {"id": user}, "recipient": {"id": ACCOUNTS["messenger"]},
                            "timestamp": int(time.time() * 1000),
                            "message": {"mid": f"mid.{i}", "text": f"question {i}"}}]}]})
                    resp = await client.post("/webhooks/meta", data=body.encode(),
                                             headers=signed(body.encode()))
                    assert resp.status == 200, (round_, await resp.text())
            await eventually(lambda: all(d.texts_to(u) for u in users), within=20)
            assert sorted(len(d.texts_to(u)) for u in users) == [1] * len(users)
            parts = {partition_of(f"messenger:{ACCOUNTS['messenger']}:{u}", 8) for u in users}
            assert len(parts) > 1


async def test_account_erasure_leaves_nothing_of_the_tenant_on_any_master(
    cluster_redis: Redis, tmp_path: Path,
) -> None:
    settings = msgspec.structs.replace(world_settings(tmp_path, redis_cluster=True),
                                       partitions=16)
    w = await build_world(cluster_redis, settings, FakeClock())
    # Events of the tenant still queued in partitions on every master.
    for i in range(24):
        event = message(i, account="1110001", user=w.alice.user_id)
        await cluster_redis.xadd(keys.inbound(i % 16),
                                 {"e": encode_event(event), "t": w.a.id, "r": b"1"})
    assert len(await masters_holding(cluster_redis, "mt:in:*")) == 3
    await DeletionJobs(cluster_redis, FakeClock()).schedule_account(w.a.id)
    worker = DeletionWorker(cluster_redis, settings, FakeClock(), batch=3)
    while await worker.run_once():
        pass
    assert await masters_holding(cluster_redis, keys.tenant_pattern(w.a.id)) == set()
    gone = [w.a.id, "1110001", "2220002", w.tokens["1110001"], "faq of a", "cus_a1234",
            *w.alice.identifiers(), *w.bob.identifiers()]
    assert await where_found(cluster_redis, w.data_dir, gone) == []
    assert await where_found(cluster_redis, w.data_dir, ["dave books a table"]) != []


async def test_with_a_key_store_no_master_holds_a_data_key_and_deletion_shreds_it_in_the_key_store(
    cluster_redis: Redis, tmp_path: Path, keystore_server: KeyStoreServer,
) -> None:
    settings = msgspec.structs.replace(world_settings(tmp_path, redis_cluster=True),
                                       partitions=16, keystore_url=keystore_server.url)
    w = await build_world(cluster_redis, settings, FakeClock())
    cipher = TenantCipher.from_settings(cluster_redis, settings)
    sealed = {t: await cipher.seal(t, "message", "m1", f"words of {t}".encode())
              for t in (w.a.id, w.b.id)}
    assert await masters_holding(cluster_redis, "*:dk") == set()
    await DeletionJobs(cluster_redis, FakeClock(), cipher=cipher).schedule_account(w.a.id)
    worker = DeletionWorker(cluster_redis, settings, FakeClock(), batch=3)
    while await worker.run_once():
        pass
    after = TenantCipher.from_settings(cluster_redis, settings)
    with pytest.raises(DecryptionError):
        await after.open(w.a.id, "message", "m1", sealed[w.a.id])
    assert await after.open(w.b.id, "message", "m1", sealed[w.b.id]) == f"words of {w.b.id}".encode()
    assert await masters_holding(cluster_redis, "*:dk") == set()
    for c in (cipher, after, worker.cipher):
        await c.aclose()


async def test_a_stale_owner_sends_nothing_on_a_cluster(
    cluster_redis: Redis, redis_cluster: object,
) -> None:
    # On a cluster the first send permit is not taken with the stored text (the rate
    # window is another slot), so the fence is checked with the permit itself: a shard
    # whose partition was handed over behind its back sends nothing, and the new owner
    # answers once.
    url = redis_cluster.url  # type: ignore[attr-defined]
    every = list(range(8))
    async with desk(cluster_redis, url, redis_cluster=True, partitions=8,
                    send_confirm_wait_s=0.2) as d:
        a = await d.shard(0, every, epochs=dict.fromkeys(every, 1))
        for q in every:
            await ownership.fence(cluster_redis, q, 1)
        await a.start()
        d.llm.hold()
        msg = d.message("hello", user="stale1")
        await d.push(msg)
        p = partition_of(msg.conversation, 8)
        await eventually(lambda: d.llm.waiting == 1)
        await ownership.fence(cluster_redis, p, 2)  # handed over behind its back
        d.llm.release()
        await eventually(lambda: p not in a.partitions)
        assert d.texts_to("stale1") == []
        b = await d.shard(1, [], epochs={})
        await b.start()
        await b.take_partitions({p: 2})
        await eventually(lambda: d.texts_to("stale1") == ["[gpt-test] You said: hello"])
        await asyncio.sleep(0.3)
        assert d.texts_to("stale1") == ["[gpt-test] You said: hello"]
