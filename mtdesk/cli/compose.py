"""The composition root's app builder: the ONE aiohttp application of MT Desk.

:func:`build_app` wires the Redis client, settings and clock into the app and adds
every part's routes: the Meta webhook (with health and metrics), Meta's data-deletion
and deauthorize callbacks, the Stripe webhook, and the admin API and web UI.
``mtdesk serve``, ``mtdesk demo``, the benchmarks and the end-to-end tests all build the
app here, so what they exercise is what production runs.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from mtdesk.actors.stats import live_shards, read_shard_stats, render_shard_stats
from mtdesk.admin.app import setup_admin
from mtdesk.core import cluster
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS, cipher_of
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.redis import Redis, connect_to
from mtdesk.core.settings import Settings
from mtdesk.gateway.meta_deletion import setup_meta_deletion
from mtdesk.gateway.routes import add_metrics_source, add_readiness_check, setup_gateway
from mtdesk.gateway.stripe_webhook import setup_stripe_webhook
from mtdesk.policy.retention import RetentionCollector
from mtdesk.policy.watchdog import WatchdogCollector


def make_redis(settings: Settings) -> Redis:
    """The process's Redis client.

    Retries are short: when Redis is down the webhook must answer 503 within
    milliseconds (Meta retries), not after the client's default back-off.
    """
    client = connect_to(settings.redis_url, cluster=settings.redis_cluster)
    client.set_retry(Retry(ExponentialBackoff(cap=0.05, base=0.005), 2))
    return client


def build_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    clock: Clock | None = None,
    metrics_dir: str | None = None,
    expect_shards: bool = False,
) -> web.Application:
    """The app with every route. A Redis client passed in stays the caller's to close;
    one made here is closed with the app. ``metrics_dir``: prometheus multiprocess
    directory when several worker processes serve one port. ``expect_shards``: ``/readyz``
    also requires every conversation shard to have reported in the last 20 s (serve)."""
    # Bodies are read and limited by the routes themselves (the webhook streams its
    # body against settings.max_body_bytes); this is the cap for everything else.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    owned = redis is None
    app[REDIS] = redis if redis is not None else make_redis(settings)
    if owned:
        app.on_cleanup.append(_close_redis)
    cipher = cipher_of(app)  # one cache of tenant data keys for every route of the process
    app.on_cleanup.append(lambda _app: cipher.aclose())

    setup_gateway(app, multiprocess_dir=metrics_dir)
    keystore = cipher.keystore
    if keystore is not None:
        async def keystore_ready() -> None:
            await keystore.ping()

        # Not ready without it: events of tenants whose key is not cached answer 503.
        add_readiness_check(app, "keystore", keystore_ready)
    setup_meta_deletion(app)
    setup_stripe_webhook(app)
    setup_admin(app)

    # A deployment runs at most one shard per partition.
    shard_count = min(settings.shards, settings.partitions)

    async def shard_metrics() -> bytes:
        return render_shard_stats(await read_shard_stats(app[REDIS], shard_count))

    add_metrics_source(app, shard_metrics)

    async def cluster_metrics() -> bytes:
        return cluster.render_metrics(await cluster.read(app[REDIS]))

    add_metrics_source(app, cluster_metrics)
    retention = RetentionCollector()
    retention_registry = CollectorRegistry(auto_describe=False)
    retention_registry.register(retention)

    async def retention_metrics() -> bytes:
        await retention.refresh(app[REDIS])
        return generate_latest(retention_registry)

    add_metrics_source(app, retention_metrics)
    connections = WatchdogCollector()
    connections_registry = CollectorRegistry(auto_describe=False)
    connections_registry.register(connections)

    async def watchdog_metrics() -> bytes:
        await connections.refresh(app[REDIS])
        return generate_latest(connections_registry)

    add_metrics_source(app, watchdog_metrics)
    if expect_shards:
        async def shards_ready() -> None:
            live = await live_shards(app[REDIS], shards=shard_count)
            missing = sorted(set(range(shard_count)) - set(live))
            if missing:
                raise RuntimeError(f"conversation shards not reporting: {missing}")

        add_readiness_check(app, "shards", shards_ready)
    return app


async def _close_redis(app: web.Application) -> None:
    await app[REDIS].aclose()
