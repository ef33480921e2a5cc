"""The web console in a real (headless) Chromium against the real app on a real port and
the test Redis: a tenant signs in with its key, connects a channel, edits the bot,
adds knowledge and reads a conversation; a wrong key is told so. Privacy: the export is
a file the browser saves; erasing an end user or disconnecting a channel asks first, and
then the real deletion worker's job is followed to done; uploads and re-syncs index.

Needs Debian's chromium (``apt-get install -y chromium``) and the ``playwright`` package
(the ``test`` extra); Playwright's own browser download is not used.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from browser_harness import browser_tab, needs_browser

from mtdesk.cli.compose import build_app
from mtdesk.core import keys
from mtdesk.core.analytics import Tally
from mtdesk.core.appkeys import SETTINGS
from mtdesk.core.clock import SystemClock
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels
from mtdesk.policy.erasure.jobs import DeletionWorker
from mtdesk.policy.vault import generate_key

pytestmark = needs_browser

OPERATOR = "operator-token-for-browser-tests"
API = "/admin/api/v1"


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = Settings.from_env({
        "MTDESK_REDIS_URL": redis_url, "MTDESK_ADMIN_TOKEN": OPERATOR,
        "MTDESK_ENCRYPTION_KEYS": generate_key(), "MTDESK_META_APP_SECRET": "s",
        "MTDESK_META_VERIFY_TOKEN": "v", "MTDESK_KB_EMBEDDER": "lexical",
        "MTDESK_DATA_DIR": str(tmp_path / "data"), "MTDESK_DELETION_SETTLE_S": "5",
    }, dotenv=None)
    srv = TestServer(build_app(settings, redis=redis), host="127.0.0.1")
    async with srv:
        yield srv


@pytest.fixture
async def deleter(server: TestServer, redis: Redis) -> AsyncIterator[DeletionWorker]:
    """The real deletion worker (in production the mtdesk-deleter actor), consuming the
    jobs the console's requests schedule."""
    worker = DeletionWorker(redis, server.app[SETTINGS], SystemClock(), settle_poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, block_ms=100))
    yield worker
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def page(server: TestServer) -> AsyncIterator[Any]:
    async with browser_tab() as tab:
        yield tab


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


async def _seed_conversation(redis: Redis, tid: str, user: str, text: str,
                             account: str = "106540352242922") -> str:
    """One inbound message of a WhatsApp user, through the real message store."""
    await MessageStore(redis).append(tid, StoredMessage(
        direction="in", message_id=f"m-{user}", kind="message", channel="whatsapp",
        account_id=account, user_id=user, timestamp_ms=1_764_180_000_000,
        text=text), now_ms=1_764_180_000_000)
    return f"whatsapp:{account}:{user}"


async def _saved_text(download: Any) -> str:
    """The text of a file the browser downloaded."""
    return await asyncio.to_thread(Path(await download.path()).read_text, "utf-8")


async def _sign_in(page: Any, server: TestServer, token: str) -> None:
    await page.goto(str(server.make_url("/admin/")))
    await page.fill("#token", token)
    await page.click("#signin-form button[type=submit]")


async def _go(page: Any, section: str) -> None:
    """Opens one of the console's pages from its navigation, as a person would."""
    from playwright.async_api import expect

    await page.click(f"#sections a[data-section={section}]")
    await expect(page.locator(f"section#{section}")).to_be_visible()


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
    await _go(page, "channels")
    row = page.locator(f"#channel-rows tr[data-id='{gone['id']}']")
    await expect(row).to_contain_text("disconnected")
    await expect(row).to_contain_text("Graph error 190: token expired")
    # the key is in this tab's sessionStorage only: no cookie, not in the URL
    assert await page.evaluate("sessionStorage.getItem('mtdesk.admin.token')") == key
    assert await page.context.cookies() == []
    assert key not in page.url

    # connect a channel: the API's 422 names the field, then a good one is listed
    form = page.locator("#channel-form")
    await form.locator("select[name=channel]").select_option("whatsapp")
    await form.locator("input[name=account_id]").fill("not-digits")
    await form.locator("input[name=access_token]").fill("EAAG-token")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#channels-status")).to_contain_text("account_id:")
    await expect(page.locator("#channels-status")).to_contain_text("HTTP 422")
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
    await _go(page, "bot")
    await expect(page.locator("#channels")).to_be_hidden()  # one page at a time
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
    await _go(page, "knowledge")
    qa = page.locator("#qa-form")
    await qa.locator("input[name=q]").fill("When are you open?")
    await qa.locator("textarea[name=a]").fill("Monday to Saturday, 10:00-18:00.")
    await qa.locator("button[type=submit]").click()
    source = page.locator("#source-rows tr").first
    await expect(source.locator(".source-status")).to_have_text("ready")
    await expect(source).to_contain_text("qa")
    _, sources = await _api(server, "GET", f"{API}/knowledge", key)
    assert [s["status"] for s in sources["sources"]] == ["ready"]
    await source.locator("button", has_text="Delete").click()  # arms
    await source.locator("button", has_text="Confirm delete").click()
    await expect(page.locator("#sources-empty")).to_be_visible()
    _, sources = await _api(server, "GET", f"{API}/knowledge", key)
    assert sources["sources"] == []

    # conversations: the seeded one opens with its messages, text shown as text
    await _go(page, "inbox")
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
    await _go(page, "bot")
    await expect(page.locator("#bot-form textarea[name=system_prompt]")).to_have_value(
        "Acme's own prompt")


async def test_export_saves_a_json_file_with_the_tenants_messages(
    server: TestServer, page: Any, redis: Redis
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    await _seed_conversation(redis, tid, "15551234567", "Where is my order #4411?")
    await _seed_conversation(redis, tid, "15557654321", "Do you ship to Lisbon?")
    await _sign_in(page, server, key)
    await expect(page.locator("#conversation-rows tr")).to_have_count(2)
    await _go(page, "privacy")

    async with page.expect_download() as info:
        await page.click("#export-all")
    saved = await info.value
    assert saved.suggested_filename == f"mtdesk-export-{tid}.json"
    document = json.loads(await _saved_text(saved))
    text = json.dumps(document)
    assert "Where is my order #4411?" in text and "Do you ship to Lisbon?" in text
    await expect(page.locator("#privacy-status")).to_contain_text(f"mtdesk-export-{tid}.json")

    # one end user: only that person's messages
    form = page.locator("#user-form")
    await form.locator("select[name=channel]").select_option("whatsapp")
    await form.locator("input[name=user_id]").fill("15557654321")
    async with page.expect_download() as info:
        await form.locator("button[type=submit]").click()
    one = await _saved_text(await info.value)
    assert "Do you ship to Lisbon?" in one
    assert "Where is my order #4411?" not in one
    # no user id: the field is named, nothing is fetched
    await form.locator("input[name=user_id]").fill("")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#user-job")).to_contain_text("user_id: is required")


async def test_erasing_an_end_user_asks_first_then_follows_the_job_to_done(
    server: TestServer, page: Any, redis: Redis, deleter: DeletionWorker
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    gone = await _seed_conversation(redis, tid, "15551234567", "my address is 5 Elm St")
    kept = await _seed_conversation(redis, tid, "15557654321", "hello")
    await _sign_in(page, server, key)
    await expect(page.locator("#conversation-rows tr")).to_have_count(2)
    await _go(page, "privacy")
    form = page.locator("#user-form")
    await form.locator("select[name=channel]").select_option("whatsapp")
    await form.locator("input[name=user_id]").fill("15551234567")

    # a cancelled confirm does nothing: no job, both conversations still there
    await page.click("#user-erase")
    confirm = page.locator("#user-confirm")
    await expect(confirm).to_contain_text("Erase all data of whatsapp user 15551234567?")
    await expect(confirm).to_contain_text("cannot be undone")
    await confirm.locator("button", has_text="Cancel").click()
    await expect(confirm).to_be_hidden()
    await page.wait_for_timeout(300)
    assert await redis.xlen(keys.DELETION_JOBS) == 0
    _, listed = await _api(server, "GET", f"{API}/conversations", key)
    assert len(listed["conversations"]) == 2
    await expect(page.locator("#user-job")).to_have_text("")

    # confirmed: the job is shown and followed until done; the conversation is gone
    await page.click("#user-erase")
    await confirm.locator("button", has_text="Erase this user").click()
    await expect(page.locator("#user-job .job-status")).to_have_text("done")
    job_id = await page.locator("#user-job .job-id").text_content()
    status, job = await _api(server, "GET", f"{API}/deletions/{job_id}", key)
    assert status == 200 and job["status"] == "done" and job["kind"] == "user"
    await expect(page.locator(f"#conversation-rows tr[data-conversation='{gone}']")).to_have_count(0)
    await expect(page.locator(f"#conversation-rows tr[data-conversation='{kept}']")).to_have_count(1)
    _, listed = await _api(server, "GET", f"{API}/conversations", key)
    assert [c["conversation"] for c in listed["conversations"]] == [kept]


async def test_disconnecting_a_channel_says_what_happens_and_erases_it(
    server: TestServer, page: Any, redis: Redis, deleter: DeletionWorker
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    status, channel = await _api(server, "POST", f"{API}/channels", key, {
        "channel": "whatsapp", "account_id": "106540352242922", "access_token": "EAAG-token"})
    assert status == 201
    conv = await _seed_conversation(redis, tid, "15551234567", "hi there")
    await _sign_in(page, server, key)
    await _go(page, "channels")
    row = page.locator(f"#channel-rows tr[data-id='{channel['id']}']")
    await expect(row.locator(".channel-status")).to_have_text("connected")
    await expect(page.locator(f"#conversation-rows tr[data-conversation='{conv}']")).to_have_count(1)

    # cancel: still connected, nothing scheduled
    await row.locator("button", has_text="Disconnect").click()
    confirm = page.locator("#channel-confirm")
    await expect(confirm).to_contain_text("whatsapp account 106540352242922")
    await expect(confirm).to_contain_text("erases all of this account's data")
    await confirm.locator("button", has_text="Cancel").click()
    await expect(confirm).to_be_hidden()
    await page.wait_for_timeout(300)
    _, listed = await _api(server, "GET", f"{API}/channels", key)
    assert [c["status"] for c in listed["channels"]] == ["connected"]
    assert await redis.xlen(keys.DELETION_JOBS) == 0

    # confirmed: disconnected at once, then the job erases the channel and its data
    await row.locator("button", has_text="Disconnect").click()
    await confirm.locator("button", has_text="Disconnect and erase").click()
    job = page.locator("#channel-job")
    await expect(job).to_contain_text("Disconnected whatsapp account 106540352242922")
    await expect(job.locator(".job-status")).to_have_text("done")
    await expect(row).to_have_count(0)
    await expect(page.locator("#channels-empty")).to_be_visible()
    await expect(page.locator(f"#conversation-rows tr[data-conversation='{conv}']")).to_have_count(0)
    _, listed = await _api(server, "GET", f"{API}/channels", key)
    assert listed["channels"] == []


async def test_uploading_a_file_and_resyncing_it_index_it_and_retention_can_change(
    server: TestServer, page: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    _, key = await _tenant(server)
    await _sign_in(page, server, key)
    await _go(page, "privacy")
    await expect(page.locator("#retention-now")).to_contain_text("kept 365 days")
    await _go(page, "knowledge")

    upload = page.locator("#file-form")
    # a type the API refuses: its message, naming the field
    await upload.locator("input[name=file]").set_input_files(
        {"name": "prices.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"})
    await upload.locator("button[type=submit]").click()
    await expect(page.locator("#knowledge-status")).to_contain_text("file:")
    await expect(page.locator("#knowledge-status")).to_contain_text("HTTP 400")

    doc = tmp_path / "returns.md"
    doc.write_text("# Returns\n\nYou can return shoes within 30 days with the receipt.\n")
    await upload.locator("input[name=file]").set_input_files(str(doc))
    await upload.locator("button[type=submit]").click()
    await expect(page.locator("#knowledge-status")).to_contain_text("Uploaded returns.md")
    source = page.locator("#source-rows tr", has_text="returns.md")
    await expect(source.locator(".source-status")).to_have_text("ready")
    _, found = await _api(server, "GET", f"{API}/knowledge/search?q=return+shoes", key)
    assert any("30 days" in p["text"] for p in found["passages"])

    await source.locator("button", has_text="Re-sync").click()
    await expect(page.locator("#knowledge-status")).to_contain_text("Re-syncing returns.md")
    # The row may still show the status from before the re-sync for a moment: wait for the
    # re-sync itself to end (it says ready once conversations answer from it, which can
    # take the readers' few seconds: docs/retrieval.md).
    for _ in range(300):
        _, sources = await _api(server, "GET", f"{API}/knowledge", key)
        if sources["sources"][0]["status"] != "processing" and sources["sources"][0]["status"] != "queued":
            break
        await asyncio.sleep(0.05)
    assert [(s["name"], s["status"]) for s in sources["sources"]] == [("returns.md", "ready")]
    await expect(source.locator(".source-status")).to_have_text("ready")

    # retention: a bad value names the field; a good one is stored
    await _go(page, "privacy")
    retention = page.locator("#retention-form")
    await retention.locator("input[name=days]").fill("0")
    await retention.locator("button[type=submit]").click()
    await expect(page.locator("#privacy-status")).to_contain_text("days:")
    await retention.locator("input[name=days]").fill("30")
    await retention.locator("button[type=submit]").click()
    await expect(page.locator("#privacy-status")).to_have_text("Retention saved.")
    await expect(page.locator("#retention-now")).to_contain_text("kept 30 days")
    _, stored = await _api(server, "GET", f"{API}/retention", key)
    assert stored["days"] == 30


async def test_the_console_is_one_app_with_a_page_per_section_at_desk_and_phone_width(
    server: TestServer, page: Any, redis: Redis
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    await _seed_conversation(redis, tid, "15551234567", "hello")
    sections = ["inbox", "channels", "bot", "knowledge", "analytics", "billing", "privacy",
                "team"]
    await page.set_viewport_size({"width": 1280, "height": 800})
    await _sign_in(page, server, key)
    # the inbox first; the navigation beside the page, every other page hidden
    await expect(page.locator("#inbox")).to_be_visible()
    await expect(page.locator("#sections a[aria-current=page]")).to_have_text("Inbox")
    nav = await page.locator("#sections").bounding_box()
    main = await page.locator("#inbox").bounding_box()
    assert nav is not None and main is not None and nav["x"] + nav["width"] <= main["x"]
    for name in sections[1:]:
        await expect(page.locator(f"section#{name}")).to_be_hidden()

    # each page by its link; the address names it, so reload and back come back to it
    await _go(page, "knowledge")
    assert page.url.endswith("#knowledge")
    await expect(page).to_have_title("Knowledge · MT Desk console")
    await _go(page, "analytics")
    await page.reload()
    await expect(page.locator("section#analytics")).to_be_visible()
    await expect(page.locator("#sections a[aria-current=page]")).to_have_text("Analytics")
    await page.go_back()
    await expect(page.locator("section#knowledge")).to_be_visible()
    await expect(page.locator("section#analytics")).to_be_hidden()
    # billing off on this server: said so, the usage counted without a limit
    await _go(page, "billing")
    await expect(page.locator("#billing-status")).to_contain_text("Billing is not configured")
    await expect(page.locator("#billing-facts")).to_contain_text("0 (no limit)")
    await expect(page.locator("#checkout-form")).to_be_hidden()

    # a phone: the navigation above the page, every page fits the width (no sideways scroll)
    await page.set_viewport_size({"width": 375, "height": 740})
    for name in sections:
        link = page.locator(f"#sections a[data-section={name}]")
        await link.scroll_into_view_if_needed()
        await link.click()
        await expect(page.locator(f"section#{name}")).to_be_visible()
        nav = await page.locator("#sections").bounding_box()
        main = await page.locator(f"section#{name}").bounding_box()
        assert nav is not None and main is not None and nav["y"] + nav["height"] <= main["y"]
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the {name} page is wider than the phone by {overflow}px"


async def test_the_analytics_page_charts_the_days_and_names_a_bad_range(
    server: TestServer, page: Any, redis: Redis
) -> None:
    from playwright.async_api import expect

    tid, key = await _tenant(server)
    now = int(time.time() * 1000)
    tally = Tally()
    for _ in range(3):
        tally.message_in(tid, "messenger", now)
    tally.message_in(tid, "whatsapp", now - 86_400_000)
    tally.bot_reply(tid, "messenger", now, "messenger:1:U1", 2_500)
    tally.human_reply(tid, "messenger", now, "messenger:1:U2", handoff=True)
    tally.failure(tid, "whatsapp", now - 86_400_000, "graph error 131026")
    await tally.flush(redis)
    today = dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)

    await _sign_in(page, server, key)
    await _go(page, "analytics")
    # the last 14 days, today's bars the tallest, the failures by reason
    bars = page.locator("#analytics-chart rect.bar-messages_in")
    await expect(bars).to_have_count(14)
    await expect(page.locator(f"rect.bar-messages_in[data-day='{today}']")).to_have_attribute(
        "data-value", "3")
    await expect(page.locator(f"rect.bar-human_replies[data-day='{today}']")).to_have_attribute(
        "data-value", "1")
    await expect(page.locator(f"rect.bar-messages_in[data-day='{yesterday}']")).to_have_attribute(
        "data-value", "1")
    await expect(page.locator("#analytics-totals .tile", has_text="Automation")).to_contain_text("0%")
    await expect(page.locator("#analytics-totals .tile", has_text="Hand-offs")).to_contain_text("1")
    await expect(page.locator("#analytics-failures")).to_contain_text("graph error 131026: 1")
    await expect(page.locator("#analytics-chart svg title").first).to_contain_text("14 days")

    # a range that ends before it starts: the API's 400, naming the field
    form = page.locator("#analytics-form")
    await form.locator("input[name=from]").fill(today.isoformat())
    await form.locator("input[name=to]").fill(yesterday.isoformat())
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#analytics-status")).to_contain_text("from: must not be after to")
    await expect(page.locator("#analytics-status")).to_contain_text("HTTP 400")
    # one day: one group of bars
    await form.locator("input[name=from]").fill(yesterday.isoformat())
    await form.locator("button[type=submit]").click()
    await expect(bars).to_have_count(1)
    await expect(page.locator("#analytics-rows tr")).to_have_count(1)
    await expect(page.locator("#analytics-failures")).to_contain_text("graph error 131026: 1")
