"""Monthly allowances: a tenant's answered messages stop at its plan's allowance, and a
new month starts from zero."""

from __future__ import annotations

import asyncio
import calendar

import pytest

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.policy import quotas
from mtdesk.policy.quotas import Plan, SubscriptionChange, resolve_plan, try_consume


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second)) * 1000


MAY = ms(2026, 5, 14, 12)


async def subscribe(redis: Redis, tid: str, plan: Plan, *, status: str = "active",
                    created: int = 1) -> None:
    change = SubscriptionChange(
        subscription="sub_1", customer="cus_1", status=status, plan=plan, price="price_1",
        current_period_end_s=0, cancel_at_period_end=False, event_created=created,
    )
    assert await quotas.apply_subscription(redis, tid, change, now_ms=MAY) == ""


async def test_free_plan_stops_at_its_allowance(redis: Redis) -> None:
    first = await try_consume(redis, "t1", 999, now_ms=MAY)
    assert (first.allowed, first.used, first.limit, first.remaining) == (True, 999, 1000, 1)
    assert (await try_consume(redis, "t1", now_ms=MAY)).allowed
    refused = await try_consume(redis, "t1", now_ms=MAY)
    assert (refused.allowed, refused.used, refused.remaining) == (False, 1000, 0)
    # refusing counts nothing
    assert (await quotas.read_usage(redis, "t1", now_ms=MAY)).used == 1000


async def test_usage_resets_when_the_next_month_starts(redis: Redis) -> None:
    await try_consume(redis, "t1", 1000, now_ms=MAY)
    last_second = ms(2026, 5, 31, 23, 59, 59)
    assert not (await try_consume(redis, "t1", now_ms=last_second)).allowed
    june = await try_consume(redis, "t1", now_ms=ms(2026, 6, 1))
    assert (june.allowed, june.used, june.month) == (True, 1, "202606")
    assert june.resets_at_ms == ms(2026, 7, 1)


async def test_december_rolls_over_into_january(redis: Redis) -> None:
    dec = await try_consume(redis, "t1", now_ms=ms(2026, 12, 31, 23))
    assert (dec.month, dec.resets_at_ms) == ("202612", ms(2027, 1, 1))
    assert (await try_consume(redis, "t1", now_ms=ms(2027, 1, 1))).used == 1


async def test_a_request_that_does_not_fit_entirely_consumes_nothing(redis: Redis) -> None:
    await try_consume(redis, "t1", 998, now_ms=MAY)
    assert not (await try_consume(redis, "t1", 3, now_ms=MAY)).allowed
    assert (await try_consume(redis, "t1", 2, now_ms=MAY)).used == 1000


async def test_billing_off_counts_but_never_refuses(redis: Redis) -> None:
    decision = await try_consume(redis, "t1", 5000, now_ms=MAY, enforce=False)
    assert (decision.allowed, decision.used, decision.limit, decision.remaining) == (
        True, 5000, None, None)


async def test_the_plan_sets_the_allowance_and_cancelling_returns_to_free(redis: Redis) -> None:
    await subscribe(redis, "t1", quotas.PLANS["starter"])
    assert (await try_consume(redis, "t1", 10_000, now_ms=MAY)).allowed
    assert not (await try_consume(redis, "t1", now_ms=MAY)).allowed
    await subscribe(redis, "t1", quotas.PLANS["scale"], created=2)
    assert (await try_consume(redis, "t1", 1_000_000, now_ms=MAY)).limit is None
    await subscribe(redis, "t1", quotas.PLANS["scale"], status="canceled", created=3)
    state = await quotas.read_usage(redis, "t1", now_ms=MAY)
    assert (state.limit, state.allowed) == (1000, False)
    assert (await quotas.load_account(redis, "t1")).plan == "free"


async def test_concurrent_consumers_never_exceed_the_allowance(redis: Redis) -> None:
    await try_consume(redis, "t1", 980, now_ms=MAY)
    results = await asyncio.gather(*(try_consume(redis, "t1", now_ms=MAY) for _ in range(60)))
    assert sum(r.allowed for r in results) == 20
    assert (await quotas.read_usage(redis, "t1", now_ms=MAY)).used == 1000


async def test_counters_live_under_the_tenant_and_expire(redis: Redis) -> None:
    await try_consume(redis, "t1", now_ms=MAY)
    key = keys.usage("t1", "202605")
    assert key.startswith(keys.tenant_prefix("t1"))
    ttl = await redis.ttl(key)
    # the rest of May (17.5 days) plus 40 days of grace, as seen from the fake "now"
    assert 50 * 86400 < ttl < 60 * 86400


async def test_n_must_be_positive(redis: Redis) -> None:
    with pytest.raises(ValueError):
        await try_consume(redis, "t1", 0, now_ms=MAY)


@pytest.mark.parametrize(("price", "lookup", "meta", "expected"), [
    ("price_1", "starter", {}, Plan("starter", 10_000)),
    ("price_1", "GROWTH", {}, Plan("growth", 100_000)),
    ("price_1", None, {"mtdesk_plan": "scale"}, Plan("scale", None)),
    ("price_1", "starter", {"mtdesk_monthly_messages": "25000"}, Plan("starter", 25_000)),
    ("price_1", "gold", {"mtdesk_monthly_messages": "unlimited"}, Plan("gold", None)),
    ("price_9", None, {}, Plan("price_9", 10_000)),  # unknown paid price: never below starter
    ("price_1", "starter", {"mtdesk_monthly_messages": "\u00b2"}, Plan("starter", 10_000)),
])
def test_resolve_plan(price: str, lookup: str | None, meta: dict[str, str], expected: Plan) -> None:
    assert resolve_plan(price, lookup, meta) == expected
