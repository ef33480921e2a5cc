"""What is recorded but never answered: echoes, hand-off, receipts and statuses, stale
replays, restricted users, disabled bots, disconnected channels."""

from __future__ import annotations

import time

from shardkit import ACCOUNTS, APP_ID, desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.core import keys
from mtdesk.core.events import Echo, Receipt, Status, StatusError, Unsend
from mtdesk.core.history import OUTSIDE_WINDOW
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.policy.quotas import read_usage


def _now() -> int:
    return int(time.time() * 1000)


def _echo(user: str, mid: str, *, app_id: str | None, metadata: str | None = None) -> Echo:
    return Echo(event_id=mid, channel="messenger", account_id=ACCOUNTS["messenger"],
                user_id=user, timestamp_ms=_now(), app_id=app_id, metadata=metadata,
                text="typed by someone")


async def test_echo_of_our_own_send_is_never_answered(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(_echo("U1", "m.echo.1", app_id=APP_ID))
        await d.push(_echo("U1", "m.echo.2", app_id=None, metadata="mtdesk:m.in#0"))
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == [] and d.llm.chat_requests == []
        assert not await redis.exists(keys.paused(d.tenant_id, f"messenger:{ACCOUNTS['messenger']}:U1"))


async def test_a_human_agents_echo_pauses_the_bot_for_that_conversation(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, handoff_pause_s=600) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(_echo("U1", "m.agent.1", app_id="263902037430900"))
        await eventually(lambda: shard.handled == 1)
        await d.push(d.message("thanks, and one more thing", user="U1"))
        await d.push(d.message("hello", user="U2"))  # another conversation still answered
        await eventually(lambda: shard.handled == 3)
        assert d.texts_to("U1") == []
        assert d.texts_to("U2") == ["[gpt-test] You said: hello"]
        conv = f"messenger:{ACCOUNTS['messenger']}:U1"
        ttl = await redis.ttl(keys.paused(d.tenant_id, conv))
        assert 0 < ttl <= 600
        history = await d.store().read(d.tenant_id, conv)
        assert [(m.direction, m.kind, m.reason) for m in history] == [
            ("out", "agent", None), ("in", "message", "paused: human agent")]


async def test_statuses_only_move_forward_and_131047_says_outside_the_window(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        first = d.message("hi", user="W1", channel="whatsapp")
        await d.push(first)
        await eventually(lambda: len(d.graph.sends) == 1)
        mid = d.graph.sends[0].message_id
        assert mid
        common = dict(channel="whatsapp", account_id=ACCOUNTS["whatsapp"], user_id="W1",
                      message_id=mid)
        await d.push(Status(event_id="st1", timestamp_ms=_now(), status="read", **common))
        await d.push(Status(event_id="st2", timestamp_ms=_now(), status="delivered", **common))
        await d.push(Status(event_id="st3", timestamp_ms=_now(), status="sent", **common))
        await eventually(lambda: shard.handled == 4)
        store = d.store()
        history = await store.read(d.tenant_id, first.conversation)
        assert [m.status for m in history if m.direction == "out"] == ["read"]

        await d.push(d.message("again", user="W1", channel="whatsapp"))
        await eventually(lambda: len(d.graph.sends) == 2)
        mid2 = d.graph.sends[1].message_id
        assert mid2
        failed = Status(event_id="st4", timestamp_ms=_now(), status="failed",
                        errors=(StatusError(code=131047, title="Re-engagement message"),),
                        **{**common, "message_id": mid2})
        await d.push(failed)
        await d.push(Status(event_id="st5", timestamp_ms=_now(), status="read",
                            **{**common, "message_id": mid2}))
        await eventually(lambda: shard.handled == 7)
        out = [m for m in await store.read(d.tenant_id, first.conversation) if m.direction == "out"]
        assert [(m.status, m.reason) for m in out] == [("read", None), ("failed", OUTSIDE_WINDOW)]
        assert len(d.graph.sends) == 2  # statuses are never answered


async def test_messenger_read_receipt_marks_messages_up_to_the_watermark(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        first = d.message("hi")
        await d.push(first)
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(Receipt(event_id="r1", channel="messenger", account_id=ACCOUNTS["messenger"],
                             user_id="U1", timestamp_ms=_now(), receipt="read",
                             watermark_ms=_now() + 1000))
        await eventually(lambda: shard.handled == 2)
        out = [m for m in await d.store().read(d.tenant_id, first.conversation)
               if m.direction == "out"]
        assert [m.status for m in out] == ["read"]


async def test_stale_replays_and_unsends_are_stored_not_answered(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        old = d.message("from six hours ago")
        await d.push(old, stale=True)
        await d.push(Unsend(event_id="u1", channel="messenger", account_id=ACCOUNTS["messenger"],
                            user_id="U1", timestamp_ms=_now(), target_id=old.event_id))
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == [] and d.llm.chat_requests == []
        # The stale message was stored (skipped), then the unsend took it out of the
        # history again (docs/channels.md): only the unsend's own record is left.
        history = await d.store().read(d.tenant_id, old.conversation)
        assert [(m.kind, m.status, m.reason) for m in history] == [
            ("unsend", "skipped", "unsend")]
        record = await ReplyStore(redis, ttl_s=60, history_ttl_s=60, cipher=d.cipher()).load(d.tenant_id,
                                                                          old.event_id)
        assert (record.state, record.reason) == ("skipped", "stale")


async def test_stop_word_restricts_the_user_and_nothing_of_theirs_reaches_a_model(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("stop", user="U7"))
        await eventually(lambda: shard.handled == 1)
        await d.push(d.message("what is my balance?", user="U7"))
        await eventually(lambda: shard.handled == 2)
        assert d.llm.chat_requests == [] and d.graph.sends == []
        assert await redis.sismember(keys.restricted(d.tenant_id), "messenger:U7")
        history = await d.store().read(
            d.tenant_id, f"messenger:{ACCOUNTS['messenger']}:U7")
        assert [m.reason for m in history] == ["stop word", "restricted"]


async def test_a_disabled_bot_records_but_does_not_answer(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url, bot=BotConfig(provider="openai", model="m",
                                                    enabled=False)) as d:
        shard = await d.shard()
        await shard.start()
        event = d.message("hello?")
        await d.push(event)
        await eventually(lambda: shard.handled == 1)
        assert d.graph.sends == [] and d.llm.chat_requests == []
        history = await d.store().read(d.tenant_id, event.conversation)
        assert [m.reason for m in history] == ["bot disabled"]


async def test_the_echo_of_a_reply_we_recorded_adds_nothing_to_the_transcript(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        first = d.message("hello")
        await d.push(first)
        await eventually(lambda: len(d.graph.sends) == 1)
        sent = d.graph.sends[0]
        assert sent.message_id
        await d.push(_echo("U1", sent.message_id, app_id=None,
                           metadata=sent.body.get("metadata")))
        await eventually(lambda: shard.handled == 2)
        history = await d.store().read(d.tenant_id, first.conversation)
        assert [(m.direction, m.kind) for m in history] == [("in", "message"), ("out", "reply")]
        assert len(d.graph.sends) == 1


async def test_a_tenant_past_its_monthly_allowance_is_recorded_but_not_answered(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, stripe_api_key=Secret("sk_test_x")) as d:
        await redis.hset(keys.billing(d.tenant_id), "allowance", 1)  # a one-message plan
        shard = await d.shard()
        await shard.start()
        first, second = d.message("first question"), d.message("second question", user="U2")
        await d.push(first)
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(second)
        await eventually(lambda: shard.handled == 2)
        assert len(d.graph.sends) == 1 and len(d.llm.chat_requests) == 1
        history = await d.store().read(d.tenant_id, second.conversation)
        assert [m.reason for m in history] == ["quota exceeded"]


async def test_without_billing_every_message_is_answered_and_counted(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        await redis.hset(keys.billing(d.tenant_id), "allowance", 1)  # ignored: billing off
        shard = await d.shard()
        await shard.start()
        for user in ("U1", "U2", "U3"):
            await d.push(d.message("a question", user=user))
        await eventually(lambda: len(d.graph.sends) == 3)
        # Counted by the shard's tally, written within its analytics interval.
        async def counted() -> bool:
            usage = await read_usage(redis, d.tenant_id, now_ms=_now(), enforce=False)
            assert usage.limit is None and usage.used <= 3
            return usage.used == 3
        await eventually(counted)
