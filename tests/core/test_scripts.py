"""Lua scripts run by their SHA everywhere: first use, a flushed script cache, pipelines
and the lean link all end up running the script exactly once per call."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from mtdesk.core.pipelined import connect_pipelined
from mtdesk.core.redis import Redis, connect
from mtdesk.core.resp import Link, RespTarget
from mtdesk.core.scripts import LuaScript, is_noscript, lua_source

INCRBY = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])", name="incrby")


def test_a_script_from_a_package_file_is_the_file_s_text() -> None:
    script = LuaScript.from_file("mtdesk.gateway", "ingest.lua")
    assert script.source.startswith(b"-- MT Desk gateway ingest")
    assert script.name == "ingest.lua" and len(script.sha) == 40
    assert LuaScript(script.source.decode()).sha == script.sha


@pytest.mark.parametrize("pipelined", [False, True], ids=["redis-py", "pipelined"])
async def test_run_loads_on_first_use_and_after_a_flush_and_counts_once(
    redis: Redis, redis_url: str, pipelined: bool
) -> None:
    client = connect_pipelined(redis_url) if pipelined else connect(redis_url)
    try:
        await redis.script_flush()
        assert await INCRBY.run(client, ["n"], [5]) == 5  # NOSCRIPT → EVAL: ran once
        assert (await redis.script_exists(INCRBY.sha)) == [True]
        bound = INCRBY.bind(client)
        assert await bound(keys=["n"], args=[2]) == 7
        await redis.script_flush()
        assert await bound(keys=["n"], args=[1]) == 8
        assert await redis.get("n") == b"8"
    finally:
        await client.aclose()


async def test_a_script_error_is_raised_as_redis_py_raises_it(redis: Redis) -> None:
    await redis.set("text", "not a number")
    with pytest.raises(ResponseError, match="not an integer"):
        await INCRBY.run(redis, ["text"], [1])


async def test_a_pipeline_that_loads_first_never_meets_noscript(redis: Redis) -> None:
    await redis.script_flush()
    pipe = redis.pipeline(transaction=False)
    INCRBY.load(pipe)
    for _ in range(3):
        INCRBY.queue(pipe, ["p"], [10])
    _sha, *counts = await pipe.execute()
    assert counts == [10, 20, 30]


async def test_on_a_lean_link_noscript_is_a_value_and_a_load_in_the_same_write_fixes_it(
    redis: Redis, redis_url: str
) -> None:
    target = RespTarget.of(redis)
    assert target is not None
    link = Link(target)
    try:
        await redis.script_flush()
        (missing,) = await link.call_many([INCRBY.evalsha(["l"], [1])])
        assert is_noscript(missing)
        assert not is_noscript(b"OK")
        sha, count = await link.call_many([INCRBY.load_command(), INCRBY.evalsha(["l"], [1])])
        assert sha == INCRBY.sha.encode() and count == 1  # the failed EVALSHA ran nothing
    finally:
        link.close()


def test_a_script_composed_of_files_is_their_texts_in_order_after_the_prelude() -> None:
    text = lua_source("mtdesk.gateway", "ingest.lua", "ingest.lua", prelude="local x = 1\n")
    one = LuaScript.from_file("mtdesk.gateway", "ingest.lua").source.decode()
    assert text == "local x = 1\n" + one + "\n" + one
