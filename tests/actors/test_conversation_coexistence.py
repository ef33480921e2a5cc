"""The WhatsApp Business app on the same number (coexistence), with a real shard, the fake
Graph API and the fake LLM, fed Meta's real-format payloads (``tests/fixtures/meta/kinds``,
parsed as the gateway parses them): imported history is kept 12 months from when each
message was written, not from the import; history keyed by the person's number and their
live messages keyed by their business-scoped id meet in one conversation, whichever comes
first; the business's edits and deletions in the Business app apply to its own message."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from shardkit import ACCOUNTS, desk, eventually

from mtdesk.channels.webhook import parse_webhook
from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.events import Event, conversation_key
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.policy.export import export_user
from mtdesk.policy.retention import RetentionSweep

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from meta_kinds import BSUID, PHONE_ID, WA, load  # noqa: E402

PHONE = ACCOUNTS["whatsapp"]
DAY_S = 86_400
BY_NUMBER = conversation_key("whatsapp", PHONE, WA)
BY_BSUID = conversation_key("whatsapp", PHONE, BSUID)
ASKED = "Do you have the blue one in size M?"
ANSWERED = "Yes, we have two left."
LIVE = "Is the blue one in size M still there?"
ECHOED = "Here's the info you requested! https://www.example.com/quest-3/"
ECHO_EDITED = "Here's the info you requested! https://www.example.com/quest-3s/"


def fixture_events(name: str, at: float | None = None) -> list[Event]:
    """The events of fixture ``name`` posted at ``at`` (default now), for the desk's number."""
    body = load(name, at).replace(PHONE_ID.encode(), PHONE.encode())
    parsed = parse_webhook(body)
    assert parsed.malformed == 0 and parsed.events, name
    return parsed.events


async def push_all(d: object, events: list[Event]) -> None:
    for event in events:
        await d.push(event)  # type: ignore[attr-defined]


async def texts(d: object, conv: str) -> list[tuple[str, str, str | None]]:
    stored = await d.store().read(d.tenant_id, conv)  # type: ignore[attr-defined]
    return [(m.direction, m.kind, m.text) for m in stored]


async def test_imported_history_leaves_twelve_months_after_it_was_written_not_imported(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        # The Business app's history, written 150 days before it is imported today (Meta
        # shares up to 180 days), and a live message of the same number today.
        imported_at = time.time()
        await push_all(d, fixture_events("whatsapp_history", imported_at - 150 * DAY_S))
        await eventually(lambda: shard.handled == 2)
        await d.push(d.message("and in red?", user=WA, channel="whatsapp"))
        await eventually(lambda: shard.handled == 3 and len(d.graph.sends) == 1)
        conv = BY_NUMBER
        assert [k for _d, k, _t in await texts(d, conv)] == [
            "imported", "imported", "message", "reply"]

        # Everything is exported while kept.
        exported = b"".join([c async for c in export_user(
            redis, FakeClock(imported_at), d.tenant_id, "whatsapp", WA, cipher=d.cipher())])
        said = [m["text"] for c in json.loads(exported)["conversations"] for m in c["messages"]]
        assert ASKED in said and ANSWERED in said and "and in red?" in said

        settings = Settings(retention_days=365)
        clock = FakeClock(imported_at)
        sweep = RetentionSweep(redis, settings, clock)
        clock.advance(214 * DAY_S)  # 364 days after it was written: kept
        assert (await sweep.run([d.tenant_id])).deleted == {}
        assert len(await texts(d, conv)) == 4
        clock.advance(2 * DAY_S)  # 366 days after it was written, 216 after the import
        report = await sweep.run([d.tenant_id])
        assert report.deleted.get("messages") == 2
        assert [k for _d, k, _t in await texts(d, conv)] == ["message", "reply"]
        assert await redis.xlen(keys.history(d.tenant_id, conv)) == 2
        assert await redis.zcard(keys.imported(d.tenant_id, conv)) == 0
        # The live message and its reply stay their own 12 months.
        clock.advance(148 * DAY_S)
        assert (await sweep.run([d.tenant_id])).deleted == {}
        clock.advance(2 * DAY_S)
        assert (await sweep.run([d.tenant_id])).deleted.get("messages") == 2


async def test_erasing_the_person_takes_their_imported_history_and_its_times(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await push_all(d, fixture_events("whatsapp_history", time.time() - 30 * DAY_S))
        await eventually(lambda: shard.handled == 2)
        assert await redis.zcard(keys.imported(d.tenant_id, BY_NUMBER)) == 2
        job = await DeletionJobs(redis, FakeClock()).schedule_user(d.tenant_id, "whatsapp", WA)
        worker = DeletionWorker(redis, d.settings, FakeClock(), settle_poll_s=0.05)
        while await worker.run_once():
            pass
        assert (await DeletionJobs(redis, FakeClock()).get(job.id)).status == "done"
        assert await texts(d, BY_NUMBER) == []
        assert not await redis.exists(keys.imported(d.tenant_id, BY_NUMBER))


async def test_history_imported_first_joins_the_live_conversation_of_the_business_scoped_id(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        # History comes keyed by the person's number (threads[].id) ...
        await push_all(d, fixture_events("whatsapp_history", time.time() - 3600))
        await eventually(lambda: shard.handled == 2)
        assert [t for _d, _k, t in await texts(d, BY_NUMBER)] == [ASKED, ANSWERED]
        # ... then the person writes live, keyed by their business-scoped id (and number).
        await push_all(d, fixture_events("whatsapp_text_bsuid"))
        await eventually(lambda: len(d.graph.sends) == 1 and shard.handled == 3)
        assert await texts(d, BY_NUMBER) == []
        assert [(dr, k, t) for dr, k, t in await texts(d, BY_BSUID)][:3] == [
            ("in", "imported", ASKED), ("out", "imported", ANSWERED), ("in", "message", LIVE)]
        listed = [c.conversation for c in await d.store().conversations(d.tenant_id)]
        assert listed == [BY_BSUID]
        # The imported messages keep their own times for retention where they went.
        assert await redis.zcard(keys.imported(d.tenant_id, BY_BSUID)) == 2
        assert d.texts_to(WA)  # answered (WhatsApp sends to the number when known)


async def test_history_imported_after_live_messages_lands_in_their_conversation(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await push_all(d, fixture_events("whatsapp_text_bsuid"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await push_all(d, fixture_events("whatsapp_history", time.time() - 7200))
        await eventually(lambda: shard.handled == 3)
        assert not await redis.exists(keys.history(d.tenant_id, BY_NUMBER))
        kinds = [(dr, k, t) for dr, k, t in await texts(d, BY_BSUID)]
        assert ("in", "imported", ASKED) in kinds and ("out", "imported", ANSWERED) in kinds
        assert [c.conversation for c in await d.store().conversations(d.tenant_id)] == [BY_BSUID]
        assert len(d.graph.sends) == 1  # imported history answers nothing


async def test_business_app_edits_and_deletions_apply_to_the_business_message(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await push_all(d, fixture_events("whatsapp_text_bsuid"))
        await eventually(lambda: len(d.graph.sends) == 1)
        # The business answers from the Business app, then corrects its link.
        await push_all(d, fixture_events("whatsapp_smb_message_echoes"))
        await push_all(d, fixture_events("whatsapp_smb_echo_edit"))
        await eventually(lambda: shard.handled == 3)
        stored = await texts(d, BY_BSUID)
        assert ("out", "agent", ECHOED) in stored and ("out", "edit", ECHO_EDITED) in stored
        ctx = await d.stored_context(BY_BSUID)
        assert ctx is not None
        said = [t.content for t in ctx.turns if t.role == "assistant"]
        assert ECHO_EDITED in said and ECHOED not in said  # the model knows the new link

        # Then deletes it: it leaves the history (both versions), the model's turns and
        # the export; the person's message and the bot's reply stay.
        await push_all(d, fixture_events("whatsapp_smb_echo_revoke"))
        await eventually(lambda: shard.handled == 4)
        stored = await texts(d, BY_BSUID)
        assert all(ECHOED not in (t or "") and ECHO_EDITED not in (t or "")
                   for _d, _k, t in stored)
        assert ("in", "message", LIVE) in stored and ("out", "unsend", None) in stored
        assert any(k == "reply" for _d, k, _t in stored)
        await eventually(lambda: _assistant_turns_without(d, "quest-3"))
        exported = b"".join([c async for c in export_user(
            redis, FakeClock(), d.tenant_id, "whatsapp", BSUID, cipher=d.cipher())])
        assert b"quest-3" not in exported and LIVE.encode() in exported
        # The inbox card showed the deleted message as its last line: it shows none now.
        card = await redis.hgetall(keys.inbox_card(d.tenant_id, BY_BSUID))
        assert card[b"last_kind"] == b"agent" and b"last_text" not in card


async def _assistant_turns_without(d: object, words: str) -> bool:
    ctx = await d.stored_context(BY_BSUID)  # type: ignore[attr-defined]
    return ctx is not None and all(words not in t.content for t in ctx.turns)
