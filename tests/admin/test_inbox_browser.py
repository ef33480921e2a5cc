"""The inbox in a real (headless) Chromium against the real app and a real conversation
shard on the test Redis, with Meta's Graph API and the LLM as fakes on real ports: a
customer's signed webhook appears live in the list and the transcript (no reload, no
polling), the bot's answer and its read mark follow, a person replies from the console,
the bot stays silent for the customer's next message, and comes back on a hand back."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from browser_harness import browser_tab, needs_browser

from mtdesk.actors.conversation_shard import ConversationShard
from mtdesk.actors.services import build_shard_services
from mtdesk.cli.compose import build_app
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import ProviderConfig, Settings
from mtdesk.fakes.graph import FakeGraphAPI
from mtdesk.fakes.llm import FakeLLM
from mtdesk.policy.vault import generate_key

pytestmark = needs_browser

OPERATOR = "operator-token-for-the-inbox-browser-test"
APP_SECRET = "inbox-browser-app-secret"
PAGE = "1001"
TOKEN = "EAAB-inbox-page-token"
API = "/admin/api/v1"


def _one_pixel_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x1f\x6f\xeb")) + chunk(b"IEND", b""))


class _Desk:
    def __init__(self, server: TestServer, graph: FakeGraphAPI, llm: FakeLLM) -> None:
        self.server, self.graph, self.llm = server, graph, llm
        self._n = 0

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def api(self, method: str, path: str, token: str,
                  body: dict[str, Any] | None = None) -> Any:
        async with aiohttp.ClientSession() as http, http.request(
                method, self.url(API + path), json=body,
                headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def webhook(self, messaging: dict[str, Any]) -> None:
        """One signed Messenger webhook, as Meta posts it."""
        body = json.dumps({"object": "page", "entry": [{
            "id": PAGE, "time": int(time.time() * 1000), "messaging": [messaging]}]}).encode()
        signature = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        async with aiohttp.ClientSession() as http, http.post(
                self.url("/webhooks/meta"), data=body,
                headers={"Content-Type": "application/json",
                         "X-Hub-Signature-256": f"sha256={signature}"}) as r:
            assert r.status == 200, await r.text()

    async def customer_says(self, text: str) -> None:
        self._n += 1
        await self.webhook({"sender": {"id": "PSID7"}, "recipient": {"id": PAGE},
                            "timestamp": int(time.time() * 1000),
                            "message": {"mid": f"m_in_{self._n}_{time.time_ns()}", "text": text}})


@pytest.fixture
async def desk(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[_Desk]:
    async with FakeGraphAPI() as graph, FakeLLM() as llm:
        settings = Settings(
            redis_url=redis_url, graph_api_base=graph.base_url,
            providers={"openai": ProviderConfig(name="openai", base_url=llm.base_url)},
            encryption_keys=(Secret(generate_key()),), admin_token=Secret(OPERATOR),
            meta_app_secrets=(Secret(APP_SECRET),), meta_verify_token=Secret("verify"),
            partitions=4, shards=1, llm_timeout_s=5.0, data_dir=str(tmp_path / "data"),
            transcriber="openai:whisper-1",
        )
        services = await build_shard_services(
            settings, sender_options={"base_delay_s": 0.01, "max_attempts": 3})
        shard = ConversationShard(0, list(range(settings.partitions)), services, block_ms=100)
        await shard.start()
        server = TestServer(build_app(settings, redis=redis), host="127.0.0.1")
        try:
            async with server:
                yield _Desk(server, graph, llm)
        finally:
            await shard.stop(drain_timeout_s=5)
            await services.aclose()


async def test_a_person_watches_live_takes_over_and_the_bot_stays_silent(desk: _Desk) -> None:
    from playwright.async_api import expect

    tenant = await desk.api("POST", "/tenants", OPERATOR,
                            {"name": "Acme", "email": "owner@acme.example"})
    key = tenant["api_key"]
    await desk.api("POST", "/channels", key,
                   {"channel": "messenger", "account_id": PAGE, "access_token": TOKEN})
    desk.graph.register(PAGE, TOKEN, channel="messenger")
    desk.graph.add_profile("PSID7", first_name="Ana", last_name="Silva",
                           profile_pic=desk.graph.add_attachment(_one_pixel_png(), "image/png"))
    await desk.api("PUT", "/bot", key, {"provider": "openai", "model": "gpt-test"})

    async with browser_tab() as page:
        await page.goto(desk.url("/admin/"))
        await page.fill("#token", key)
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#inbox-live")).to_contain_text("Live")

        # A customer writes: the conversation shows up live, by name, with the bot's answer.
        await desk.customer_says("Where is my parcel?")
        row = page.locator("#inbox-rows li[data-conversation='messenger:1001:PSID7']")
        await expect(row).to_contain_text("Ana Silva")
        # Her picture, kept by us and shown from our own route (never Meta's address).
        avatar = row.locator("img.avatar")
        await expect(avatar).to_have_attribute("src", re.compile(r"^blob:"))
        await page.wait_for_function(
            "() => { const i = document.querySelector('#inbox-rows img.avatar');"
            " return i && i.complete && i.naturalWidth === 1; }")
        await row.locator("button").click()
        messages = page.locator("#inbox-messages li")
        await expect(messages.first).to_contain_text("Where is my parcel?")
        await expect(page.locator("#inbox-messages li.kind-reply")).to_have_count(1)
        bot_mid = desk.graph.sends[0].message_id
        # Meta says the person read it: the mark moves without a reload.
        await desk.webhook({"sender": {"id": "PSID7"}, "recipient": {"id": PAGE},
                            "timestamp": int(time.time() * 1000),
                            "read": {"watermark": int(time.time() * 1000) + 1000}})
        await expect(page.locator("#inbox-messages li.kind-reply .mark")).to_have_attribute(
            "data-status", "read")
        assert bot_mid

        # The person replies from the console; the bot goes silent.
        await page.fill("#inbox-text", "Hi Ana, this is Sam. It ships today.")
        await page.click("#inbox-send")
        await expect(page.locator("#inbox-messages li.kind-agent")).to_contain_text(
            "It ships today.")
        await expect(page.locator("#inbox-badge")).to_have_text("human")
        await desk.customer_says("Great, thanks!")
        await expect(messages.last).to_contain_text("Great, thanks!")
        await expect(page.locator("#inbox-messages li.kind-reply")).to_have_count(1)
        texts = [s.text for s in desk.graph.sends]
        assert texts[-1] == "Hi Ana, this is Sam. It ships today." and len(texts) == 2

        # Handed back, the bot answers the next message.
        await page.click("#inbox-handback")
        await expect(page.locator("#inbox-badge")).to_have_text("bot")
        await desk.customer_says("One more question")
        await expect(page.locator("#inbox-messages li.kind-reply")).to_have_count(2)

        # A voice note: heard, answered, and its transcript shown under it.
        voice = desk.graph.add_attachment(b"OggS do you ship to Porto", "audio/mp4",
                                          expires_s=600)
        await desk.webhook({"sender": {"id": "PSID7"}, "recipient": {"id": PAGE},
                            "timestamp": int(time.time() * 1000),
                            "message": {"mid": "m_voice_1", "attachments": [
                                {"type": "audio", "payload": {"url": voice}}]}})
        note = page.locator("#inbox-messages li[data-message-id='m_voice_1']")
        await expect(note.locator(".transcript")).to_have_text(
            "Transcript: OggS do you ship to Porto")
        await expect(page.locator("#inbox-messages li.kind-reply")).to_have_count(3)
