"""Arbitrary JSON into the provisioning validators and routes: a 2xx or a 4xx naming a
field, never a 5xx or a crash."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from admin_harness import OPERATOR, make_app
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdesk.core.errors import ValidationError
from mtdesk.core.redis import connect
from mtdesk.core.tenants import (
    parse_bot_config,
    validate_account_id,
    validate_channel,
    validate_email,
    validate_name,
    validate_token,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12,
)
BOT_KEYS = ["provider", "model", "system_prompt", "temperature", "max_tokens", "fallback",
            "grounding", "fallback_message", "min_score", "enabled", "greeting", "other"]
bot_bodies = st.dictionaries(
    st.sampled_from(BOT_KEYS),
    json_values | st.sampled_from(["extractive", "openai", "openai:gpt", "general", 0.5, 1, 3]),
    max_size=6,
)


@given(bot_bodies)
@settings(max_examples=300, deadline=None)
def test_bot_validator_accepts_or_names_a_field(body: dict[str, Any]) -> None:
    try:
        cfg = parse_bot_config(body, ("openai", "openrouter"))
    except ValidationError as exc:
        assert exc.field
        return
    assert 0 <= cfg.temperature <= 2
    assert cfg.provider == "extractive" or cfg.model


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_field_validators_accept_or_name_the_field(value: object) -> None:
    for check, field in ((validate_name, "name"), (validate_email, "email"),
                         (validate_channel, "channel"), (validate_account_id, "account_id"),
                         (validate_token, "access_token")):
        try:
            check(value)
        except ValidationError as exc:
            assert exc.field == field


class _Server:
    """The admin app served from a thread's own event loop, for synchronous hypothesis."""

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._redis_url = redis_url
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.redis = connect(self._redis_url)
        await self.redis.flushdb()
        self.runner = web.AppRunner(make_app(self.redis), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.redis.aclose()

    def __enter__(self) -> _Server:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, method: str, path: str, body: bytes | None, token: str) -> tuple[int, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/admin/api/v1{path}", data=body, method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[tuple[_Server, str]]:
    with _Server(redis_url) as srv:
        status, body = srv.call("POST", "/tenants",
                                b'{"name": "Fuzz", "email": "f@fuzz.example"}', OPERATOR)
        assert status == 201
        yield srv, body["api_key"]


@pytest.fixture(scope="module")
def redis_url() -> str:  # the module-scoped server needs a module-scoped URL
    return os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["name", "email", "channel", "account_id", "access_token",
                                     "connected_by", "tenant_id", *BOT_KEYS]),
                    json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=40),
)


@given(st.sampled_from([("POST", "/tenants", "op"), ("POST", "/channels", "tenant"),
                        ("POST", "/channels", "op"), ("PUT", "/bot", "tenant"),
                        ("PUT", "/bot", "op")]),
       bodies)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_body_gets_2xx_or_a_4xx_naming_a_field(
    server: tuple[_Server, str], route: tuple[str, str, str], body: bytes
) -> None:
    srv, api_key = server
    method, path, who = route
    status, answer = srv.call(method, path, body, OPERATOR if who == "op" else api_key)
    assert status < 500, answer
    if status >= 400:
        assert set(answer["error"]) == {"field", "message"}
        assert answer["error"]["message"]
