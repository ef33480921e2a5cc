"""The knowledge API over real HTTP: add, watch the status, search, delete; errors say why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from kb_harness import admin_client

from mtdesk.core.redis import Redis

OPERATOR = "op-token-kb-tests"
API = "/admin/api/v1"


@pytest.fixture
async def client(redis: Redis, tmp_path: Path) -> AsyncIterator[TestClient]:
    async with admin_client(redis, tmp_path, OPERATOR) as c:
        yield c


async def tenant_key(client: TestClient) -> dict[str, str]:
    resp = await client.post(f"{API}/tenants", json={"name": "Acme", "email": "ops@acme.test"},
                             headers={"Authorization": f"Bearer {OPERATOR}"})
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['api_key']}"}


async def wait_ready(client: TestClient, auth: dict[str, str], sid: str) -> dict[str, Any]:
    for _ in range(200):
        info = await (await client.get(f"{API}/knowledge/{sid}", headers=auth)).json()
        if info["status"] in ("ready", "failed"):
            return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"source {sid} stuck: {info}")


async def test_qa_pairs_added_over_http_are_searchable(client: TestClient) -> None:
    auth = await tenant_key(client)
    resp = await client.post(f"{API}/knowledge", headers=auth, json={
        "qa": [{"q": "Do you ship abroad?", "a": "Yes, to 40 countries."}], "name": "FAQ"})
    assert resp.status == 202
    info = await wait_ready(client, auth, (await resp.json())["id"])
    assert info["status"] == "ready" and info["chunks"] == 1
    found = await (await client.get(f"{API}/knowledge/search", params={"q": "ship abroad"}, headers=auth)).json()
    assert found["passages"][0]["answer"] == "Yes, to 40 countries."
    listing = await (await client.get(f"{API}/knowledge", headers=auth)).json()
    assert [s["name"] for s in listing["sources"]] == ["FAQ"]


async def test_a_multipart_file_upload_becomes_a_source(client: TestClient) -> None:
    auth = await tenant_key(client)
    form = aiohttp.FormData()
    form.add_field("file", b"# Hours\n\nWe open at nine.\n", filename="hours.md", content_type="text/markdown")
    resp = await client.post(f"{API}/knowledge", headers=auth, data=form)
    assert resp.status == 202, await resp.text()
    info = await wait_ready(client, auth, (await resp.json())["id"])
    assert info["name"] == "hours.md" and info["status"] == "ready"
    deleted = await client.delete(f"{API}/knowledge/{info['id']}", headers=auth)
    assert (await deleted.json()) == {"deleted": info["id"], "chunks": 1}
    assert (await client.get(f"{API}/knowledge/{info['id']}", headers=auth)).status == 404


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "url", "metadata"),
        ({"url": "http://10.0.0.5/"}, "url", "private"),
        ({"qa": []}, "qa", "non-empty"),
        ({"qa": [{"q": "x"}]}, "qa[0].a", "non-empty"),
        ({"url": "https://example.com", "max_pages": 0, "crawl": True}, "max_pages", ">= 1"),
        ({"nonsense": 1}, "nonsense", "unknown"),
    ],
)
async def test_bad_requests_get_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, words: str
) -> None:
    auth = await tenant_key(client)
    resp = await client.post(f"{API}/knowledge", headers=auth, json=body)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["field"] == field and words in error["message"]


async def test_an_empty_upload_is_a_400_and_a_tenant_sees_only_its_own_sources(client: TestClient) -> None:
    auth = await tenant_key(client)
    other = await tenant_key(client)
    form = aiohttp.FormData()
    form.add_field("file", b"", filename="empty.txt", content_type="text/plain")
    resp = await client.post(f"{API}/knowledge", headers=auth, data=form)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "file"
    made = await client.post(f"{API}/knowledge", headers=auth, json={"qa": [{"q": "a?", "a": "b"}]})
    sid = (await made.json())["id"]
    assert (await client.get(f"{API}/knowledge/{sid}", headers=other)).status == 404
    assert (await client.delete(f"{API}/knowledge/{sid}", headers=other)).status == 404
