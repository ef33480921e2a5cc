"""Shared fixtures: a real Redis (its own database, flushed per test) and, for the
integration tests marked ``ray``, one real local Ray instance per session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from keystore_server import KeyStoreServer

from mtdesk.core.redis import Redis, connect

# CI replays the same examples on every run (a red build must be reproducible, not the luck of
# a draw); a developer's run explores new ones. `HYPOTHESIS_PROFILE=explore` forces exploring.
# No per-example deadline: speed is measured by `mtdesk bench`, and on a shared machine a
# parser's example can take longer than 200 ms without anything being wrong.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
hypothesis_settings.register_profile("explore", deadline=None)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "explore"))

REDIS_URL = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "meta"
if not FIXTURES.is_dir():  # the project ships a copy for clones without ../shared
    FIXTURES = Path(__file__).resolve().parent / "fixtures" / "meta"


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def keystore_server(tmp_path: Path) -> Iterator[KeyStoreServer]:
    """A started redis-server of the test's own for ``MTDESK_KEYSTORE_URL``."""
    server = KeyStoreServer(tmp_path / "keystore")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh instance of the test session's own, never one a
        # `ray start` on this machine left behind (ray.init() alone would join that).
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
