"""The fake Graph API posts back what Meta posts about the messages a Page sent: echoes
(Messenger / Instagram) and statuses (WhatsApp), signed with the app secret over the raw
bytes, retried while the product does not answer 200 — and our gateway's parser reads
our marks in them."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import aiohttp
from aiohttp import web

from mtdesk.channels.webhook import parse_webhook
from mtdesk.core.events import Echo, Status
from mtdesk.core.secret import Secret
from mtdesk.fakes.graph import FakeGraphAPI, spawn_graph
from mtdesk.gateway.signature import verify_signature

SECRET = "fake-app-secret"


class Receiver:
    """A webhook endpoint on port 0 that answers ``refuse`` 503s first, then 200."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.bodies: list[bytes] = []
        self.signed: list[bool] = []
        self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _h(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.refused < self.refuse:
            self.refused += 1
            return web.Response(status=503)
        self.bodies.append(raw)
        self.signed.append(verify_signature(raw, request.headers.get("X-Hub-Signature-256"),
                                            [Secret(SECRET)]))
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/webhooks/meta", self._h)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/webhooks/meta"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def events(self) -> list[object]:
        return [e for raw in self.bodies for e in parse_webhook(raw).events]


async def until(check: object, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.02)


async def _send(s: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with s.post(url, json=body, headers={"Authorization": "Bearer tok"}) as r:
        assert r.status == 200
        return await r.json()


async def test_every_message_sent_comes_back_as_its_echo_or_status_signed() -> None:
    async with Receiver() as rx, FakeGraphAPI(webhook_url="", app_secret=SECRET) as g, \
            aiohttp.ClientSession() as s:
        g.webhooks.configure(rx.url, SECRET, delay_s=0.01)
        g.register("PAGE1", "tok", channel="messenger")
        g.register("IG1", "tok", channel="instagram")
        g.register("PN1", "tok", channel="whatsapp")
        page = await _send(s, f"{g.base_url}/PAGE1/messages", {
            "recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE",
            "message": {"text": "héllo / there", "metadata": "mtdesk:m.in#0"}})
        await _send(s, f"{g.base_url}/IG1/messages", {
            "recipient": {"id": "IGSID1"}, "messaging_type": "RESPONSE",
            "message": {"text": "hi", "metadata": "mtdesk:ig.in#1"}})
        wa = await _send(s, f"{g.base_url}/PN1/messages", {
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "4471",
            "type": "text", "text": {"body": "hey"}, "biz_opaque_callback_data": "mtdesk:w.in#0"})
        await _send(s, f"{g.base_url}/PAGE1/messages", {  # a signal: never echoed
            "recipient": {"id": "PSID1"}, "sender_action": "typing_on"})
        await until(lambda: len(rx.events()) == 3)
        assert all(rx.signed)
        events = rx.events()
        echoes = sorted((e for e in events if isinstance(e, Echo)), key=lambda e: e.channel)
        [status] = [e for e in events if isinstance(e, Status)]
        assert [(e.channel, e.account_id, e.user_id, e.metadata) for e in echoes] == [
            ("instagram", "IG1", "IGSID1", "mtdesk:ig.in#1"),
            ("messenger", "PAGE1", "PSID1", "mtdesk:m.in#0")]
        assert echoes[1].event_id == page["message_id"] and echoes[1].text == "héllo / there"
        assert (status.message_id, status.status, status.callback_data, status.user_id) == (
            wa["messages"][0]["id"], "sent", "mtdesk:w.in#0", "4471")
        assert any(b"\\/" in b and b"\\u00e9" in b for b in rx.bodies)  # serialized as Meta does
        assert g.webhooks.stats()["events"] == 3


async def test_a_webhook_the_product_refuses_is_posted_again_until_it_is_taken() -> None:
    async with Receiver(refuse=2) as rx, FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        g.webhooks.configure(rx.url, SECRET, delay_s=0.0)
        await _send(s, f"{g.base_url}/PAGE1/messages", {
            "recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE",
            "message": {"text": "hello", "metadata": "mtdesk:m.in#0"}})
        await until(lambda: rx.events())
        assert rx.refused == 2 and len(rx.events()) == 1
        assert g.webhooks.stats()["retries"] == 2


async def test_without_a_webhook_url_nothing_is_posted() -> None:
    async with FakeGraphAPI() as g, aiohttp.ClientSession() as s:
        await _send(s, f"{g.base_url}/PAGE1/messages", {
            "recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE",
            "message": {"text": "hello"}})
        assert g.webhooks.stats() == {"on": False, "events": 0, "bodies": 0, "retries": 0,
                                      "dropped": 0, "waiting": 0, "by_object": {}}


async def test_the_fake_as_a_process_posts_its_webhooks_too() -> None:
    async with Receiver() as rx:
        proc = await asyncio.to_thread(spawn_graph, webhook_url=rx.url, app_secret=SECRET,
                                       webhook_delay_ms=10)
        try:
            async with aiohttp.ClientSession() as s:
                await _send(s, f"{proc.root_url}/v25.0/PAGE1/messages", {
                    "recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE",
                    "message": {"text": "hello", "metadata": "mtdesk:m.in#0"}})
                await until(lambda: rx.events())
                assert all(rx.signed)
                async with s.get(f"{proc.root_url}/_fake/webhooks") as r:
                    assert (await r.json())["events"] == 1
                # Turned off through its control endpoint: nothing more is posted.
                req = urllib.request.Request(f"{proc.root_url}/_fake/webhooks",
                                             data=json.dumps({"url": None}).encode(),
                                             method="POST")
                await asyncio.to_thread(urllib.request.urlopen, req)
                await _send(s, f"{proc.root_url}/v25.0/PAGE1/messages", {
                    "recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE",
                    "message": {"text": "again", "metadata": "mtdesk:m.in2#0"}})
                async with s.get(f"{proc.root_url}/_fake/webhooks") as r:
                    stats = await r.json()
                assert stats["on"] is False and stats["waiting"] == 0
                assert len(rx.events()) == 1
        finally:
            proc.stop()
