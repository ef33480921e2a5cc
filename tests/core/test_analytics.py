"""The analytics counters: the time-to-reply histogram's quantiles, failure reasons as
field names, and a tally that survives a failed write."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from mtdesk.core import analytics, keys
from mtdesk.core.analytics import REPLY_BOUNDS_MS, Tally, failure_field, quantile_ms, reply_bucket
from mtdesk.core.redis import Redis, connect


@given(st.lists(st.integers(min_value=0, max_value=10 * 86_400_000), min_size=1, max_size=200))
@settings(max_examples=200, deadline=None)
def test_quantiles_fall_in_the_bucket_of_the_true_value(samples: list[int]) -> None:
    histogram: dict[str, int] = {}
    for ms in samples:
        histogram[reply_bucket(ms)] = histogram.get(reply_bucket(ms), 0) + 1
    median, p95 = quantile_ms(histogram, 0.5), quantile_ms(histogram, 0.95)
    assert median is not None and p95 is not None
    assert 0 <= median <= p95 <= REPLY_BOUNDS_MS[-1]
    ordered = sorted(samples)
    true_median = ordered[max(0, -(-len(ordered) // 2) - 1)]
    bucket = reply_bucket(true_median)
    upper = REPLY_BOUNDS_MS[-1] if bucket == "rt:inf" else int(bucket[3:])
    lower = max([b for b in REPLY_BOUNDS_MS if b < upper], default=0)
    assert lower <= median <= upper


def test_no_reply_has_no_quantile() -> None:
    assert quantile_ms({}, 0.5) is None


@given(st.text(max_size=200))
def test_a_failure_reason_is_a_short_field_of_plain_characters(reason: str) -> None:
    field = failure_field(reason)
    assert field.startswith("fail:") and 5 < len(field) <= 65
    assert ":" not in field[5:] and all(c.isascii() for c in field)


async def test_a_failed_write_keeps_the_counts_for_the_next(redis: Redis) -> None:
    now = int(time.time() * 1000)
    tally = Tally()
    tally.message_in("t1", "messenger", now)
    tally.bot_reply("t1", "messenger", now, "messenger:1:U1", 800)
    down = connect("redis://127.0.0.1:1/0")  # nothing listens there
    with pytest.raises(RedisConnectionError):
        await tally.flush(down)
    await down.aclose()
    tally.message_in("t1", "messenger", now)
    assert await tally.flush(redis) > 0
    figures = (await analytics.read(redis, "t1", [analytics.day_of(now)]))[0]
    assert (figures.messages_in, figures.bot_replies, figures.conversations) == (2, 1, 1)
    assert await redis.hget(keys.analytics("t1", analytics.day_of(now)), "messenger:rt:1000") == b"1"


async def test_counts_of_a_tenant_being_erased_are_dropped_not_written(redis: Redis) -> None:
    now = int(time.time() * 1000)
    await redis.set(keys.erased("t_gone"), b"1", ex=60)
    tally = Tally()
    tally.message_in("t_gone", "messenger", now)
    tally.bot_reply("t_gone", "messenger", now, "messenger:1:U1", 800)
    tally.message_in("t_kept", "messenger", now)
    await tally.flush(redis)
    assert [k async for k in redis.scan_iter(match=f"{keys.tenant_prefix('t_gone')}*")] == []
    kept = (await analytics.read(redis, "t_kept", [analytics.day_of(now)]))[0]
    assert kept.messages_in == 1
