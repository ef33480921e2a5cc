"""Accounts in the web console, in headless Chromium (Playwright, Debian's chromium) against
the real app on a real port, the test Redis, the fake Graph API's login dialog and a real
local SMTP server: a business signs up, connects its Page through Meta's (fake) dialog and
sees the channel listed, makes an API key, signs out, resets its password from the mailed
link and is signed in again; an invited agent sees no channel, team or key controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from accounts_harness import PASSWORD, MailBox, account_settings, mailbox_fixture  # noqa: F401
from aiohttp.test_utils import TestServer, unused_port
from browser_harness import browser_tab, needs_browser

from mtdesk.cli.compose import build_app
from mtdesk.core.redis import Redis
from mtdesk.fakes.graph import FakeGraphAPI

pytestmark = needs_browser


@pytest.fixture(name="graph")
async def graph_fixture() -> AsyncIterator[FakeGraphAPI]:
    async with FakeGraphAPI(strict=True) as graph:
        yield graph


@pytest.fixture(name="server")
async def server_fixture(redis: Redis, redis_url: str, graph: FakeGraphAPI,
                         mailbox: tuple[MailBox, int]) -> AsyncIterator[TestServer]:
    port = unused_port()
    settings = account_settings(
        redis_url, mailbox[1], MTDESK_PUBLIC_URL=f"http://127.0.0.1:{port}",
        MTDESK_GRAPH_API_BASE=graph.base_url, MTDESK_META_APP_ID=graph.login.app_id,
        MTDESK_META_APP_SECRET=graph.login.app_secret, MTDESK_META_DIALOG_BASE=graph.root_url,
        MTDESK_META_VERIFY_TOKEN="v", MTDESK_KB_EMBEDDER="lexical")
    srv = TestServer(build_app(settings, redis=redis), host="127.0.0.1", port=port)
    async with srv:
        yield srv


@pytest.fixture(name="page")
async def page_fixture(server: TestServer) -> AsyncIterator[Any]:
    async with browser_tab() as tab:
        yield tab


async def test_a_business_signs_up_connects_its_page_and_resets_its_password(
        server: TestServer, page: Any, mailbox: tuple[MailBox, int]) -> None:
    from playwright.async_api import expect

    await page.goto(str(server.make_url("/admin/")))
    form = page.locator("#signup-form")
    await form.locator("[name=name]").fill("Ana")
    await form.locator("[name=company]").fill("Harbor Café")
    await form.locator("[name=email]").fill("ana@harbor.test")
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#who")).to_contain_text("Ana (owner)")
    await page.click("#sections a[data-section=channels]")
    await expect(page.locator("#channels-empty")).to_be_visible()

    # Connect with Facebook: Meta's dialog (the fake's page), Allow, and back.
    await page.click("#connect-facebook")
    await expect(page.locator("h1")).to_contain_text("connect your facebook accounts")
    await page.click("button[value=allow]")
    await expect(page.locator("#connect-status")).to_contain_text("Connected 2 account(s)")
    # back from the dialog on the channels page
    await expect(page.locator("#channels")).to_be_visible()
    assert page.url.endswith("/admin/#channels")
    rows = page.locator("#channel-rows tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator("#channel-rows")).to_contain_text("1010")
    await expect(page.locator("#channel-rows")).to_contain_text("facebook_login")

    # An API key for a machine: shown once.
    await page.click("#sections a[data-section=team]")
    await page.fill("#key-form [name=name]", "crm sync")
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("#key-new code")).to_contain_text("mtd_")
    await expect(page.locator("#key-rows")).to_contain_text("crm sync")

    # Sign out; forgot password; the mailed link; a new password signs in.
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    await page.fill("#forgot-form [name=email]", "ana@harbor.test")
    await page.click("#forgot-form button[type=submit]")
    await expect(page.locator("#forgot-status")).to_contain_text("Sent")
    box, _ = mailbox
    token = await box.next_link("reset")
    await page.goto(str(server.make_url("/admin/")) + "#reset=" + token)
    await expect(page.locator("#link-box")).to_be_visible()
    assert "#reset" not in page.url  # the one-time link leaves the address bar
    await page.fill("#link-form [name=password]", "a new long passphrase")
    await page.click("#link-form button[type=submit]")
    await expect(page.locator("#who")).to_contain_text("Ana (owner)")
    await page.click("#sections a[data-section=channels]")
    await expect(page.locator("#channel-rows tr")).to_have_count(2)


async def test_an_invited_agent_sees_no_channel_team_or_key_controls(
        server: TestServer, page: Any, mailbox: tuple[MailBox, int]) -> None:
    from playwright.async_api import expect

    await page.goto(str(server.make_url("/admin/")))
    form = page.locator("#signup-form")
    for name, value in (("name", "Ana"), ("company", "Harbor"), ("email", "ana@harbor.test"),
                        ("password", PASSWORD)):
        await form.locator(f"[name={name}]").fill(value)
    await form.locator("button[type=submit]").click()
    await page.click("#sections a[data-section=team]")
    await page.fill("#invite-form [name=name]", "Bo")
    await page.fill("#invite-form [name=email]", "bo@harbor.test")
    await page.click("#invite-form button[type=submit]")
    await expect(page.locator("#team-status")).to_contain_text("Invitation mailed")
    await expect(page.locator("#team-rows")).to_contain_text("invited")
    token = await mailbox[0].next_link("invite")
    await page.click("#signout")
    await page.goto(str(server.make_url("/admin/")) + "#invite=" + token)
    await page.fill("#link-form [name=name]", "Bo B.")
    await page.fill("#link-form [name=password]", "bo's own passphrase")
    await page.click("#link-form button[type=submit]")
    await expect(page.locator("#who")).to_contain_text("Bo B. (agent)")
    await expect(page.locator("#conversations")).to_be_visible()
    # no Team or Billing page for an agent, not even by typing its address
    for hidden in ("#sections a[data-section=team]", "#sections a[data-section=billing]"):
        await expect(page.locator(hidden)).to_be_hidden()
    await page.goto(str(server.make_url("/admin/")) + "#team")
    await expect(page.locator("#inbox")).to_be_visible()
    await page.click("#sections a[data-section=channels]")
    for hidden in ("#connect-facebook", "#channel-form", "#team", "#keys"):
        await expect(page.locator(hidden)).to_be_hidden()
