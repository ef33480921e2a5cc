"""Retention: message data older than the tenant's period disappears, newer data stays;
a year passes in a second with the fake clock."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock, now_ms
from mtdesk.core.errors import NotFound, ValidationError
from mtdesk.core.history import MessageStore, StoredMessage, encode_message
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants
from mtdesk.policy.retention import (
    RetentionCollector,
    RetentionSweep,
    get_retention_days,
    read_retention_status,
    set_retention_days,
)

DAY = 86_400
SETTINGS = Settings()


def message(conv: str, text: str, at_ms: int) -> StoredMessage:
    channel, account, user = conv.split(":", 2)
    return StoredMessage(direction="in", message_id=f"m{at_ms}", kind="message", channel=channel,
                         account_id=account, user_id=user, timestamp_ms=at_ms, text=text)


async def store_at(redis: Redis, tid: str, conv: str, text: str, at_ms: int) -> None:
    """A message stored at ``at_ms`` of the fake clock, and a context for its conversation."""
    await MessageStore(redis).append(tid, message(conv, text, at_ms), now_ms=at_ms, at_ms=at_ms)
    await redis.set(keys.context(tid, conv), msgspec.msgpack.encode({"turns": [], "of": conv}))


async def texts(redis: Redis, tid: str, conv: str) -> list[str]:
    return [m.text or "" for m in await MessageStore(redis).read(tid, conv)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


async def new_tenant(redis: Redis, clock: FakeClock, name: str = "Shop") -> str:
    record, _ = await Tenants(redis, clock).create(name, "owner@shop.example.com")
    return record.id


async def test_a_year_later_everything_stored_now_is_gone(redis: Redis, clock: FakeClock) -> None:
    tid = await new_tenant(redis, clock)
    store = MessageStore(redis)
    conv = "messenger:111:9001"
    await store.append(tid, message(conv, "written today", now_ms(clock)), now_ms=now_ms(clock))
    await redis.set(keys.context(tid, conv), "ctx")
    sweep = RetentionSweep(redis, SETTINGS, clock, batch=2)

    first = await sweep.run()
    assert first.deleted == {}
    assert await texts(redis, tid, conv) == ["written today"]

    clock.advance(364 * DAY)
    assert (await sweep.run()).deleted == {}
    clock.advance(2 * DAY)
    report = await sweep.run()
    assert report.deleted == {"messages": 1, "conversations": 1, "contexts": 1}
    assert await texts(redis, tid, conv) == []
    assert not await redis.exists(keys.context(tid, conv), keys.history(tid, conv))
    assert await redis.zcard(keys.conversations(tid)) == 0


async def test_only_the_old_part_of_a_long_conversation_is_trimmed(
    redis: Redis, clock: FakeClock
) -> None:
    tid = await new_tenant(redis, clock)
    conv = "whatsapp:222:US.77"
    t = now_ms(clock)
    for days_ago, text in ((400, "very old"), (366, "just too old"), (364, "still kept"),
                           (1, "yesterday")):
        await store_at(redis, tid, conv, text, t - days_ago * DAY * 1000)
    report = await RetentionSweep(redis, SETTINGS, clock).run()
    assert report.deleted == {"messages": 2}
    assert await texts(redis, tid, conv) == ["still kept", "yesterday"]
    assert await redis.exists(keys.context(tid, conv))


async def test_a_tenant_may_keep_less_than_twelve_months(redis: Redis, clock: FakeClock) -> None:
    short = await new_tenant(redis, clock, "Short")
    default = await new_tenant(redis, clock, "Default")
    assert await set_retention_days(redis, SETTINGS, short, 30) == 30
    assert await get_retention_days(redis, SETTINGS, short) == 30
    assert await get_retention_days(redis, SETTINGS, default) == 365
    t = now_ms(clock)
    for tid in (short, default):
        await store_at(redis, tid, "instagram:333:17841", "forty days old", t - 40 * DAY * 1000)
        await store_at(redis, tid, "instagram:333:17842", "ten days old", t - 10 * DAY * 1000)
    sweep = RetentionSweep(redis, SETTINGS, clock)
    await sweep.run()
    assert await texts(redis, short, "instagram:333:17841") == []
    assert await texts(redis, short, "instagram:333:17842") == ["ten days old"]
    assert await texts(redis, default, "instagram:333:17841") == ["forty days old"]
    clock.advance(21 * DAY)
    await sweep.run()
    assert await texts(redis, short, "instagram:333:17842") == []
    assert await texts(redis, default, "instagram:333:17842") == ["ten days old"]


async def test_reply_and_outbound_state_older_than_the_cutoff_goes(
    redis: Redis, clock: FakeClock
) -> None:
    tid = await new_tenant(redis, clock)
    await set_retention_days(redis, SETTINGS, tid, 7)
    t = now_ms(clock)
    old, fresh = t - 8 * DAY * 1000, t - DAY * 1000
    await redis.hset(keys.reply(tid, "m_old"), mapping={"state": "sent", "text": "old answer",
                                                        "updated_ms": old})
    await redis.hset(keys.reply(tid, "m_new"), mapping={"state": "sent", "updated_ms": fresh})
    await redis.hset(keys.outbound(tid, "gm_old"), mapping={"conv": "c", "updated_ms": old})
    await redis.hset(keys.outbound(tid, "gm_new"), mapping={"conv": "c", "updated_ms": fresh})
    report = await RetentionSweep(redis, SETTINGS, clock, batch=1).run()
    assert report.deleted == {"replies": 1, "outbound": 1}
    assert not await redis.exists(keys.reply(tid, "m_old"), keys.outbound(tid, "gm_old"))
    assert await redis.exists(keys.reply(tid, "m_new"), keys.outbound(tid, "gm_new")) == 2


async def test_a_sent_messages_link_goes_with_its_history_entry(
    redis: Redis, clock: FakeClock
) -> None:
    """A stored reply's outbound link has no TTL of its own and no status until Meta
    reports one: the sweep removes it by its entry's time, with the entry."""
    tid = await new_tenant(redis, clock)
    await set_retention_days(redis, SETTINGS, tid, 7)
    t = now_ms(clock)
    store = MessageStore(redis)
    conv = "whatsapp:1003:W1"
    for mid, at in (("wamid.old", t - 8 * DAY * 1000), ("wamid.new", t - DAY * 1000)):
        await store.append(tid, StoredMessage(
            direction="out", message_id=mid, kind="reply", channel="whatsapp",
            account_id="1003", user_id="W1", timestamp_ms=at, text="hello",
            status="sent"), now_ms=at, at_ms=at)
    assert await redis.ttl(keys.outbound(tid, "wamid.old")) == -1
    report = await RetentionSweep(redis, SETTINGS, clock).run()
    assert report.deleted["outbound"] == 1
    assert not await redis.exists(keys.outbound(tid, "wamid.old"))
    assert await redis.hget(keys.outbound(tid, "wamid.new"), "conv") == conv.encode()
    assert [m.message_id for m in await store.read(tid, conv)] == ["wamid.new"]


async def test_old_dead_letters_are_trimmed(redis: Redis, clock: FakeClock) -> None:
    t = now_ms(clock)
    await redis.xadd(keys.DEAD_LETTERS, {"b": b"old body"}, id=f"{t - 400 * DAY * 1000}-0")
    await redis.xadd(keys.DEAD_LETTERS, {"b": b"new body"}, id=f"{t - DAY * 1000}-0")
    report = await RetentionSweep(redis, SETTINGS, clock).run()
    assert report.deleted == {"dead_letters": 1}
    assert [f[b"b"] for _, f in await redis.xrange(keys.DEAD_LETTERS)] == [b"new body"]


async def test_a_run_for_one_tenant_leaves_the_others_alone(redis: Redis, clock: FakeClock) -> None:
    one, other = await new_tenant(redis, clock, "One"), await new_tenant(redis, clock, "Other")
    t = now_ms(clock)
    for tid in (one, other):
        await store_at(redis, tid, "messenger:1:2", "old", t - 400 * DAY * 1000)
    await RetentionSweep(redis, SETTINGS, clock).run([one])
    assert await texts(redis, one, "messenger:1:2") == []
    assert await texts(redis, other, "messenger:1:2") == ["old"]


async def test_runs_are_recorded_for_metrics(redis: Redis, clock: FakeClock) -> None:
    tid = await new_tenant(redis, clock)
    t = now_ms(clock)
    await store_at(redis, tid, "messenger:1:2", "old", t - 400 * DAY * 1000)
    await store_at(redis, tid, "messenger:1:3", "old too", t - 500 * DAY * 1000)
    sweep = RetentionSweep(redis, SETTINGS, clock)
    await sweep.run()
    await sweep.run()
    status = await read_retention_status(redis)
    assert status.deleted == {"messages": 2, "conversations": 2, "contexts": 2}
    assert status.last_run_ms == t
    registry = CollectorRegistry()
    collector = RetentionCollector()
    registry.register(collector)
    await collector.refresh(redis)
    text = generate_latest(registry).decode()
    assert 'mtdesk_retention_deleted_total{type="messages"} 2.0' in text
    line = next(x for x in text.splitlines()
                if x.startswith("mtdesk_retention_last_run_timestamp_seconds "))
    assert float(line.split()[1]) == pytest.approx(t / 1000)


@pytest.mark.parametrize("days", [0, 366, -1, "30", 3.5, True, None])
async def test_a_retention_outside_one_to_365_days_is_refused(
    redis: Redis, clock: FakeClock, days: object
) -> None:
    tid = await new_tenant(redis, clock)
    with pytest.raises(ValidationError) as err:
        await set_retention_days(redis, SETTINGS, tid, days)
    assert err.value.field == "days"


async def test_retention_of_an_unknown_tenant_is_not_found(redis: Redis) -> None:
    with pytest.raises(NotFound):
        await set_retention_days(redis, SETTINGS, "t_nobody", 30)


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
async def test_a_continuing_conversation_forgets_turns_older_than_the_cutoff(
    redis: Redis, clock: FakeClock, sealed: bool
) -> None:
    from mtdesk.actors.turns import ConversationContext, decode_context, encode_context
    from mtdesk.core.ports import ChatMessage
    from mtdesk.core.sealing import TenantCipher
    from mtdesk.core.secret import Secret
    from mtdesk.policy.vault import generate_key

    settings = msgspec.structs.replace(
        SETTINGS, encryption_keys=(Secret(generate_key()),) if sealed else ())
    tid = await new_tenant(redis, clock)
    key = await TenantCipher.from_settings(redis, settings).key(tid)
    conv = "messenger:111:9002"
    t = now_ms(clock)
    old, new = t - 400 * DAY * 1000, t - DAY * 1000
    history = keys.history(tid, conv)
    for at, direction, text in ((old, "in", "old question"), (old + 1, "out", "old answer"),
                                (new, "in", "new question"), (new + 1, "out", "new answer")):
        msg = StoredMessage(direction=direction, message_id=f"m{at}", channel="messenger",  # type: ignore[arg-type]
                            kind="message" if direction == "in" else "reply", account_id="111",
                            user_id="9002", timestamp_ms=at, text=text)
        # Raw entries: MessageStore.append would also write the replies' outbound status
        # records, which the sweep counts separately (see the reply/outbound test).
        await redis.xadd(history, {"m": encode_message(msg, key)}, id=f"{at}-*")
    await redis.zadd(keys.conversations(tid), {conv: new + 1})
    turns = [ChatMessage("user", "old question"), ChatMessage("assistant", "old answer"),
             ChatMessage("user", "new question"), ChatMessage("assistant", "new answer")]
    await redis.set(keys.context(tid, conv),
                    encode_context(ConversationContext(turns=turns, last_inbound_ms=new), key, conv),
                    ex=3600)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.ERASURE_NOTICES)

    report = await RetentionSweep(redis, settings, clock).run()

    assert report.deleted == {"messages": 2, "context_turns": 1}
    raw = await redis.get(keys.context(tid, conv))
    assert (b"new question" not in raw) is sealed  # sealed again when it was sealed
    ctx = decode_context(raw, key, conv)
    assert [m.content for m in ctx.turns] == ["new question", "new answer"]
    assert ctx.last_inbound_ms == new and await redis.ttl(keys.context(tid, conv)) > 0
    notice = None
    for _ in range(20):  # the subscribe confirmation comes first (and reads as None)
        notice = notice or await pubsub.get_message(timeout=0.1)
    assert notice is not None and json.loads(notice["data"]) == {
        "scope": "conversations", "tenant": tid, "conversations": [conv]}
    await pubsub.aclose()
    # A second run finds nothing more to cut.
    assert (await RetentionSweep(redis, settings, clock).run()).deleted == {}
