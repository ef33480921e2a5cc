"""The shards' auto-pipelined Redis client answers exactly as redis-py does, shares one
connection for plain commands, and loses nothing when that connection breaks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import NoScriptError, ResponseError

from mtdesk.core.pipelined import PipelinedRedis, connect_pipelined
from mtdesk.core.redis import Redis, connect

# (method, args builder) over a tiny key space so that commands meet each other's keys
# (and wrong types: errors must match too).
_KEYS = st.sampled_from(["k1", "k2", "k3"])
_VALS = st.one_of(st.integers(-5, 5).map(str), st.text(max_size=8), st.binary(max_size=8))
_FIELDS = st.sampled_from(["f", "g"])

_OPS = st.one_of(
    st.tuples(st.just("set"), _KEYS, _VALS),
    st.tuples(st.just("get"), _KEYS),
    st.tuples(st.just("incr"), _KEYS),
    st.tuples(st.just("delete"), _KEYS),
    st.tuples(st.just("exists"), _KEYS),
    st.tuples(st.just("hset"), _KEYS, _FIELDS, _VALS),
    st.tuples(st.just("hgetall"), _KEYS),
    st.tuples(st.just("hmget"), _KEYS, _FIELDS),
    st.tuples(st.just("sadd"), _KEYS, _VALS),
    st.tuples(st.just("smembers"), _KEYS),
    st.tuples(st.just("zadd"), _KEYS, _VALS, st.floats(-10, 10, allow_nan=False)),
    st.tuples(st.just("zrange"), _KEYS),
    st.tuples(st.just("rpush"), _KEYS, _VALS),
    st.tuples(st.just("lrange"), _KEYS),
    st.tuples(st.just("expire"), _KEYS, st.integers(1, 1000)),
    st.tuples(st.just("ttl"), _KEYS),
    st.tuples(st.just("xadd"), _KEYS, _VALS),
    st.tuples(st.just("xlen"), _KEYS),
    st.tuples(st.just("eval"), _KEYS),
)


async def _apply(client: Redis, prefix: str, op: tuple[Any, ...]) -> Any:
    name, key, *rest = op
    k = prefix + key
    try:
        match name:
            case "set":
                return await client.set(k, rest[0])
            case "get":
                return await client.get(k)
            case "incr":
                return await client.incr(k)
            case "delete":
                return await client.delete(k)
            case "exists":
                return await client.exists(k)
            case "hset":
                return await client.hset(k, rest[0], rest[1])
            case "hgetall":
                return await client.hgetall(k)
            case "hmget":
                return await client.hmget(k, [rest[0], "nope"])
            case "sadd":
                return await client.sadd(k, rest[0])
            case "smembers":
                return await client.smembers(k)
            case "zadd":
                return await client.zadd(k, {rest[0]: rest[1]})
            case "zrange":
                return await client.zrange(k, 0, -1, withscores=True)
            case "rpush":
                return await client.rpush(k, rest[0])
            case "lrange":
                return await client.lrange(k, 0, -1)
            case "expire":
                return await client.expire(k, rest[0])
            case "ttl":
                return await client.ttl(k)
            case "xadd":
                entry = await client.xadd(k, {"v": rest[0]})
                return isinstance(entry, bytes)  # ids depend on the clock
            case "xlen":
                return await client.xlen(k)
            case "eval":
                return await client.eval("return redis.call('TYPE', KEYS[1])", 1, k)
    except ResponseError as exc:
        return ("error", type(exc).__name__, str(exc))
    raise AssertionError(name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OPS, min_size=1, max_size=25))
def test_every_reply_and_error_is_the_same_as_redis_py(redis_url: str, ops: list[tuple[Any, ...]]) -> None:
    async def run() -> None:
        plain, piped = connect(redis_url), connect_pipelined(redis_url)
        try:
            await plain.delete(*(p + k for p in ("a:", "b:") for k in ("k1", "k2", "k3")))
            for op in ops:
                assert await _apply(piped, "a:", op) == await _apply(plain, "b:", op), op
        finally:
            await plain.aclose()
            await piped.aclose()

    asyncio.run(run())


async def test_concurrent_commands_share_a_few_writes_and_each_gets_its_own_reply(
    redis: Redis, redis_url: str
) -> None:
    client = connect_pipelined(redis_url)
    try:
        await client.ping()
        link = client._link
        assert link is not None
        before = link.writes

        async def one(i: int) -> tuple[int, bytes | None, int]:
            await client.set(f"n:{i}", str(i))
            value = await client.get(f"n:{i}")
            return i, value, await client.incr("counter")

        results = await asyncio.gather(*(one(i) for i in range(500)))
        assert [value for _, value, _ in results] == [str(i).encode() for i in range(500)]
        assert sorted(n for _, _, n in results) == list(range(1, 501))
        assert link.writes - before <= 10  # 1,500 commands, a handful of writes
        # everything landed: another client sees it
        assert await redis.get("n:499") == b"499" and await redis.get("counter") == b"500"
    finally:
        await client.aclose()


async def test_scripts_load_once_and_run(redis: Redis, redis_url: str) -> None:
    client = connect_pipelined(redis_url)
    try:
        script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await redis.script_flush()
        assert await script(keys=["s"], args=[5]) == 5  # NOSCRIPT → loaded → run
        assert await script(keys=["s"], args=[2]) == 7
        with pytest.raises(NoScriptError):
            await client.evalsha("0" * 40, 0)
    finally:
        await client.aclose()


async def test_a_blocking_read_does_not_hold_up_the_other_commands(redis: Redis, redis_url: str) -> None:
    client = connect_pipelined(redis_url)
    try:
        await client.xgroup_create("stream", "group", id="0", mkstream=True)
        reader = asyncio.create_task(
            client.xreadgroup("group", "c", {"stream": ">"}, count=1, block=5000)
        )
        await asyncio.sleep(0.05)
        # answered while the read blocks (it went to a pool connection of its own)
        assert await asyncio.wait_for(client.set("x", "1"), 1.0) is True
        await client.xadd("stream", {"f": "v"})
        got = await asyncio.wait_for(reader, 2.0)
        assert got[0][1][0][1] == {b"f": b"v"}
    finally:
        await client.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(
    redis: Redis, redis_url: str
) -> None:
    client = connect_pipelined(redis_url)
    try:
        await client.mset({"a": "A", "b": "B", "c": "C"})
        first = asyncio.create_task(client.get("a"))
        second = asyncio.create_task(client.get("b"))
        third = asyncio.create_task(client.get("c"))
        await asyncio.sleep(0)  # all three queued for the same write
        second.cancel()
        assert await first == b"A" and await third == b"C"
        assert await client.get("b") == b"B"
    finally:
        await client.aclose()


async def test_commands_in_flight_when_the_connection_is_killed_are_not_lost(
    redis: Redis, redis_url: str
) -> None:
    client = connect_pipelined(redis_url)
    try:
        assert isinstance(client, PipelinedRedis)
        await client.set("before", "1")
        # Writes held at the server, so the INCRs sit unanswered on the shared connection
        # when it is killed: each must still count exactly once.
        await redis.execute_command("CLIENT", "PAUSE", 500, "WRITE")
        pending = asyncio.gather(*(client.incr("after") for _ in range(50)))
        await asyncio.sleep(0.1)
        own_id = await redis.client_id()
        for info in await redis.client_list():
            if int(info["id"]) != own_id:
                await redis.client_kill_filter(_id=int(info["id"]))
        assert sorted(await pending) == list(range(1, 51))
        assert await client.get("before") == b"1"
        assert await client.incr("after") == 51  # and the shared connection is back
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()
