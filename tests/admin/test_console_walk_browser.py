"""The product walked as a person, in headless Chromium against the whole desk on real
ports: the app (gateway and admin) over the test Redis, a conversation shard answering
in this process, the fake Graph API with Meta's login dialog. Ana signs up, connects her
Page through Meta's (fake) dialog, adds a Q&A pair; a customer writes on Messenger (a
signed webhook); Ana sees the message and the bot's answer from her Q&A arrive live in
the inbox, replies as a person, sees the bot stay silent for the customer's next
message, then today's bars in the analytics chart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from accounts_harness import PASSWORD, account_settings
from aiohttp.test_utils import TestServer, unused_port
from browser_harness import browser_tab, needs_browser

from mtdesk.actors.conversation_shard import ConversationShard
from mtdesk.actors.services import build_shard_services
from mtdesk.cli.compose import build_app
from mtdesk.core import analytics
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.fakes.graph import FakeGraphAPI
from mtdesk.gateway.signature import sign
from mtdesk.retrieval.search import local_retriever
from mtdesk.retrieval.store import KnowledgeStore

pytestmark = needs_browser

PAGE = "1010"  # the Page the fake dialog offers
CUSTOMER = "24680135792468"


@pytest.fixture(name="graph")
async def graph_fixture() -> AsyncIterator[FakeGraphAPI]:
    async with FakeGraphAPI(strict=True) as graph:
        yield graph


@pytest.fixture(name="settings")
def settings_fixture(redis_url: str, graph: FakeGraphAPI, tmp_path: Path) -> Settings:
    port = unused_port()
    return account_settings(
        redis_url, None, MTDESK_PUBLIC_URL=f"http://127.0.0.1:{port}", MTDESK_PORT=str(port),
        MTDESK_GRAPH_API_BASE=graph.base_url, MTDESK_META_APP_ID=graph.login.app_id,
        MTDESK_META_APP_SECRET=graph.login.app_secret, MTDESK_META_DIALOG_BASE=graph.root_url,
        MTDESK_META_VERIFY_TOKEN="v", MTDESK_KB_EMBEDDER="lexical",
        MTDESK_DATA_DIR=str(tmp_path / "data"))


@pytest.fixture(name="server")
async def server_fixture(redis: Redis, settings: Settings) -> AsyncIterator[TestServer]:
    srv = TestServer(build_app(settings, redis=redis), host="127.0.0.1", port=settings.port)
    async with srv:
        yield srv


@pytest.fixture(name="shard")
async def shard_fixture(redis: Redis, settings: Settings) -> AsyncIterator[ConversationShard]:
    """The shard half of the desk (in production a Ray actor): reads what the gateway
    queued, answers from the tenant's knowledge, counts the analytics."""
    store = KnowledgeStore(redis, cipher=TenantCipher.from_settings(redis, settings))
    services = await build_shard_services(settings, retriever=local_retriever(store, settings))
    shard = ConversationShard(0, list(range(settings.partitions)), services, block_ms=100,
                              analytics_interval_s=0.2)
    await shard.start()
    yield shard
    await shard.stop(drain_timeout_s=5)
    await services.aclose()


async def _customer_writes(server: TestServer, secret: str, text: str) -> None:
    """A signed Messenger webhook, as Meta sends it."""
    now = int(time.time() * 1000)
    body = json.dumps({"object": "page", "entry": [{"id": PAGE, "time": now, "messaging": [{
        "sender": {"id": CUSTOMER}, "recipient": {"id": PAGE}, "timestamp": now,
        "message": {"mid": f"m_{now}", "text": text}}]}]}).encode()
    async with aiohttp.ClientSession() as http, http.post(
            str(server.make_url("/webhooks/meta")), data=body,
            headers={"X-Hub-Signature-256": sign(body, secret),
                     "Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()


async def _go(page: Any, section: str) -> None:
    from playwright.async_api import expect

    await page.click(f"#sections a[data-section={section}]")
    await expect(page.locator(f"section#{section}")).to_be_visible()


async def test_a_person_signs_up_connects_a_page_trains_the_bot_and_sees_the_day(
    server: TestServer, shard: ConversationShard, graph: FakeGraphAPI, redis: Redis,
    settings: Settings,
) -> None:
    from playwright.async_api import expect

    async with browser_tab() as page:
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(str(server.make_url("/admin/")))
        # sign up
        form = page.locator("#signup-form")
        await form.locator("[name=name]").fill("Ana")
        await form.locator("[name=company]").fill("Harbor Café")
        await form.locator("[name=email]").fill("ana@harbor.test")
        await form.locator("[name=password]").fill(PASSWORD)
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#who")).to_contain_text("Ana (owner)")
        await expect(page.locator("#inbox")).to_be_visible()

        # connect the Page through Meta's dialog: back on the channels page
        await _go(page, "channels")
        await page.click("#connect-facebook")
        await expect(page.locator("h1")).to_contain_text("connect your facebook accounts")
        await page.click("button[value=allow]")
        await expect(page.locator("#connect-status")).to_contain_text("Connected")
        await expect(page.locator("#channel-rows tr", has_text=PAGE)).to_contain_text("connected")

        # teach the bot one answer
        await _go(page, "knowledge")
        qa = page.locator("#qa-form")
        await qa.locator("input[name=q]").fill("When are you open?")
        await qa.locator("textarea[name=a]").fill("We are open Monday to Saturday, 9:00 to 18:00.")
        await qa.locator("button[type=submit]").click()
        await expect(page.locator("#source-rows tr").first.locator(".source-status")).to_have_text(
            "ready")

        # a customer writes: the conversation and the bot's answer arrive live (no reload)
        await _go(page, "inbox")
        await expect(page.locator("#inbox-live")).to_contain_text("Live")
        await _customer_writes(server, graph.login.app_secret, "Hi! When are you open?")
        row = page.locator(f"#inbox-rows li[data-conversation='messenger:{PAGE}:{CUSTOMER}']")
        await row.locator("button").click()
        messages = page.locator("#inbox-messages li")
        await expect(messages.first).to_contain_text("Hi! When are you open?")
        replies = page.locator("#inbox-messages li.kind-reply")
        await expect(replies).to_have_count(1)
        await expect(replies).to_contain_text("Monday to Saturday")
        sent = [s for s in graph.sends if s.text and "Monday to Saturday" in s.text]
        assert len(sent) == 1  # Meta got the answer once

        # Ana replies as a person; the bot stays silent for the customer's next message
        await page.fill("#inbox-text", "Hi, this is Ana: we open at 9 on Saturday too.")
        await page.click("#inbox-send")
        await expect(page.locator("#inbox-messages li.kind-agent")).to_contain_text(
            "we open at 9 on Saturday")
        await expect(page.locator("#inbox-badge")).to_have_text("human")
        await _customer_writes(server, graph.login.app_secret, "When are you open?")
        await expect(messages.last).to_contain_text("When are you open?")
        await expect(replies).to_have_count(1)
        texts = [s.text for s in graph.sends if s.text]
        assert texts[-1] == "Hi, this is Ana: we open at 9 on Saturday too."
        assert sum("Monday to Saturday" in t for t in texts) == 1  # the bot said nothing more

        # the day's chart: the shard has written today's counts (within its second)
        tenant = (await (await page.request.get(str(server.make_url(
            "/admin/api/v1/auth/me")))).json())["tenant_id"]
        today = analytics.day_of(int(time.time() * 1000))
        for _ in range(100):
            f = (await analytics.read(redis, tenant, [today]))[0]
            if f.bot_replies and f.human_replies and f.messages_in == 2:
                break
            await asyncio.sleep(0.1)
        await _go(page, "analytics")
        iso = f"{today[:4]}-{today[4:6]}-{today[6:]}"
        await expect(page.locator(f"#analytics-chart rect.bar-messages_in[data-day='{iso}']")
                     ).to_have_attribute("data-value", "2")
        await expect(page.locator(f"#analytics-chart rect.bar-bot_replies[data-day='{iso}']")
                     ).to_have_attribute("data-value", "1")
        await expect(page.locator(f"#analytics-chart rect.bar-human_replies[data-day='{iso}']")
                     ).to_have_attribute("data-value", "1")
        tiles = page.locator("#analytics-totals")
        await expect(tiles.locator(".tile", has_text="Messages in")).to_contain_text("2")
        await expect(tiles.locator(".tile", has_text="Automation")).to_contain_text("0%")
        await expect(page.locator(f"#analytics-rows tr[data-day='{iso}']")).to_contain_text("2")
        height = await page.locator(
            f"#analytics-chart rect.bar-messages_in[data-day='{iso}']").get_attribute("height")
        assert height is not None and float(height) > 0

        # one channel at a time: WhatsApp had nothing today
        await page.locator("#analytics-form select[name=channel]").select_option("whatsapp")
        await page.click("#analytics-form button[type=submit]")
        await expect(page.locator("#analytics-status")).to_contain_text("whatsapp")
        await expect(page.locator(f"#analytics-chart rect.bar-messages_in[data-day='{iso}']")
                     ).to_have_attribute("data-value", "0")

        # and on a phone the chart fits the screen
        await page.set_viewport_size({"width": 375, "height": 740})
        box = await page.locator("#analytics-chart svg").bounding_box()
        assert box is not None and box["width"] <= 375
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
