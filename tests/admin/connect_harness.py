"""The admin app wired to the fake Graph API's login flows, on a known port (Meta's
dialog sends the browser back to MTDESK_PUBLIC_URL), and a scripted 'browser' that walks
Meta's dialog the way a person does."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from accounts_harness import PASSWORD, account_app, account_settings
from aiohttp.test_utils import TestServer, unused_port

from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.fakes.graph import FakeGraphAPI

API = "/admin/api/v1"


def connect_settings(redis_url: str, graph: FakeGraphAPI, port: int) -> Settings:
    root = graph.root_url
    return account_settings(
        redis_url, None,
        MTDESK_PUBLIC_URL=f"http://127.0.0.1:{port}",
        MTDESK_GRAPH_API_BASE=graph.base_url,
        MTDESK_META_APP_ID=graph.login.app_id,
        MTDESK_META_APP_SECRET=graph.login.app_secret,
        MTDESK_META_LOGIN_CONFIG_ID="cfg-777",
        MTDESK_META_DIALOG_BASE=root,
        MTDESK_INSTAGRAM_DIALOG_BASE=root,
        MTDESK_INSTAGRAM_API_BASE=root,
        MTDESK_INSTAGRAM_GRAPH_BASE=graph.base_url,
    )


@dataclass
class World:
    graph: FakeGraphAPI
    server: TestServer
    base: str


@pytest.fixture(name="world")
async def world_fixture(redis: Redis, redis_url: str) -> AsyncIterator[World]:
    async with FakeGraphAPI(strict=True) as graph:
        port = unused_port()
        server = TestServer(account_app(redis, connect_settings(redis_url, graph, port)),
                            host="127.0.0.1", port=port)
        async with server:
            yield World(graph, server, f"http://127.0.0.1:{port}")


def browser(world: World) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def signed_up(world: World, session: aiohttp.ClientSession,
                    email: str = "ana@shop.test") -> dict[str, object]:
    resp = await session.post(world.base + API + "/auth/signup", json={
        "name": "Ana", "email": email, "password": PASSWORD, "company": "Harbor"})
    assert resp.status == 201, await resp.text()
    data: dict[str, object] = await resp.json()
    return data


def fragment(location: str) -> dict[str, str]:
    assert location.startswith("/admin/#"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).fragment).items()}


async def start(world: World, session: aiohttp.ClientSession, flow: str) -> str:
    """GET /admin/connect/{flow}: the dialog URL it redirects to."""
    resp = await session.get(f"{world.base}/admin/connect/{flow}", allow_redirects=False)
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def decide(session: aiohttp.ClientSession, dialog: str, *, allow: bool = True,
                 untick: tuple[str, ...] = ()) -> str:
    """Open Meta's dialog page, leave the boxes ticked except ``untick``, press Allow or
    Cancel: the callback URL Meta sends the browser to."""
    page = await (await session.get(dialog)).text()
    fields = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page))
    scopes = [s for s in re.findall(r'name="scope" value="([^"]+)"', page) if s not in untick]
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value.replace("&amp;", "&"))
    for scope in scopes:
        form.add_field("scope", scope)
    form.add_field("decision", "allow" if allow else "deny")
    root = dialog.split("/", 3)[:3]
    resp = await session.post("/".join(root) + "/_fake/dialog", data=form,
                              allow_redirects=False)
    assert resp.status == 302
    return resp.headers["Location"]


async def come_back(session: aiohttp.ClientSession, callback: str) -> dict[str, str]:
    """Follow Meta's redirect back to us: the outcome the console is sent to."""
    resp = await session.get(callback, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    return fragment(resp.headers["Location"])


async def channels(world: World, session: aiohttp.ClientSession) -> list[dict[str, object]]:
    listed: dict[str, list[dict[str, object]]] = await (
        await session.get(world.base + API + "/channels")).json()
    return listed["channels"]
