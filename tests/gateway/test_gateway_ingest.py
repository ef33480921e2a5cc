"""The ingest batcher against the real Redis: statuses, entry format, batching, both paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from gateway_support import route

from mtdesk.core import keys
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.events import Message, Receipt, decode_event, partition_of
from mtdesk.core.redis import Redis
from mtdesk.gateway.ingest import IngestBatcher, Outcome, build_call

PARTITIONS = 4


def msg(i: int, account: str = "page-1", ts: int = 1_000_000) -> Message:
    return Message(event_id=f"m_{i}", channel="messenger", account_id=account, user_id=f"u{i % 3}",
                   timestamp_ms=ts, text=f"hello {i}")


@pytest.fixture(params=[True, False], ids=["lean", "redis-py"])
async def batcher(request: pytest.FixtureRequest, redis: Redis) -> AsyncIterator[IngestBatcher]:
    b = IngestBatcher(redis, dedup_ttl_s=7 * 24 * 3600, max_events_per_call=3, lean=request.param)
    await b.start()
    yield b
    await b.aclose()


async def test_statuses_and_the_stream_entry_format(batcher: IngestBatcher, redis: Redis) -> None:
    await route(redis, "messenger", "page-1", tenant="tenant-9")
    events = [msg(1, ts=500), msg(2, ts=2_000_000), msg(1), msg(3, account="page-unknown")]
    call = build_call(events, partitions=PARTITIONS, received_ms=1_234, stale_before_ms=1_000)
    assert await batcher.submit(call) == [
        Outcome.ENQUEUED, Outcome.ENQUEUED, Outcome.DUPLICATE, Outcome.UNKNOWN
    ]
    stale = await redis.xrange(keys.inbound(partition_of(events[0].conversation, PARTITIONS)))
    fields = next(f for _id, f in stale if decode_event(f[b"e"]).event_id == "m_1")
    assert fields == {b"e": fields[b"e"], b"t": b"tenant-9", b"r": b"1234", b"s": b"1"}
    assert decode_event(fields[b"e"]) == events[0]
    fresh = await redis.xrange(keys.inbound(partition_of(events[1].conversation, PARTITIONS)))
    fields2 = next(f for _id, f in fresh if decode_event(f[b"e"]).event_id == "m_2")
    assert b"s" not in fields2
    assert not await redis.exists(keys.seen("m_3", partition_of(events[3].conversation, PARTITIONS)))  # unknown accounts leave no marker


async def test_concurrent_calls_share_round_trips(batcher: IngestBatcher, redis: Redis) -> None:
    await route(redis, "messenger", "page-1")
    calls = [build_call([msg(i), msg(i + 1000)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0)
             for i in range(40)]
    results = await asyncio.gather(*(batcher.submit(c) for c in calls))
    assert results == [[Outcome.ENQUEUED, Outcome.ENQUEUED]] * 40
    assert batcher.round_trips < 40
    total = sum([await redis.xlen(keys.inbound(p)) for p in range(PARTITIONS)])
    assert total == 80


async def test_a_receipt_and_a_message_of_one_request(batcher: IngestBatcher, redis: Redis) -> None:
    await route(redis, "messenger", "page-1")
    receipt = Receipt(event_id="read:page-1:u1:5", channel="messenger", account_id="page-1",
                      user_id="u1", timestamp_ms=5, receipt="read", watermark_ms=5)
    call = build_call([receipt, msg(7)], partitions=PARTITIONS, received_ms=9, stale_before_ms=0)
    assert await batcher.submit(call) == [Outcome.ENQUEUED, Outcome.ENQUEUED]
    assert await batcher.submit(call) == [Outcome.DUPLICATE, Outcome.DUPLICATE]


async def _stored(redis: Redis) -> int:
    return sum([await redis.xlen(keys.inbound(p)) for p in range(PARTITIONS)])


async def test_a_flushed_script_is_reloaded_and_nothing_is_lost(batcher: IngestBatcher, redis: Redis) -> None:
    await route(redis, "messenger", "page-1")
    first = build_call([msg(1)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0)
    assert await batcher.submit(first) == [Outcome.ENQUEUED]
    await redis.script_flush()  # as after a Redis restart
    calls = [build_call([msg(i)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0)
             for i in range(2, 12)]
    assert await asyncio.gather(*(batcher.submit(c) for c in calls)) == [[Outcome.ENQUEUED]] * 10
    assert await _stored(redis) == 11


async def test_calls_in_flight_when_the_connection_is_killed_are_stored_once(
    batcher: IngestBatcher, redis: Redis
) -> None:
    await route(redis, "messenger", "page-1")
    warm = build_call([msg(0)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0)
    assert await batcher.submit(warm) == [Outcome.ENQUEUED]
    # Hold writes at the server, queue calls, kill every other connection: the batch in
    # flight is retried on a new connection, and what queued meanwhile follows.
    await redis.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    try:
        calls = [build_call([msg(i)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0)
                 for i in range(1, 21)]
        pending = asyncio.gather(*(batcher.submit(c) for c in calls))
        await asyncio.sleep(0.05)
        own = await redis.client_id()
        for info in await redis.client_list():
            if int(info["id"]) != own:
                await redis.client_kill_filter(_id=int(info["id"]))
        results = await asyncio.wait_for(pending, 10)
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
    assert results == [[Outcome.ENQUEUED]] * 20
    assert await _stored(redis) == 21


async def test_close_flushes_what_is_pending(redis: Redis) -> None:
    await route(redis, "messenger", "page-1")
    b = IngestBatcher(redis, dedup_ttl_s=3600)
    await b.start()
    futures = [b.submit(build_call([msg(i)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0))
               for i in range(5)]
    await b.aclose()
    assert [f.result() for f in futures] == [[Outcome.ENQUEUED]] * 5
    assert await _stored(redis) == 5
    with pytest.raises(StoreUnavailable):
        b.submit(build_call([msg(9)], partitions=PARTITIONS, received_ms=1, stale_before_ms=0))
