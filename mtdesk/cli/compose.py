"""The composition root's app builder: the ONE aiohttp application of MT Desk.

:func:`build_app` wires the Redis client, settings and clock into the app and adds
the parts' routes. ``mtdesk serve``, the benchmarks and the end-to-end tests all build
the app here, so what they exercise is what production runs.
"""

from __future__ import annotations

from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.redis import Redis, connect
from mtdesk.core.settings import Settings
from mtdesk.gateway.routes import setup_gateway


def make_redis(settings: Settings) -> Redis:
    """The process's Redis client.

    Retries are short: when Redis is down the webhook must answer 503 within
    milliseconds (Meta retries), not after the client's default back-off.
    """
    client = connect(settings.redis_url)
    client.set_retry(Retry(ExponentialBackoff(cap=0.05, base=0.005), 2))
    return client


def build_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    clock: Clock | None = None,
    metrics_dir: str | None = None,
) -> web.Application:
    """The app with every route. A Redis client passed in stays the caller's to close;
    one made here is closed with the app. ``metrics_dir``: prometheus multiprocess
    directory when several worker processes serve one port."""
    # Bodies are read and limited by the routes themselves (the webhook streams its
    # body against settings.max_body_bytes); this is the cap for everything else.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    owned = redis is None
    app[REDIS] = redis if redis is not None else make_redis(settings)
    if owned:
        app.on_cleanup.append(_close_redis)

    setup_gateway(app, multiprocess_dir=metrics_dir)

    # --- LEAD: add the other parts here --------------------------------------------
    # - the admin sub-app:   app.add_subapp("/admin", build_admin_app(...))
    # - actor readiness:     from mtdesk.gateway.routes import add_readiness_check
    #                        add_readiness_check(app, "actors", <async check>)
    # - Stripe / data-deletion webhooks (their owners' setup functions).
    # ---------------------------------------------------------------------------------
    return app


async def _close_redis(app: web.Application) -> None:
    await app[REDIS].aclose()
