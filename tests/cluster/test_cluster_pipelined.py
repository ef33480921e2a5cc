"""The shards' cluster client (``PipelinedCluster``): plain keyed commands on one shared
connection per master, with the replies redis-py's cluster client gives, and what a
master does not run there (a redirection) run redis-py's way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mtdesk.core import keys
from mtdesk.core.events import Message, decode_event, partition_of
from mtdesk.core.pipelined import PipelinedCluster, connect_shared
from mtdesk.core.redis import Redis, primaries
from mtdesk.core.scripts import LuaScript
from mtdesk.gateway.ingest import IngestBatcher, Outcome, build_call

KEYS = [f"k:{{{i}}}" for i in range(6)]  # spread over the three masters
_SCRIPT = LuaScript("""
redis.call('HSET', KEYS[1], 'n', ARGV[1])
return {redis.call('HGET', KEYS[1], 'n'), redis.call('HLEN', KEYS[1])}
""", name="test_pipelined_cluster")


@pytest.fixture
async def shared(cluster_redis: Redis, redis_cluster: object) -> AsyncIterator[PipelinedCluster]:
    client = connect_shared(redis_cluster.url, cluster=True)  # type: ignore[attr-defined]
    assert isinstance(client, PipelinedCluster)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


async def _replies(r: Redis, key: str, n: int) -> list[object]:
    """One of each kind of command the product sends, on ``key`` and keys of its slot."""
    tag = key[key.index("{"):key.index("}") + 1]
    h, z, s, x = f"h:{tag}:{n}", f"z:{tag}:{n}", f"s:{tag}:{n}", f"x:{tag}:{n}"
    out: list[object] = [
        await r.set(key, "v", nx=True, ex=60), await r.set(key, "v", nx=True, ex=60),
        await r.get(key), await r.incr(f"c:{tag}:{n}"), await r.expire(key, 30),
        await r.exists(key), await r.hset(h, mapping={"a": "1", "b": "2"}),
        await r.hget(h, "a"), await r.hmget(h, ["a", "zz", "b"]), await r.hgetall(h),
        await r.hincrby(h, "a", 5), await r.zadd(z, {"m1": 1.5, "m2": 3}),
        await r.zscore(z, "m2"), await r.zrevrangebyscore(z, "+inf", "-inf", withscores=True),
        await r.sadd(s, "u"), await r.sismember(s, "u"), await r.sismember(s, "w"),
        await _SCRIPT.run(r, keys=[h], args=[str(n)]),
    ]
    first = await r.xadd(x, {"f": "1"}, id=f"{n + 1}-1")
    await r.xgroup_create(x, "g", id="0")
    out += [first, await r.xrange(x), await r.xpending(x, "g"),
            await r.xreadgroup("g", "c", {x: ">"}, count=5),
            await r.xack(x, "g", first), await r.xdel(x, first), await r.xlen(x)]
    try:
        await r.hget(key, "f")  # a string, read as a hash: WRONGTYPE
    except Exception as exc:  # noqa: BLE001 - compared below
        out.append((type(exc).__name__, str(exc)))
    for name in (key, h, z, s, x, f"c:{tag}:{n}"):
        await r.delete(name)
    return out


async def test_replies_are_those_of_redis_py_s_cluster_client(
    cluster_redis: Redis, shared: PipelinedCluster,
) -> None:
    plain = [await _replies(cluster_redis, key, 1) for key in KEYS]
    lean = [await _replies(shared, key, 1) for key in KEYS]
    assert lean == plain
    links = shared.links.made
    assert len(links) == 3 and all(link.writes > 0 for link in links.values())


async def test_a_command_sent_with_a_stale_slot_map_is_run_where_the_slot_is(
    cluster_redis: Redis, shared: PipelinedCluster,
) -> None:
    """A failover or a migration not yet seen: the master asked answers MOVED (nothing
    ran), redis-py's way runs the command on the slot's master and corrects the map."""
    key = KEYS[0]
    await cluster_redis.set(key, "here")
    slot = shared.keyslot(key)
    right = shared.get_node_from_key(key)
    wrong = next(n for n in primaries(shared) if n.name != right.name)  # type: ignore[union-attr]
    shared.nodes_manager.slots_cache[slot] = [wrong]
    assert await shared.get(key) == b"here"
    assert await shared.incr(f"n:{{{0}}}") == 1  # a write runs once
    assert shared.get_node_from_key(key).name == right.name
    assert await cluster_redis.get(f"n:{{{0}}}") == b"1"


async def test_the_gateway_s_ingest_sent_with_a_stale_slot_map_enqueues_each_event_once(
    cluster_redis: Redis,
) -> None:
    """The ingest's scripts go on each master's lean link; a master that no longer holds
    a partition's slot answers MOVED (nothing ran): the event is enqueued once on the
    slot's master, and delivered again it is a duplicate."""
    await cluster_redis.hset(keys.account("messenger", "page-1"), mapping={"tenant": "t_1"})
    batcher = IngestBatcher(cluster_redis, dedup_ttl_s=3600)
    await batcher.start()
    events = [Message(event_id=f"m_{i}", channel="messenger", account_id="page-1",
                      user_id=f"U{i}", timestamp_ms=1, text="hi") for i in range(12)]
    partitions = {partition_of(e.conversation, 8) for e in events}
    stale = keys.inbound(min(partitions))
    slot = cluster_redis.keyslot(stale)  # type: ignore[attr-defined]
    right = cluster_redis.get_node_from_key(stale)  # type: ignore[attr-defined]
    wrong = next(n for n in primaries(cluster_redis) if n.name != right.name)  # type: ignore[union-attr]
    try:
        first = build_call(events, partitions=8, received_ms=1, stale_before_ms=0)
        assert await batcher.submit(first) == [Outcome.ENQUEUED] * 12
        cluster_redis.nodes_manager.slots_cache[slot] = [wrong]  # type: ignore[attr-defined]
        more = [Message(event_id=f"n_{i}", channel="messenger", account_id="page-1",
                        user_id=f"U{i}", timestamp_ms=1, text="hi") for i in range(12)]
        again = build_call([*events, *more], partitions=8, received_ms=2, stale_before_ms=0)
        assert await batcher.submit(again) == [Outcome.DUPLICATE] * 12 + [Outcome.ENQUEUED] * 12
        assert batcher._links is not None and batcher._links.made  # the lean way was taken
    finally:
        await batcher.aclose()
    stored = []
    for p in range(8):
        stored += [decode_event(f[b"e"]).event_id
                   for _, f in await cluster_redis.xrange(keys.inbound(p))]
    stored.sort()
    assert stored == sorted(e.event_id for e in [*events, *more])
