"""Erasure notices reach a listener; a listener whose subscription dropped is told once
it is subscribed again (notices sent meanwhile are lost), both when the client reconnects
by itself (the gateway's client retries) and when the subscription fails and is made
again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from mtdesk.cli.compose import make_redis
from mtdesk.core import keys
from mtdesk.core.redis import Redis, connect
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.notices import Notice, listen_for_notices


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time allowed")


async def drop_subscriptions(redis: Redis) -> None:
    """Close, from the server's side, the subscribed connections of this test's database
    (only this test subscribes there)."""
    db = str(redis.connection_pool.connection_kwargs.get("db", 0))
    subscribed = [c for c in await redis.client_list()
                  if str(c.get("db")) == db and str(c.get("sub", "0")) != "0"]
    assert len(subscribed) == 1, subscribed
    assert await redis.client_kill_filter(_id=subscribed[0]["id"]) == 1


@pytest.mark.parametrize("client", ["gateway client (retries)", "plain client"])
async def test_a_dropped_subscription_is_reported_when_it_is_back(
    redis: Redis, redis_url: str, client: str
) -> None:
    listener = (make_redis(Settings(redis_url=redis_url)) if client.startswith("gateway")
                else connect(redis_url))
    notices: list[Notice] = []
    subscriptions = 0

    def subscribed_again() -> None:
        nonlocal subscriptions
        subscriptions += 1

    running = True
    task = asyncio.create_task(listen_for_notices(
        listener, lambda: running, notices.append, on_subscribed=subscribed_again))
    try:
        await eventually(lambda: subscriptions == 1)
        await redis.publish(keys.ERASURE_NOTICES, json.dumps({"scope": "tenant", "tenant": "t_before"}))
        await eventually(lambda: len(notices) == 1)

        await drop_subscriptions(redis)
        await eventually(lambda: subscriptions == 2)
        await redis.publish(keys.ERASURE_NOTICES, json.dumps({"scope": "tenant", "tenant": "t_after"}))
        await eventually(lambda: notices[-1].tenant == "t_after")
        assert subscriptions == 2
    finally:
        running = False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.aclose()
