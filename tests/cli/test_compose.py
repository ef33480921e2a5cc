"""The one app of `mtdesk serve`: every part's routes, the shards' and the retention
sweep's numbers on /metrics, and /readyz waiting for the conversation shards."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from mtdesk.actors.stats import ShardMetrics, publish_shard_stats
from mtdesk.cli.compose import build_app
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.policy.retention import RetentionSweep


def _settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, meta_app_secrets=(Secret("s"),),
                    meta_verify_token=Secret("v"), admin_token=Secret("op"), shards=1)


async def test_metrics_carry_the_shards_and_retention_and_readyz_waits_for_shards(
    redis: Redis, redis_url: str
) -> None:
    settings = _settings(redis_url)
    app = build_app(settings, redis=redis, expect_shards=True)
    async with TestClient(TestServer(app)) as client:
        not_ready = await client.get("/readyz")
        assert not_ready.status == 503
        assert "shards" in (await not_ready.json())["checks"]

        shard = ShardMetrics(0)
        shard.set_active(7, 0)
        await publish_shard_stats(redis, shard, [0])
        await RetentionSweep(redis, settings, SystemClock()).run()

        assert (await client.get("/readyz")).status == 200
        text = await (await client.get("/metrics")).text()
        assert 'mtdesk_shard_active_conversations{shard="0"} 7.0' in text
        assert "mtdesk_retention_last_run_timestamp_seconds" in text
        assert "mtdesk_gateway_" in text  # the gateway's own series are still there


async def test_every_part_of_the_contract_is_routed(redis: Redis, redis_url: str) -> None:
    app = build_app(_settings(redis_url), redis=redis)
    async with TestClient(TestServer(app)) as client:
        for method, path in [
            ("GET", "/webhooks/meta"), ("POST", "/webhooks/meta"),
            ("POST", "/webhooks/meta/data-deletion"), ("POST", "/webhooks/meta/deauthorize"),
            ("GET", "/healthz"), ("GET", "/readyz"),
            ("GET", "/metrics"), ("GET", "/admin/"), ("POST", "/admin/api/v1/tenants"),
            ("POST", "/admin/api/v1/channels"), ("POST", "/admin/api/v1/knowledge"),
            ("PUT", "/admin/api/v1/bot"), ("GET", "/admin/api/v1/conversations"),
            ("GET", "/admin/api/v1/export"), ("DELETE", "/admin/api/v1/account"),
        ]:
            resp = await client.request(method, path)
            # Unauthenticated or empty requests are refused, but every path exists.
            assert resp.status != 404, (method, path)
            assert resp.status < 500, (method, path, resp.status)
        # Billing is off in these settings: the Stripe webhook says so rather than 404-ing
        # like an unknown path.
        stripe = await client.post("/webhooks/stripe")
        assert stripe.status == 404
        assert "not configured" in (await stripe.json())["error"]["message"]
