"""Every admin route and both signed Meta callbacks of the served app (the one
`mtdesk serve` builds, on a real socket over the test Redis), fed arbitrary path
parameters, queries, bodies and Authorization headers (non-UTF-8 bytes included): never
a 5xx, and every JSON error names its problem."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdesk.cli.compose import build_app
from mtdesk.core.redis import Redis, connect
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.gateway.slowclients import serving_runner
from mtdesk.policy.signed_request import make_signed_request
from mtdesk.policy.vault import generate_key

OPERATOR = "operator-token-for-the-route-fuzz-0123456789"
APP_SECRET = "route-fuzz-app-secret"
REDIS_URL = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class _Served:
    """The whole app served from a thread's own loop (hypothesis tests are synchronous)."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.routes: list[tuple[str, str]] = []
        self._data_dir = data_dir
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.redis: Redis = connect(REDIS_URL)
        await self.redis.flushdb()
        config = Settings(
            redis_url=REDIS_URL, admin_token=Secret(OPERATOR),
            meta_app_secrets=(Secret(APP_SECRET),), meta_verify_token=Secret("verify"),
            encryption_keys=(Secret(generate_key()),), data_dir=str(self._data_dir),
            kb_embedder="lexical",
            auth_failures=1_000_000,  # the fuzz is about input: keep the throttle out of its way
        )
        app = build_app(config, redis=self.redis)
        self.runner = serving_runner(app, config)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            path = info.get("formatter") or info.get("path")
            if path is None and "prefix" in info:  # the admin sub-app
                continue
            if path is not None and (path.startswith("/admin") or "/webhooks/meta/d" in path):
                self.routes.append((route.method, path))
        admin = next(r for r in app.router.resources() if r.canonical == "/admin")
        for route in admin._app.router.routes():  # type: ignore[attr-defined]
            info = route.resource.get_info() if route.resource else {}
            path = info.get("formatter") or info.get("path")
            if path is not None:
                self.routes.append((route.method, path))

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.redis.aclose()

    def __enter__(self) -> _Served:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, str, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if ctype.startswith("text/event-stream"):  # a live feed never ends:
                    return resp.status, ctype, resp.read1()  # its first event will do
                return resp.status, ctype, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()


class _World:
    def __init__(self, served: _Served) -> None:
        self.served = served
        self.key = ""
        self.tenant = ""
        self.renew()

    def renew(self) -> None:
        status, _, body = self.served.call(
            "POST", "/admin/api/v1/tenants", b'{"name": "Fuzz", "email": "f@fuzz.example"}',
            {"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"})
        assert status == 201, body
        made = json.loads(body)
        self.key, self.tenant = made["api_key"], made["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_World]:
    with _Served(tmp_path_factory.mktemp("data")) as served:
        yield _World(served)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
FIELDS = ["name", "email", "channel", "account_id", "access_token", "tenant_id", "provider",
          "model", "temperature", "qa", "url", "crawl", "max_pages", "days", "status",
          "price", "return_url", "password", "company", "text", "role", "token"]
# Printable latin-1 but no controls: urllib sends each as one byte (non-UTF-8 above 0x7f).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=40)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=60),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.just("\ud800"), max_size=5)
    .map(lambda d: json.dumps(d).encode()),  # json.dumps escapes a lone surrogate as \ud800
)
queries = st.dictionaries(
    st.sampled_from(["tenant_id", "limit", "before", "after", "q", "k", "id"]),
    st.text(max_size=12) | st.sampled_from(["١٢", "5", "-1", "0", "99999999999999999999999"]),
    max_size=3,
)
path_params = st.text(max_size=16) | st.sampled_from(["..", "%00", "t_0", "messenger", "1"])


def _fill(path: str, values: list[str], tenant: str) -> str:
    parts = iter(values)

    def one(match: re.Match[str]) -> str:
        value = next(parts, "x")
        return urllib.parse.quote(tenant if value == "TENANT" else value, safe="")
    return re.sub(r"\{[^}]+\}", one, path)


def _check(status: int, ctype: str, body: bytes, what: str) -> None:
    # No Ray here: the cluster view says it cannot reach the actors (503), as it should.
    unavailable = status == 503 and "/admin/api/v1/cluster" in what
    assert status < 500 or unavailable, f"{what} → {status}: {body[:300]!r}"
    if status >= 400 and ctype.startswith("application/json") and body:
        error = json.loads(body)["error"]
        assert set(error) == {"field", "message"} and error["message"], what


@given(data=st.data(), body=bodies, query=queries,
       who=st.sampled_from(["operator", "tenant", "none", "garbage"]), garbage=header_text)
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_every_admin_route_answers_a_4xx_naming_the_problem_or_succeeds(
    world: _World, data: st.DataObject, body: bytes | None, query: dict[str, str], who: str,
    garbage: str,
) -> None:
    method, pattern = data.draw(st.sampled_from(sorted(set(world.served.routes))))
    if method == "*":
        method = data.draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    params = data.draw(st.lists(path_params | st.just("TENANT"), max_size=4))
    path = _fill(pattern, params, world.tenant)
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers = {"Content-Type": data.draw(st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "multipart/form-data",
         "text/plain"]))}
    token = {"operator": OPERATOR, "tenant": world.key, "none": None, "garbage": garbage}[who]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, ctype, answer = world.served.call(method, path, body, headers)
    _check(status, ctype, answer, f"{method} {path}")
    if who == "tenant" and status == 401:  # the fuzz erased or suspended its own tenant
        world.renew()


signed_payloads = st.fixed_dictionaries(
    {}, optional={"algorithm": st.sampled_from(["HMAC-SHA256", "HMAC-SHA1"]) | st.text(max_size=8),
                  "user_id": st.text(max_size=12) | st.integers(),
                  "issued_at": st.integers(min_value=-2, max_value=2**40) | st.text(max_size=6),
                  "extra": json_values},
)


@given(path=st.sampled_from(["/webhooks/meta/data-deletion", "/webhooks/meta/deauthorize"]),
       payload=signed_payloads, signed=st.booleans(), raw=st.binary(max_size=80),
       form=st.booleans())
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_signed_callbacks_answer_a_4xx_naming_the_problem_or_succeed(
    world: _World, path: str, payload: dict[str, Any], signed: bool, raw: bytes, form: bool
) -> None:
    value = make_signed_request(payload, APP_SECRET if signed else "not-the-secret")
    body = urllib.parse.urlencode({"signed_request": value}).encode() if form else raw
    status, ctype, answer = world.served.call(
        "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})
    _check(status, ctype, answer, f"POST {path}")
    if status >= 400:
        assert ctype.startswith("application/json")
