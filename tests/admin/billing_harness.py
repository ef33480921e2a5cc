"""The real app (compose.build_app + admin + Stripe webhook) over the test Redis, with a
FakeStripe as a real server and a fake clock; helpers to sign and post Stripe events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.admin.app import setup_admin
from mtdesk.cli.compose import build_app
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis, connect
from mtdesk.core.settings import Settings
from mtdesk.fakes.stripe import FakeStripe, SignedEvent, build_event, sign_event
from mtdesk.gateway.stripe_webhook import PATH, setup_stripe_webhook
from mtdesk.policy.vault import generate_key

OPERATOR = "operator-token-for-billing-tests"
API_KEY = "sk_test_billing123"
WEBHOOK_SECRET = "whsec_billing_tests"
NOW = 1_780_000_000.0  # 2026-05-28 UTC


def make_settings(redis_url: str, stripe_base: str | None, *, billing: bool = True) -> Settings:
    env = {
        "MTDESK_REDIS_URL": redis_url,
        "MTDESK_ADMIN_TOKEN": OPERATOR,
        "MTDESK_ENCRYPTION_KEYS": generate_key(),
        "MTDESK_PUBLIC_URL": "https://desk.example.com",
    }
    if billing:
        env |= {"MTDESK_STRIPE_API_KEY": API_KEY, "MTDESK_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    if stripe_base:
        env["MTDESK_STRIPE_API_BASE"] = stripe_base
    return Settings.from_env(env, dotenv=None)


def _has_path(app: web.Application, path: str) -> bool:
    return any(
        getattr(r, "canonical", "") == path or str(getattr(r, "canonical", "")).startswith(path)
        for r in app.router.resources()
    )


def make_app(settings: Settings, redis: Redis, clock: FakeClock) -> web.Application:
    """What production serves; mounts admin and the Stripe webhook if build_app does not yet."""
    app = build_app(settings, redis=redis, clock=clock)
    if not _has_path(app, "/admin"):
        setup_admin(app)
    if not _has_path(app, PATH):
        setup_stripe_webhook(app)
    return app


def op() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class World:
    client: TestClient
    stripe: FakeStripe
    clock: FakeClock
    redis: Redis

    async def tenant(self, name: str = "Acme") -> tuple[str, str]:
        """A new tenant: (id, api key)."""
        resp = await self.client.post("/admin/api/v1/tenants", headers=op(),
                                      json={"name": name, "email": "owner@acme.example"})
        assert resp.status == 201, await resp.text()
        data = await resp.json()
        return data["id"], data["api_key"]

    async def billing(self, key: str) -> dict[str, Any]:
        resp = await self.client.get("/admin/api/v1/billing", headers=bearer(key))
        assert resp.status == 200, await resp.text()
        return await resp.json()

    def signed(self, type_: str, obj: dict[str, Any], **kw: Any) -> SignedEvent:
        created = kw.pop("created", int(self.clock.now()))
        return sign_event(build_event(type_, obj, created=created, **kw), WEBHOOK_SECRET,
                          timestamp=int(self.clock.now()))

    async def post_event(self, signed: SignedEvent) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(PATH, data=signed.body, headers=signed.headers)
        return resp.status, await resp.json()


@pytest.fixture(name="world")
async def world_fixture(redis: Redis, redis_url: str) -> AsyncIterator[World]:
    clock = FakeClock(NOW)
    async with FakeStripe(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        fake.now = int(NOW)
        fake.add_price("price_starter", lookup_key="starter")
        fake.add_price("price_growth", lookup_key="growth")
        fake.add_price("price_scale", metadata={"mtdesk_plan": "scale"})
        app = make_app(make_settings(redis_url, fake.base_url), redis, clock)
        async with TestClient(TestServer(app)) as client:
            fake.webhook_url = str(client.make_url(PATH))
            yield World(client, fake, clock, redis)


class LiveApp:
    """The app on a real port in its own thread and loop (for sync hypothesis tests)."""

    def __init__(self, redis_url: str, *, now: float = NOW) -> None:
        self.redis_url = redis_url
        self.now = now
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.port = 0

    def __enter__(self) -> LiveApp:
        self._thread.start()
        assert self._ready.wait(10), "app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        redis = connect(self.redis_url)
        app = make_app(make_settings(self.redis_url, None), redis, FakeClock(self.now))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await redis.aclose()
