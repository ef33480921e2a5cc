"""The lean link shared by the gateway's ingest batcher and the shards: batches and single
commands on one connection each get their own replies, in the order they were written,
and a broken connection fails what was in flight instead of leaving it waiting."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdesk.core.pipelined import PipelinedRedis, connect_pipelined, link_for
from mtdesk.core.redis import Redis, connect
from mtdesk.core.resp import Link, RespTarget


def _link(redis_url: str) -> Link:
    target = RespTarget.of(connect(redis_url))
    assert target is not None
    return Link(target)


async def test_batches_and_single_commands_interleaved_get_their_own_replies(redis: Redis, redis_url: str) -> None:
    link = _link(redis_url)
    try:
        await link.call(("SET", "n", "0"))

        async def single(i: int) -> object:
            return await link.call(("INCR", "n"))

        async def batch(i: int) -> list[object]:
            return await link.call_many([("SET", f"b:{i}", str(i)), ("GET", f"b:{i}"), ("INCR", "n")])

        results = await asyncio.gather(*(single(i) if i % 2 else batch(i) for i in range(200)))
        batches = [r for r in results if isinstance(r, list)]
        assert [b[:2] for b in batches] == [[b"OK", str(i).encode()] for i in range(0, 200, 2)]
        counts = [r for r in results if not isinstance(r, list)] + [b[2] for b in batches]
        assert sorted(counts) == list(range(1, 201))  # every INCR answered once, to its caller
        assert await redis.get("n") == b"200"
    finally:
        link.close()


async def test_send_writes_at_once_together_with_what_was_queued(redis: Redis, redis_url: str) -> None:
    link = _link(redis_url)
    try:
        await link.call(("PING",))
        before = link.writes
        queued = asyncio.ensure_future(link.call(("SET", "k", "first")))
        await asyncio.sleep(0)  # queued for this turn's write, not yet written
        sent = link.send([("GET", "k"), ("SET", "k", "second")])
        assert sent is not None
        assert await sent == [b"first", b"OK"]  # the queued SET went out before the batch
        assert await queued == b"OK"
        assert link.writes - before == 2  # the flush callback found nothing left to write
    finally:
        link.close()


async def test_error_replies_are_values_and_do_not_shift_the_others(redis_url: str) -> None:
    link = _link(redis_url)
    try:
        replies = await link.call_many([("SET", "s", "x"), ("INCR", "s"), ("GET", "s")])
        assert replies[0] == b"OK" and replies[2] == b"x"
        assert isinstance(replies[1], hiredis.ReplyError)
    finally:
        link.close()


async def test_a_cancelled_batch_leaves_its_replies_to_be_dropped_in_order(redis_url: str) -> None:
    link = _link(redis_url)
    try:
        await link.call_many([("SET", "a", "A"), ("SET", "b", "B")])
        first = asyncio.ensure_future(link.call_many([("GET", "a"), ("GET", "b")]))
        second = asyncio.ensure_future(link.call(("GET", "b")))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == b"B"
    finally:
        link.close()


async def test_a_killed_connection_fails_what_was_in_flight_and_the_next_call_reconnects(
    redis: Redis, redis_url: str
) -> None:
    link = _link(redis_url)
    try:
        await link.call(("PING",))
        await redis.execute_command("CLIENT", "PAUSE", 300, "WRITE")
        try:
            pending = asyncio.ensure_future(link.call_many([("INCR", "c"), ("INCR", "c")]))
            await asyncio.sleep(0.05)
            own = await redis.client_id()
            for info in await redis.client_list():
                if int(info["id"]) != own:
                    await redis.client_kill_filter(_id=int(info["id"]))
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(pending, 5)
            assert link.send([("PING",)]) is None  # not connected: callers take the slow path
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert await link.call(("PING",)) == b"PONG"
        assert link.connected
    finally:
        link.close()


async def test_a_pipelined_client_lends_its_own_link(redis_url: str) -> None:
    client = connect_pipelined(redis_url)
    plain = connect(redis_url)
    try:
        assert isinstance(client, PipelinedRedis)
        assert link_for(client) is client.link  # one connection for the process
        other = link_for(plain)
        assert other is not None and other is not client.link
        await client.set("shared", "1")
        assert client.link is not None
        assert await client.link.call(("GET", "shared")) == b"1"
    finally:
        await client.aclose()
        await plain.aclose()


def test_a_tls_client_gets_a_link_that_speaks_tls() -> None:
    target = RespTarget.of(connect("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none"))
    assert target is not None and target.tls is not None and "tls" in repr(target)
    assert RespTarget.of(connect("redis://127.0.0.1:6379/0")).tls is None  # type: ignore[union-attr]


# A plan: per caller, a batch size (0: one command via call) and whether it gives up.
_PLANS = st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=_PLANS)
def test_whatever_mix_of_callers_gives_up_the_rest_get_exactly_their_replies(
    redis_url: str, plan: list[tuple[int, bool]]
) -> None:
    async def run() -> None:
        link = _link(redis_url)
        try:
            async def caller(i: int, size: int) -> object:
                if size == 0:
                    return await link.call(("ECHO", f"{i}"))
                return await link.call_many([("ECHO", f"{i}.{j}") for j in range(size)])

            await link.call(("PING",))  # connected: the callers write at once
            tasks = [asyncio.ensure_future(caller(i, size)) for i, (size, _) in enumerate(plan)]
            await asyncio.sleep(0)  # all written or queued, none answered yet
            for task, (_, gives_up) in zip(tasks, plan, strict=True):
                if gives_up:
                    task.cancel()
            for i, (task, (size, gives_up)) in enumerate(zip(tasks, plan, strict=True)):
                if gives_up:
                    continue
                want: object = f"{i}".encode() if size == 0 else [f"{i}.{j}".encode() for j in range(size)]
                assert await task == want
            assert await link.call(("ECHO", "after")) == b"after"  # nothing left misaligned
        finally:
            link.close()

    asyncio.run(run())
