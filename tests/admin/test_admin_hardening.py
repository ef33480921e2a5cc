"""Hostile input against the running admin API: bad bytes get a 4xx naming the problem
and leave nothing behind; failed authentication is throttled for every worker; a
malformed request is logged as one line without header values."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admin_harness import OPERATOR, bearer, make_app, op
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.gateway.slowclients import serving_runner

API = "/admin/api/v1"


@pytest.fixture(name="client")
async def client_fixture(redis: Redis, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = make_app(redis, extra={"MTDESK_DATA_DIR": str(tmp_path), "MTDESK_KB_EMBEDDER": "lexical"})
    async with TestClient(TestServer(app)) as c:
        yield c


async def _tenant(client: TestClient) -> tuple[str, str]:
    r = await client.post(f"{API}/tenants", json={"name": "Acme", "email": "a@acme.example"},
                          headers=op())
    body = await r.json()
    return body["id"], body["api_key"]


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_non_utf8_byte_in_a_bearer_key_is_a_401_not_a_500(client: TestClient) -> None:
    port = client.server.port
    assert port is not None
    answer = await _raw(port, b"GET /admin/api/v1/tenant HTTP/1.1\r\nHost: x\r\n"
                              b"Authorization: Bearer mtd_\xff\xfeabc\r\nConnection: close\r\n\r\n")
    assert _status(answer) == 401
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["field"] == "Authorization" and "ASCII" in error["message"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/tenants", b'{"name": "\\ud800", "email": "a@b.example"}', "name"),
    ("/channels", b'{"channel": "messenger", "account_id": "1", "access_token": "t\\udfff"}',
     "access_token"),
    ("/knowledge", b'{"qa": [{"q": "fine", "a": "\\ud83d"}]}', "qa[0].a"),
    ("/knowledge", b'{"url": "https://example.com/\\ud800"}', "url"),
])
async def test_a_lone_surrogate_is_a_422_naming_the_field_and_stores_nothing(
    client: TestClient, redis: Redis, path: str, body: bytes, field: str
) -> None:
    tid, key = await _tenant(client)
    before = sorted([k async for k in redis.scan_iter(match="mt:*")])
    who = op() if path == "/tenants" else bearer(key)
    r = await client.post(f"{API}{path}", data=body,
                          headers=who | {"Content-Type": "application/json"})
    assert r.status == 422
    error = (await r.json())["error"]
    assert error["field"] == field and "surrogate" in error["message"]
    assert sorted([k async for k in redis.scan_iter(match="mt:*")]) == before


async def test_a_lone_surrogate_in_the_bot_is_a_422_and_the_bot_is_unchanged(
    client: TestClient,
) -> None:
    _, key = await _tenant(client)
    r = await client.put(f"{API}/bot", data=b'{"system_prompt": "Hi \\udc00"}',
                         headers=bearer(key) | {"Content-Type": "application/json"})
    assert r.status == 422 and (await r.json())["error"]["field"] == "system_prompt"
    bot = await (await client.get(f"{API}/bot", headers=bearer(key))).json()
    assert bot["system_prompt"] == "You are a helpful customer support assistant."


@pytest.mark.parametrize("before", ["١٢٣", "²", "12\n", "-1", "1.5"])
async def test_a_page_mark_that_is_not_ascii_digits_is_a_400(client: TestClient, before: str) -> None:
    _, key = await _tenant(client)
    r = await client.get(f"{API}/conversations", params={"before": before}, headers=bearer(key))
    assert r.status == 400 and (await r.json())["error"]["field"] == "before"


def _multipart(filename: bytes) -> tuple[bytes, str]:
    boundary = "XyZbound"
    body = (f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            + b"Content-Type: text/plain\r\n\r\nOur shop opens at nine.\r\n"
            + f"--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("filename", [b"..", b".", b"notes\x00.txt", b"a\x07b.txt", b"../.."])
async def test_an_upload_name_that_cannot_be_a_file_is_refused_and_leaves_no_source(
    client: TestClient, tmp_path: Path, filename: bytes
) -> None:
    _, key = await _tenant(client)
    body, ctype = _multipart(filename)
    r = await client.post(f"{API}/knowledge", data=body,
                          headers=bearer(key) | {"Content-Type": ctype})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["field"] in ("filename", "file")
    listed = await (await client.get(f"{API}/knowledge", headers=bearer(key))).json()
    assert listed["sources"] == []
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").rglob("*.*"))


async def test_an_upload_path_keeps_only_its_last_part(client: TestClient) -> None:
    _, key = await _tenant(client)
    body, ctype = _multipart(b"../../etc/hours.txt")
    r = await client.post(f"{API}/knowledge", data=body,
                          headers=bearer(key) | {"Content-Type": ctype})
    assert r.status == 202 and (await r.json())["name"] == "hours.txt"


# --- throttling ---------------------------------------------------------------------------
async def test_failed_keys_are_throttled_per_prefix_and_per_address_across_workers(
    redis: Redis,
) -> None:
    extra = {"MTDESK_AUTH_FAILURES": "3", "MTDESK_AUTH_FAILURE_WINDOW_S": "120"}
    async with TestClient(TestServer(make_app(redis, extra=extra))) as one, \
            TestClient(TestServer(make_app(redis, extra=extra))) as two:
        guess = "mtd_AAAAAAAAguess"
        for i in range(3):
            r = await one.get(f"{API}/tenant", headers=bearer(f"{guess}{i}"))
            assert r.status == 401
        # The same key prefix on another worker: blocked before any comparison.
        blocked = await two.get(f"{API}/tenant", headers=bearer(f"{guess}9"))
        assert blocked.status == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 120
        assert (await blocked.json())["error"]["field"] == "Authorization"
        # The operator's own token has another prefix and this address is under its limit.
        assert (await two.get(f"{API}/tenants", headers=op())).status == 200
        # Ten times the limit from one address, whatever the keys: the address is blocked.
        for i in range(27):
            await one.get(f"{API}/tenant", headers=bearer(f"mtd_{i:08d}other"))
        assert (await two.get(f"{API}/tenants", headers=op())).status == 429
    # Redis holds digests, never a guessed key's characters.
    stored = [k async for k in redis.scan_iter(match="mt:*")]
    assert stored and not any(b"guess" in k or b"AAAA" in k for k in stored)
    assert all(k.startswith(keys.login_failures("bearer", "").encode()[:-1]) for k in stored)


# --- logging of malformed requests --------------------------------------------------------
async def test_a_malformed_authorization_header_is_logged_as_one_line_without_it(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(redis)
    runner = serving_runner(app, Settings())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    caplog.set_level(logging.DEBUG)
    try:
        for _ in range(3):
            answer = await _raw(port, b"GET /admin/api/v1/tenant HTTP/1.1\r\nHost: x\r\n"
                                      b"Authorization: Bearer " + OPERATOR.encode()
                                      + b"\x01SECRETPART\r\n\r\n")
            assert _status(answer) == 400
    finally:
        await runner.cleanup()
    assert OPERATOR not in caplog.text and "SECRETPART" not in caplog.text
    refused = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(refused) == 3
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in refused)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
