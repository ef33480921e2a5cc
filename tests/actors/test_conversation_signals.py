"""Read marks, typing and Meta's customer service window, as the person sees them: a
message taken up for an answer is marked read and typing shows until the reply; a
message that gets no reply gets no signal; outside the window the bot stays silent and
says why on the message. Real shard, real Redis, the fake Graph API and LLM."""

from __future__ import annotations

import time

import pytest
from shardkit import ACCOUNTS, Desk, desk, eventually

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.events import Message, Referral
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis

HOUR_MS = 3_600_000
BOT = BotConfig(provider="openai", model="gpt-test")


async def _reply(d: Desk, event_id: str) -> dict[str, str]:
    raw = await d.redis.hgetall(keys.reply(d.tenant_id, event_id))  # type: ignore[misc]
    return {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}  # text is sealed


async def _ended(d: Desk, event_id: str) -> bool:
    return (await _reply(d, event_id)).get("state") in ("sent", "failed", "skipped")


def _actions(d: Desk, channel: str) -> list[str | None]:
    return [s.action for s in d.graph.signals_to(ACCOUNTS[channel])]


async def test_messenger_marks_seen_then_types_before_the_reply(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        m = d.message("where is my order?", user="U1")
        await d.push(m)
        await eventually(lambda: len(d.graph.sends) == 1)
        assert _actions(d, "messenger") == ["mark_seen", "typing_on"]
        assert all(s.body["recipient"] == {"id": "U1"} for s in d.graph.signals)
        # Both shown before the answer arrived, none after it.
        assert max(s.time for s in d.graph.signals) <= d.graph.sends[0].time


async def test_whatsapp_reads_the_message_with_a_typing_indicator(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        m = d.message("hola", user="15550001111", channel="whatsapp", mid="wamid.IN1")
        await d.push(m)
        await eventually(lambda: len(d.graph.sends) == 1)
        assert [s.body for s in d.graph.signals_to(ACCOUNTS["whatsapp"])] == [{
            "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1",
            "typing_indicator": {"type": "text"}}]


async def test_typing_is_shown_again_while_the_model_works(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url, typing_interval_s=0.05) as d:
        await (await d.shard()).start()
        d.llm.hold()
        await d.push(d.message("a slow question", user="U2", channel="instagram"))
        await eventually(lambda: d.llm.waiting == 1)
        await eventually(lambda: _actions(d, "instagram").count("typing_on") >= 3)
        d.llm.release()
        await eventually(lambda: len(d.graph.sends) == 1)
        actions = _actions(d, "instagram")
        assert actions[0] == "mark_seen" and actions.count("mark_seen") == 1
        assert max(s.time for s in d.graph.signals) <= d.graph.sends[0].time
        shown = len(d.graph.signals)
        await d.push(d.message("thanks", user="U9", channel="instagram"))  # another person
        await eventually(lambda: len(d.graph.sends) == 2)
        # Once the reply went, the first person's typing was not shown again.
        assert [s for s in d.graph.signals[shown:] if s.body["recipient"]["id"] == "U2"] == []


async def test_messages_that_get_no_reply_get_no_signal(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        stale = d.message("old news", user="U3")
        stop = d.message("STOP", user="U4")
        await d.push(stale, stale=True)
        await d.push(stop)
        await eventually(lambda: _ended(d, stale.event_id))
        await eventually(lambda: _ended(d, stop.event_id))
        assert d.graph.signals == [] and d.graph.sends == []


async def test_read_receipts_off_keeps_typing_on_messenger_and_shows_nothing_on_whatsapp(
    redis: Redis, redis_url: str
) -> None:
    bot = BotConfig(provider="openai", model="gpt-test", read_receipts=False)
    async with desk(redis, redis_url, bot=bot) as d:
        await (await d.shard()).start()
        await d.push(d.message("hi", user="U5"))
        await d.push(d.message("hi", user="15550002222", channel="whatsapp"))
        await eventually(lambda: len(d.graph.sends) == 2)
        assert _actions(d, "messenger") == ["typing_on"]
        assert _actions(d, "whatsapp") == []


async def test_failing_signals_never_hold_back_the_reply(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        d.graph.fail_next_signal("*", 2, times=100, http_status=500)
        m = d.message("hello?", user="U6")
        await d.push(m)
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.graph.signals == []
        assert (await _reply(d, m.event_id))["state"] == "sent"


def _old(d: Desk, hours: float, **kw: object) -> Message:
    m = d.message("are you there?", **kw)  # type: ignore[arg-type]
    return Message(**{**{f: getattr(m, f) for f in m.__struct_fields__},
                      "timestamp_ms": int(time.time() * 1000 - hours * HOUR_MS)})


async def test_outside_the_24_hour_window_the_bot_stays_silent(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        late = _old(d, 25, user="U7")
        wa_late = _old(d, 30, user="15550003333", channel="whatsapp")
        await d.push(late)
        await d.push(wa_late)
        for m in (late, wa_late):
            await eventually(lambda m=m: _ended(d, m.event_id))  # type: ignore[misc]
            record = await _reply(d, m.event_id)
            assert (record["state"], record["reason"]) == ("skipped", "outside the 24 h window")
        assert d.graph.sends == [] and d.graph.signals == []


async def test_a_whatsapp_ad_referral_keeps_the_window_open_72_hours(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        ad = Referral(source="ad", ad_id="120200000", url="https://fb.me/ad", ctwa_clid="ARA1")
        m = _old(d, 30, user="15550004444", channel="whatsapp", origin=ad)
        await d.push(m)
        await eventually(lambda: len(d.graph.sends) == 1)
        assert (await _reply(d, m.event_id))["state"] == "sent"


async def test_a_window_that_closes_while_the_model_works_sends_nothing(
    redis: Redis, redis_url: str
) -> None:
    clock = FakeClock(time.time())
    async with desk(redis, redis_url) as d:
        shard = await d.shard(clock=clock)
        await shard.start()
        d.llm.hold()
        m = d.message("one more thing", user="U8")
        await d.push(m)
        await eventually(lambda: d.llm.waiting == 1)
        clock.advance(24 * 3600 + 60)
        d.llm.release()
        await eventually(lambda: _ended(d, m.event_id))
        record = await _reply(d, m.event_id)
        assert (record["state"], record["reason"]) == ("failed", "outside the 24 h window")
        assert d.graph.sends == []
        assert shard.metrics.count("outside_window") == 1 and shard.metrics.count("sent") == 0


@pytest.mark.parametrize(("channel", "code", "subcode", "reason"), [
    ("whatsapp", 131047, None, "outside the 24 h window (131047)"),
    ("whatsapp", 131049, None, "not delivered: Meta's per-person marketing limit (131049)"),
    ("messenger", 10, 2018278, "outside the 24 h window (10/2018278)"),
])
async def test_window_errors_from_meta_are_shown_on_the_message_never_sent(
    redis: Redis, redis_url: str, channel: str, code: int, subcode: int | None, reason: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        d.graph.fail_next(ACCOUNTS[channel], code, subcode)
        user = "15550005555" if channel == "whatsapp" else "U9"
        m = d.message("hello", user=user, channel=channel)
        await d.push(m)
        await eventually(lambda: _ended(d, m.event_id))
        record = await _reply(d, m.event_id)
        assert (record["state"], record["reason"]) == ("failed", reason)
        assert d.graph.sends == [] and len(d.graph.attempts) == 1  # not retried
        assert shard.metrics.count("outside_window") == 1 and shard.metrics.count("sent") == 0
