"""Gateway fixtures: a real gateway app over real HTTP (aiohttp's TestServer) on the
test Redis database, with a fake clock just after the fixtures' events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from gateway_support import FRESH_NOW, make_settings

from mtdesk.cli.compose import build_app
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings


@pytest.fixture
def fixture_bodies(fixtures_dir: Path) -> dict[str, bytes]:
    return {f.stem: f.read_bytes() for f in sorted(fixtures_dir.glob("*.json"))}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FRESH_NOW)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
async def client(settings: Settings, redis: Redis, clock: FakeClock) -> AsyncIterator[TestClient]:
    app = build_app(settings, redis=redis, clock=clock)
    async with TestClient(TestServer(app)) as c:
        yield c
