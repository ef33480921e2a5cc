"""An admin app with accounts on a real port, and a real local SMTP server (aiosmtpd)
that keeps what it is handed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.smtp import SMTP, Envelope, Session

from mtdesk.admin.app import setup_admin
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.policy.vault import generate_key

OPERATOR = "operator-token-for-accounts-tests"
API = "/admin/api/v1"
PASSWORD = "correct horse battery"


class MailBox:
    """The handler of the SMTP server: every accepted message, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append(message_from_bytes(content))
        self.arrived.set()
        return "250 OK"

    async def next_link(self, kind: str) -> str:
        """The token of the newest mailed ``#kind=…`` link (waits for a mail)."""
        await asyncio.wait_for(self._wait(), 10.0)
        body = self.messages[-1].get_payload(decode=True)
        assert isinstance(body, bytes)
        found = re.search(rf"#{kind}=([A-Za-z0-9_\-]+)", body.decode())
        assert found, body
        return found.group(1)

    async def _wait(self) -> None:
        while not self.messages:
            self.arrived.clear()
            await self.arrived.wait()


@pytest.fixture(name="mailbox")
async def mailbox_fixture() -> AsyncIterator[tuple[MailBox, int]]:
    box = MailBox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(box, hostname="mail.test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield box, port
    finally:
        server.close()
        await server.wait_closed()


def account_settings(redis_url: str, smtp_port: int | None, **extra: str) -> Settings:
    env = {
        "MTDESK_REDIS_URL": redis_url, "MTDESK_ADMIN_TOKEN": OPERATOR,
        "MTDESK_ENCRYPTION_KEYS": generate_key(), "MTDESK_PUBLIC_URL": "http://desk.test",
        "MTDESK_LOGIN_ATTEMPTS": "3",
    }
    if smtp_port is not None:
        env |= {"MTDESK_SMTP_HOST": "127.0.0.1", "MTDESK_SMTP_PORT": str(smtp_port),
                "MTDESK_SMTP_STARTTLS": "false", "MTDESK_SMTP_FROM": "desk@desk.test"}
    return Settings.from_env(env | extra, dotenv=None)


def account_app(redis: Redis, settings: Settings) -> web.Application:
    app = web.Application()
    app[REDIS] = redis
    app[SETTINGS] = settings
    app[CLOCK] = SystemClock()
    setup_admin(app)
    return app


@pytest.fixture(name="client")
async def client_fixture(redis: Redis, redis_url: str,
                 mailbox: tuple[MailBox, int]) -> AsyncIterator[TestClient]:
    settings = account_settings(redis_url, mailbox[1])
    async with TestClient(TestServer(account_app(redis, settings))) as c:
        yield c


async def sign_up(client: TestClient, email: str = "ana@shop.test",
                  company: str = "Ana's Shop", **over: Any) -> dict[str, Any]:
    body = {"name": "Ana", "email": email, "password": PASSWORD, "company": company} | over
    resp = await client.post(f"{API}/auth/signup", json=body)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data
