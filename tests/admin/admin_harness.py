"""An admin app on a real HTTP server (port 0) over the test Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.admin.app import setup_admin
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.policy.vault import generate_key

OPERATOR = "operator-token-for-tests"


def make_app(
    redis: Redis, *, keys: tuple[str, ...] | None = None, extra: dict[str, str] | None = None
) -> web.Application:
    app = web.Application()
    app[REDIS] = redis
    chosen = keys if keys is not None else (generate_key(),)
    app[SETTINGS] = Settings.from_env(
        {"MTDESK_ADMIN_TOKEN": OPERATOR, "MTDESK_ENCRYPTION_KEYS": ",".join(chosen),
         **(extra or {})},
        dotenv=None,
    )
    app[CLOCK] = FakeClock()
    setup_admin(app)
    return app


@pytest.fixture(name="client")
async def client_fixture(redis: Redis) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(redis))) as c:
        yield c


def op() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
