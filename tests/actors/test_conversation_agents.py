"""Meta's own agents and the WhatsApp Business app beside the bot, with a real shard,
the fake Graph API and the fake LLM: while another app owns a thread the bot is silent
and answers again when control comes back; what the business writes from the Business
app pauses the bot; imported history answers nothing; a person whose id changed goes
on in one conversation."""

from __future__ import annotations

import time

import msgspec
from shardkit import ACCOUNTS, APP_ID, desk, eventually

from mtdesk.core import keys
from mtdesk.core.clock import SystemClock
from mtdesk.core.events import Echo, Handover, Imported, UserChanged, conversation_key
from mtdesk.core.history import decode_message
from mtdesk.core.redis import Redis
from mtdesk.core.tenants import Channels
from mtdesk.policy.threads import OWNED_ELSEWHERE, read_thread_control
from mtdesk.policy.vault import TokenVault

PAGE = ACCOUNTS["messenger"]
PHONE = ACCOUNTS["whatsapp"]
AGENT_APP = "263902037430900"


def _now() -> int:
    return int(time.time() * 1000)


def handover(action: str, user: str, new_owner: str | None, ts: int | None = None) -> Handover:
    ts = ts or _now()
    return Handover(event_id=f"{action}:{PAGE}:{user}:{ts}", channel="messenger", account_id=PAGE,
                    user_id=user, timestamp_ms=ts, action=action,  # type: ignore[arg-type]
                    new_owner_app_id=new_owner)


async def _stored(redis: Redis, tenant_id: str, conv: str) -> list[tuple[str, str, str | None]]:
    # Kinds, statuses and reasons are in the clear: read without the data key.
    entries = await redis.xrange(keys.history(tenant_id, conv))
    return [(m.kind, m.status, m.reason) for m in (decode_message(f[b"m"]) for _e, f in entries)]


async def test_while_meta_agent_owns_the_thread_the_bot_is_silent_and_answers_once_it_is_back(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        conv = conversation_key("messenger", PAGE, "U20")
        await d.push(handover("take", "U20", AGENT_APP))
        await eventually(lambda: shard.handled == 1)
        await eventually(lambda: _owner(redis, d.tenant_id, conv, AGENT_APP))

        # The person writes; Meta delivers it to us on standby (the agent owns the thread).
        watched = d.message("where is my parcel?", user="U20", standby=True)
        await d.push(watched)
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == [] and d.llm.chat_requests == [] and d.graph.signals == []
        assert ("message", "skipped", OWNED_ELSEWHERE) in await _stored(redis, d.tenant_id, conv)

        # The agent passes the thread back: the bot answers the next message.
        await d.push(handover("pass", "U20", APP_ID))
        await d.push(d.message("thanks, one more question", user="U20"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U20")
        # The stored context says so once the reply's end persisted it (after the send).
        await eventually(lambda: _owner(redis, d.tenant_id, conv, ""))
        # The model knows what the person told the agent meanwhile.
        said = [m["content"] for m in d.llm.chat_requests[-1].messages if m["role"] == "user"]
        assert said == ["where is my parcel?", "thanks, one more question"]


async def _owner(redis: Redis, tenant_id: str, conv: str, owner: str) -> bool:
    return (await read_thread_control(redis, tenant_id, conv)).thread_owner == owner


async def test_a_message_delivered_while_the_thread_is_elsewhere_but_older_is_not_answered(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        taken_at = _now()
        await d.push(handover("take", "U21", AGENT_APP, ts=taken_at))
        late = msgspec.structs.replace(d.message("sent before the agent took over", user="U21"),
                                       timestamp_ms=taken_at - 5_000)
        await d.push(late)
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == []
        conv = late.conversation
        assert ("message", "skipped", OWNED_ELSEWHERE) in await _stored(redis, d.tenant_id, conv)


async def test_a_take_that_arrives_while_the_model_works_sends_nothing(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        d.llm.hold()
        await d.push(d.message("hello?", user="U22"))
        await eventually(lambda: d.llm.waiting == 1)
        await d.push(handover("take", "U22", AGENT_APP))
        d.llm.release()
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == []
        conv = conversation_key("messenger", PAGE, "U22")
        stored = await d.store().read(d.tenant_id, conv)
        assert [m.kind for m in stored if m.direction == "out"] == []


async def test_business_app_replies_are_the_business_speaking_and_pause_the_bot(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, handoff_pause_s=600) as d:
        shard = await d.shard()
        await shard.start()
        conv = conversation_key("whatsapp", PHONE, "15550001111")
        await d.push(Echo(event_id="wamid.ECHO1", channel="whatsapp", account_id=PHONE,
                          user_id="15550001111", timestamp_ms=_now(),
                          text="Hi, this is Ana from the shop"))
        await eventually(lambda: shard.handled == 1)
        await d.push(d.message("great, thanks Ana", user="15550001111", channel="whatsapp"))
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == []  # the bot waits while the person at the business answers
        stored = await d.store().read(d.tenant_id, conv)
        assert [(m.direction, m.kind, m.text) for m in stored][0] == (
            "out", "agent", "Hi, this is Ana from the shop")
        assert await redis.ttl(keys.paused(d.tenant_id, conv)) > 0
        # The number is now known to be shared with the Business app: paced at 20/s.
        [record] = [c for c in await Channels(redis, SystemClock()).list(d.tenant_id)
                    if c.channel == "whatsapp"]
        assert record.coexistence
        limiter = d.shards[0][1].limiter
        assert limiter is not None and limiter.limit("whatsapp", PHONE) == 20
        assert limiter.limit("messenger", PAGE) == d.settings.page_sends_per_s


async def test_a_number_provisioned_as_coexistence_is_paced_at_20_per_second(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, whatsapp_mps=80) as d:
        vault = TokenVault.from_settings(d.settings)
        await Channels(redis, SystemClock(), vault.encrypt).connect(
            d.tenant_id, "whatsapp", PHONE, "EAAB-test-token", coexistence=True)
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("hi", user="15550002222", channel="whatsapp"))
        await eventually(lambda: len(d.graph.sends) == 1)
        limiter = d.shards[0][1].limiter
        assert limiter is not None and limiter.limit("whatsapp", PHONE) == 20


async def test_imported_history_is_recorded_answers_nothing_and_opens_no_window(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        user = "15550003333"
        past = _now() - 30 * 86_400_000
        await d.push(Imported(event_id="wamid.H1", channel="whatsapp", account_id=PHONE,
                              user_id=user, timestamp_ms=past, direction="in",
                              text="do you deliver on Sundays?", status="read"))
        await d.push(Imported(event_id="wamid.H2", channel="whatsapp", account_id=PHONE,
                              user_id=user, timestamp_ms=past + 60_000, direction="out",
                              text="Yes, until noon.", status="delivered"))
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == [] and d.llm.chat_requests == [] and d.graph.signals == []
        conv = conversation_key("whatsapp", PHONE, user)
        stored = await d.store().read(d.tenant_id, conv)
        assert [(m.direction, m.kind, m.text, m.timestamp_ms) for m in stored] == [
            ("in", "imported", "do you deliver on Sundays?", past),
            ("out", "imported", "Yes, until noon.", past + 60_000)]
        ctx = await d.stored_context(conv)
        assert ctx is None or (ctx.last_inbound_ms == 0 and ctx.window_until_ms == 0)


async def test_a_person_who_changed_number_goes_on_in_one_conversation(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        old, new = "15550004444", "12195555358"
        await d.push(d.message("my order is 1234", user=old, channel="whatsapp"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(UserChanged(event_id="wamid.SYS1", channel="whatsapp", account_id=PHONE,
                                 user_id=old, wa_id=old, timestamp_ms=_now(),
                                 change="user_changed_number", new_user_id=new, new_wa_id=new,
                                 text=f"User Sheena changed from {old} to {new}"))
        await eventually(lambda: shard.handled == 2)
        old_conv = conversation_key("whatsapp", PHONE, old)
        new_conv = conversation_key("whatsapp", PHONE, new)
        assert await d.store().read(d.tenant_id, old_conv) == []
        assert not await redis.exists(keys.context(d.tenant_id, old_conv))
        moved = await d.store().read(d.tenant_id, new_conv)
        assert [(m.direction, m.kind) for m in moved] == [
            ("in", "message"), ("out", "reply"), ("in", "user_changed")]
        listed = [c.conversation for c in await d.store().conversations(d.tenant_id)]
        assert listed == [new_conv]

        # Writing from the new number: the bot remembers the order (no greeting again).
        await d.push(d.message("any news?", user=new, channel="whatsapp"))
        await eventually(lambda: len(d.graph.sends) == 2)
        said = [m["content"] for m in d.llm.chat_requests[-1].messages if m["role"] == "user"]
        assert said == ["my order is 1234", "any news?"]
        assert d.texts_to(new)
