"""The web console in a real (headless) Chromium against the real app on a real port and
the test Redis: a tenant signs in with its key, connects a channel, edits the bot,
adds knowledge and reads a conversation; a wrong key is told so.

Needs Debian's chromium (``apt-get install -y chromium``) and the ``playwright`` package
(the ``test`` extra); Playwright's own browser download is not used.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mtdesk.cli.compose import build_app
from mtdesk.core.clock import SystemClock
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels
from mtdesk.policy.vault import generate_key

CHROMIUM = "/usr/bin/chromium"
_missing = [what for what, present in (
    (f"{CHROMIUM} (apt-get install -y chromium)", os.path.exists(CHROMIUM)),
    ("the playwright package (pip install -e '.[test]')",
     importlib.util.find_spec("playwright") is not None),
) if not present]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason="browser test needs " + " and ".join(_missing)
)

OPERATOR = "operator-token-for-browser-tests"
API = "/admin/api/v1"
TIMEOUT_MS = 15_000


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = Settings.from_env({
        "MTDESK_REDIS_URL": redis_url, "MTDESK_ADMIN_TOKEN": OPERATOR,
        "MTDESK_ENCRYPTION_KEYS": generate_key(), "MTDESK_META_APP_SECRET": "s",
        "MTDESK_META_VERIFY_TOKEN": "v", "MTDESK_KB_EMBEDDER": "lexical",
        "MTDESK_DATA_DIR": str(tmp_path / "data"),
    }, dotenv=None)
    srv = TestServer(build_app(settings, redis=redis), host="127.0.0.1")
    async with srv:
        yield srv


@pytest.fixture
async def page(server: TestServer) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox"])
        context = await browser.new_context()
        tab = await context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        tab.on("pageerror", lambda exc: problems.append(str(exc)))
        tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        try:
            yield tab
        finally:
            await browser.close()
        # no script error and nothing the CSP refused (the API's 4xx answers the tests
        # ask for, and the favicon's 404, are logged as failed loads: not problems)
        assert [p for p in problems if not p.startswith("Failed to load resource")] == []


async def _api(server: TestServer, method: str, path: str, token: str,
               body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
        method, str(server.make_url(path)), json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        return r.status, await r.json()


async def _tenant(server: TestServer) -> tuple[str, str]:
    status, body = await _api(server, "POST", f"{API}/tenants", OPERATOR,
                              {"name": "Acme <Shoes>", "email": "owner@acme.example"})
    assert status == 201
    return body["id"], body["api_key"]


async def _sign_in(page: Any, server: TestServer, token: str) -> None:
    await page.goto(str(server.make_url("/admin/")))
    await page.fill("#token", token)
    await page.click("#signin-form button[type=submit]")


async def test_a_tenant_runs_its_desk_from_the_console(
    server: TestServer, page: Any, redis: Redis
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    # a field the console does not show, to see that saving the bot keeps it
    await _api(server, "PUT", f"{API}/bot", key, {"temperature": 0.9})
    # a channel whose token Meta rejected, through the real store
    status, gone = await _api(server, "POST", f"{API}/channels", key, {
        "channel": "instagram", "account_id": "17841400000000", "access_token": "old"})
    assert status == 201
    await Channels(redis, SystemClock()).mark_token_invalid(
        tid, gone["id"], "Graph error 190: token expired")
    # a conversation, written by the real message store
    conv = "whatsapp:106540352242922:15551234567"
    store = MessageStore(redis)
    for i, (direction, kind, text) in enumerate([
        ("in", "message", "Do you sell <b>red</b> shoes & boots?"),
        ("out", "reply", "Yes: red shoes in sizes 36-45."),
    ]):
        await store.append(tid, StoredMessage(
            direction=direction, message_id=f"m{i}", kind=kind, channel="whatsapp",  # type: ignore[arg-type]
            account_id="106540352242922", user_id="15551234567",
            timestamp_ms=1_764_180_000_000 + i, text=text), now_ms=1_764_180_000_000 + i)

    await _sign_in(page, server, key)
    # signed in: the tenant's name, shown as text (not markup), and its channels
    await expect(page.locator("#who")).to_have_text(f"Acme <Shoes> ({tid})")
    row = page.locator(f"#channel-rows tr[data-id='{gone['id']}']")
    await expect(row).to_contain_text("disconnected")
    await expect(row).to_contain_text("Graph error 190: token expired")
    # the key is in this tab's sessionStorage only: no cookie, not in the URL
    assert await page.evaluate("sessionStorage.getItem('mtdesk.admin.token')") == key
    assert await page.context.cookies() == []
    assert key not in page.url

    # connect a channel: the API's 400 names the field, then a good one is listed
    form = page.locator("#channel-form")
    await form.locator("select[name=channel]").select_option("whatsapp")
    await form.locator("input[name=account_id]").fill("not-digits")
    await form.locator("input[name=access_token]").fill("EAAG-token")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#channels-status")).to_contain_text("account_id:")
    await expect(page.locator("#channels-status")).to_contain_text("HTTP 400")
    await form.locator("input[name=account_id]").fill("106540352242922")
    await form.locator("input[name=access_token]").fill("EAAG-token")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#channels-status")).to_contain_text("Connected whatsapp")
    await expect(page.locator("#channel-rows tr", has_text="106540352242922")).to_contain_text(
        "connected")
    _, listed = await _api(server, "GET", f"{API}/channels", key)
    assert {(c["channel"], c["account_id"], c["status"]) for c in listed["channels"]} >= {
        ("whatsapp", "106540352242922", "connected")}

    # edit the bot; the API has it, and the field the form does not show is kept
    bot = page.locator("#bot-form")
    await expect(bot.locator("input[name=provider]")).to_have_value("extractive")
    await bot.locator("textarea[name=system_prompt]").fill("You answer for Acme Shoes.")
    await bot.locator("select[name=grounding]").select_option("general")
    await bot.locator("textarea[name=fallback_message]").fill("A person will write back.")
    await bot.locator("input[name=greeting]").fill("Hi from Acme!")
    await bot.locator("input[name=enabled]").uncheck()
    await bot.locator("button[type=submit]").click()
    await expect(page.locator("#bot-status")).to_have_text("Saved.")
    _, stored = await _api(server, "GET", f"{API}/bot", key)
    assert stored["system_prompt"] == "You answer for Acme Shoes."
    assert stored["grounding"] == "general"
    assert stored["fallback_message"] == "A person will write back."
    assert stored["greeting"] == "Hi from Acme!"
    assert stored["enabled"] is False
    assert stored["temperature"] == 0.9
    # a bad provider: the API's message, naming the field
    await bot.locator("input[name=provider]").fill("nosuch")
    await bot.locator("button[type=submit]").click()
    await expect(page.locator("#bot-status")).to_contain_text("provider:")

    # knowledge: a Q&A pair is listed and becomes ready; then it can be deleted
    qa = page.locator("#qa-form")
    await qa.locator("input[name=q]").fill("When are you open?")
    await qa.locator("textarea[name=a]").fill("Monday to Saturday, 10:00-18:00.")
    await qa.locator("button[type=submit]").click()
    source = page.locator("#source-rows tr").first
    await expect(source.locator(".source-status")).to_have_text("ready")
    await expect(source).to_contain_text("qa")
    _, sources = await _api(server, "GET", f"{API}/knowledge", key)
    assert [s["status"] for s in sources["sources"]] == ["ready"]
    await source.locator("button").click()  # arms
    await source.locator("button", has_text="Confirm delete").click()
    await expect(page.locator("#sources-empty")).to_be_visible()
    _, sources = await _api(server, "GET", f"{API}/knowledge", key)
    assert sources["sources"] == []

    # conversations: the seeded one opens with its messages, text shown as text
    conv_row = page.locator("#conversation-rows tr", has_text=conv)
    await conv_row.locator("button", has_text="Open").click()
    await expect(page.locator("#thread-title")).to_have_text(conv)
    messages = page.locator("#messages li")
    await expect(messages).to_have_count(2)
    await expect(messages.nth(0)).to_contain_text("Do you sell <b>red</b> shoes & boots?")
    await expect(messages.nth(0)).to_have_class(re.compile(r"\bin\b"))
    await expect(messages.nth(1)).to_contain_text("Yes: red shoes in sizes 36-45.")
    assert await page.locator("#messages b").count() == 0

    # signing out forgets the key
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('mtdesk.admin.token')") is None


async def test_a_wrong_key_is_told_401_and_nothing_is_kept(
    server: TestServer, page: Any
) -> None:
    from playwright.async_api import expect

    await _sign_in(page, server, "mtd_not-a-real-key")
    error = page.locator("#signin-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("not accepted (401)")
    await expect(page.locator("#console")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('mtdesk.admin.token')") is None


async def test_the_operator_picks_a_tenant_and_sees_its_bot(
    server: TestServer, page: Any
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    await _api(server, "PUT", f"{API}/bot", key, {"system_prompt": "Acme's own prompt"})
    await _sign_in(page, server, OPERATOR)
    await expect(page.locator("#who")).to_have_text("operator")
    await expect(page.locator("#tenant-select")).to_have_value(tid)
    await expect(page.locator("#bot-form textarea[name=system_prompt]")).to_have_value(
        "Acme's own prompt")
