"""The connection watchdog against the fake Graph API (a real local server) and the real
Redis: it subscribes again where Meta dropped the app, marks a dead token's channel
needs_reconnect, warns before a token expires, refreshes Instagram Login tokens, shows it
all in /metrics, and runs beside the retention sweep in the retention actor's loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.actors.policy_deploy import RetentionHost
from mtdesk.cli.compose import build_app
from mtdesk.core import keys
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels, Tenants, channel_token_aad
from mtdesk.fakes.graph import FakeGraphAPI
from mtdesk.policy.meta_accounts import MESSAGING_FIELDS, MetaAccounts
from mtdesk.policy.vault import TokenVault, generate_key
from mtdesk.policy.watchdog import ConnectionWatchdog

DAY = 86_400


@dataclass
class World:
    graph: FakeGraphAPI
    settings: Settings
    redis: Redis
    watchdog: ConnectionWatchdog
    channels: Channels
    vault: TokenVault
    tenant: str


@pytest.fixture(name="world")
async def world_fixture(redis: Redis, redis_url: str) -> AsyncIterator[World]:
    async with FakeGraphAPI(strict=True) as graph, aiohttp.ClientSession() as http:
        settings = Settings.from_env({
            "MTDESK_REDIS_URL": redis_url, "MTDESK_ENCRYPTION_KEYS": generate_key(),
            "MTDESK_GRAPH_API_BASE": graph.base_url, "MTDESK_META_APP_ID": graph.login.app_id,
            "MTDESK_META_APP_SECRET": graph.login.app_secret,
            "MTDESK_INSTAGRAM_GRAPH_BASE": graph.base_url, "MTDESK_META_VERIFY_TOKEN": "v",
            "MTDESK_WATCHDOG_INTERVAL_S": "3600",
        }, dotenv=None)
        clock = SystemClock()
        vault = TokenVault.from_settings(settings)
        tenant, _ = await Tenants(redis, clock).create("Harbor", "ops@harbor.test")
        yield World(graph, settings, redis,
                    ConnectionWatchdog(redis, settings, clock,
                                       MetaAccounts.from_settings(http, settings), vault),
                    Channels(redis, clock, vault.encrypt), vault, tenant.id)


async def connected(world: World, channel: str, account: str, token: str, source: str,
                    subscription: str, expires_ms: int | None = None) -> str:
    record = await world.channels.connect(world.tenant, channel, account, token)
    fields: dict[str, str | int] = {"token_source": source, "subscription_id": subscription,
                                    "health": "ok"}
    if expires_ms:
        fields["token_expires_ms"] = expires_ms
    await world.channels.set_connection(world.tenant, record.id, fields)
    return record.id


async def page(world: World, lifetime_s: int = 0) -> tuple[str, str]:
    token = world.graph.login.grant("page", "1010", channel="messenger", lifetime_s=lifetime_s)
    world.graph.login.subscriptions["1010"] = list(MESSAGING_FIELDS)
    return await connected(world, "messenger", "1010", token, "facebook_login", "1010"), token


async def test_a_subscription_meta_dropped_is_made_again(world: World) -> None:
    cid, _ = await page(world)
    assert (await world.watchdog.run()).resubscribed == 0
    world.graph.login.drop_subscription("1010")
    report = await world.watchdog.run()
    assert report.resubscribed == 1
    assert world.graph.login.subscriptions["1010"] == list(MESSAGING_FIELDS)
    record = await world.channels.get(world.tenant, cid)
    assert (record.status, record.health) == ("connected", "ok")


async def test_a_dead_token_marks_the_channel_needs_reconnect_with_the_reason(
        world: World) -> None:
    cid, token = await page(world)
    world.graph.login.invalidate(token)
    report = await world.watchdog.run()
    assert report.needs_reconnect == 1
    record = await world.channels.get(world.tenant, cid)
    assert record.health == "needs_reconnect"
    assert record.status == "disconnected"  # nothing is sent with it any more
    assert record.health_reason and "password" in record.health_reason
    # Checked once: the next run does not mark it again, but still counts it.
    again = await world.watchdog.run()
    assert again.needs_reconnect == 0 and again.health == {"needs_reconnect": 1}


async def test_a_token_expiring_within_seven_days_is_warned_about(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mtdesk")
    cid, token = await page(world, lifetime_s=3 * DAY)
    later = await page_like(world, "2020", lifetime_s=30 * DAY)
    report = await world.watchdog.run()
    assert report.expiring == 1
    record = await world.channels.get(world.tenant, cid)
    assert record.health == "expiring"
    assert record.health_reason and "expires" in record.health_reason
    assert record.token_expires_ms and record.token_expires_ms > time.time() * 1000
    assert (await world.channels.get(world.tenant, later)).health == "ok"
    assert "expires" in caplog.text and token not in caplog.text


async def page_like(world: World, page_id: str, lifetime_s: int) -> str:
    token = world.graph.login.grant("page", page_id, channel="messenger", lifetime_s=lifetime_s)
    world.graph.login.subscriptions[page_id] = list(MESSAGING_FIELDS)
    return await connected(world, "messenger", page_id, token, "facebook_login", page_id)


async def test_an_instagram_login_token_is_refreshed_before_it_expires(world: World) -> None:
    ig = world.graph.login.instagram_user[0]
    token = world.graph.login.grant("ig", ig, channel="instagram", lifetime_s=10 * DAY)
    world.graph.login.subscriptions[ig] = ["messages"]
    cid = await connected(world, "instagram", ig, token, "instagram_login", ig,
                          int((time.time() + 10 * DAY) * 1000))
    report = await world.watchdog.run()
    assert report.refreshed == 1 and report.expiring == 0
    record = await world.channels.get(world.tenant, cid)
    assert record.health == "ok"
    assert record.token_expires_ms and record.token_expires_ms > (time.time() + 59 * DAY) * 1000
    sealed = await world.channels.token_ciphertext(world.tenant, cid)
    assert sealed is not None
    fresh = world.vault.decrypt(sealed, channel_token_aad(world.tenant, cid)).reveal()
    assert fresh != token and fresh in world.graph.login.tokens_of(ig)


async def test_a_whatsapp_business_account_is_subscribed_again(world: World) -> None:
    token = world.graph.login.grant("business", "900100", channel="whatsapp")
    world.graph.register("3030", token, channel="whatsapp")
    cid = await connected(world, "whatsapp", "3030", token, "embedded_signup", "2020")
    report = await world.watchdog.run()
    assert report.resubscribed == 1 and "2020" in world.graph.login.subscriptions
    assert (await world.channels.get(world.tenant, cid)).health == "ok"


async def test_meta_unreachable_leaves_channels_as_they_were(world: World) -> None:
    cid, _ = await page(world)
    await world.graph.stop()
    report = await world.watchdog.run()
    assert report.errors == 1 and report.needs_reconnect == 0
    record = await world.channels.get(world.tenant, cid)
    assert (record.status, record.health) == ("connected", "ok")


async def test_metrics_show_the_watchdogs_findings(world: World) -> None:
    _, token = await page(world)
    world.graph.login.invalidate(token)
    await page_like(world, "2020", lifetime_s=2 * DAY)
    await world.watchdog.run()
    app = build_app(world.settings, redis=world.redis)
    async with TestClient(TestServer(app)) as client:
        text = await (await client.get("/metrics")).text()
    assert 'mtdesk_watchdog_channels{health="needs_reconnect"} 1.0' in text
    assert 'mtdesk_watchdog_channels{health="expiring"} 1.0' in text
    assert "mtdesk_watchdog_needs_reconnect_total 1.0" in text


async def test_the_retention_actors_loop_runs_the_watchdog(world: World) -> None:
    await page(world)
    world.graph.login.drop_subscription("1010")
    host = RetentionHost(world.settings, interval_s=3600)
    await host.ensure_started()
    try:
        for _ in range(200):
            if await world.redis.hget(keys.WATCHDOG_STATUS, "last_run_ms"):
                break
            await asyncio.sleep(0.05)
    finally:
        await host.stop()
    assert await world.redis.hget(keys.WATCHDOG_STATUS, "resubscribed") == b"1"
    assert "1010" in world.graph.login.subscriptions
