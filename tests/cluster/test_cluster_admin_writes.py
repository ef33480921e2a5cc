"""Admin writes whose keys lie in several hash slots, on a real Redis Cluster: an account's
routing is claimed by one tenant only, a channel connects, disconnects and reconnects,
and a transaction across slots lands in the order its commands were queued (a crash
between two slots' steps leaves an earlier step done, never a later one alone)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from conftest import ClusterInfo

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import Conflict
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import CLAIM_GRACE_MS, Channels, Tenants
from mtdesk.policy.vault import TokenVault, generate_key

ACCOUNT = "106540352242922"


def channels(redis: Redis, clock: FakeClock) -> Channels:
    return Channels(redis, clock, TokenVault([Secret(generate_key())]).encrypt)


async def test_a_channel_connects_disconnects_and_connects_again(cluster_redis: Redis) -> None:
    clock = FakeClock()
    tenant, _ = await Tenants(cluster_redis, clock).create("Acme", "a@acme.example")
    chans = channels(cluster_redis, clock)
    first = await chans.connect(tenant.id, "whatsapp", ACCOUNT, "EAAtoken1", "5551")
    assert first.status == "connected"
    assert await chans.resolve("whatsapp", ACCOUNT) == (tenant.id, first.id)

    off = await chans.disconnect(tenant.id, first.id)
    assert off.status == "disconnected" and off.token_kid is None
    assert await chans.resolve("whatsapp", ACCOUNT) is None

    again = await chans.connect(tenant.id, "whatsapp", ACCOUNT, "EAAtoken2")
    assert again.id == first.id and again.status == "connected"
    assert await chans.resolve("whatsapp", ACCOUNT) == (tenant.id, first.id)


async def test_two_tenants_connecting_one_account_at_once_one_gets_it(cluster_redis: Redis) -> None:
    clock = FakeClock()
    tenants = Tenants(cluster_redis, clock)
    made = [(await tenants.create(f"Shop {i}", f"s{i}@shop.example"))[0] for i in range(6)]
    chans = channels(cluster_redis, clock)
    outcomes = await asyncio.gather(
        *(chans.connect(t.id, "messenger", ACCOUNT, f"EAAtoken{i}") for i, t in enumerate(made)),
        return_exceptions=True)
    won = [(t, o) for t, o in zip(made, outcomes, strict=True) if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1, outcomes
    assert all(isinstance(o, Conflict) and o.field == "account_id" for o in refused)
    winner, record = won[0]
    assert await chans.resolve("messenger", ACCOUNT) == (winner.id, record.id)
    for loser in made:
        if loser.id != winner.id:
            assert await chans.list(loser.id) == []


async def test_a_claim_left_by_a_connect_that_died_is_taken_over_once_old(
    cluster_redis: Redis,
) -> None:
    clock = FakeClock()
    tenants = Tenants(cluster_redis, clock)
    dead, _ = await tenants.create("Gone half way", "g@shop.example")
    other, _ = await tenants.create("Next", "n@shop.example")
    chans = channels(cluster_redis, clock)
    # What a connect leaves when it dies after its claim, before the channel's record.
    claimed = await chans.connect(dead.id, "instagram", ACCOUNT, "EAAtoken1")
    await cluster_redis.delete(keys.channel(dead.id, claimed.id))
    await cluster_redis.srem(keys.channels(dead.id), claimed.id)

    with pytest.raises(Conflict):  # under way, as far as anyone can tell
        await chans.connect(other.id, "instagram", ACCOUNT, "EAAtoken2")
    clock.advance(CLAIM_GRACE_MS / 1000 + 1)
    record = await chans.connect(other.id, "instagram", ACCOUNT, "EAAtoken2")
    assert await chans.resolve("instagram", ACCOUNT) == (other.id, record.id)

    # A holder with its channel record (connected or not) is never taken over.
    clock.advance(CLAIM_GRACE_MS / 1000 + 1)
    with pytest.raises(Conflict):
        await chans.connect(dead.id, "instagram", ACCOUNT, "EAAtoken3")


def _pid_serving(info: ClusterInfo, redis: Redis, key: str) -> int:
    node = redis.get_node_from_key(key)  # type: ignore[attr-defined]
    return info.pids[info.ports.index(int(node.port))]


async def test_a_transaction_across_slots_lands_in_the_order_queued(
    redis_cluster: ClusterInfo, cluster_redis: Redis,
) -> None:
    # Two keys on different masters: the one queued first is held up (its master
    # paused); the later one must not land before it.
    first, second = keys.user_sessions("t_order", "u_1"), None
    for i in range(200):
        candidate = keys.session(f"digest{i}")
        if (cluster_redis.get_node_from_key(candidate).name  # type: ignore[attr-defined]
                != cluster_redis.get_node_from_key(first).name):  # type: ignore[attr-defined]
            second = candidate
            break
    assert second is not None
    paused = _pid_serving(redis_cluster, cluster_redis, first)

    async def write() -> list[object]:
        async with cluster_redis.pipeline(transaction=True) as pipe:
            pipe.sadd(first, "digest")
            pipe.hset(second, "tenant", "t_order")
            return list(await pipe.execute())

    os.kill(paused, signal.SIGSTOP)
    try:
        task = asyncio.create_task(write())
        await asyncio.sleep(0.6)  # well under the cluster's 2 s node timeout
        assert not await cluster_redis.exists(second)
    finally:
        os.kill(paused, signal.SIGCONT)
    assert await task == [1, 1]
    assert await cluster_redis.sismember(first, "digest")
    assert await cluster_redis.hget(second, "tenant") == b"t_order"
