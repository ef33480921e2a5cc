"""The message store: append, read with statuses joined, forward-only statuses, listing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core import keys
from mtdesk.core.errors import ValidationError
from mtdesk.core.events import Attachment
from mtdesk.core.history import (
    OUTSIDE_WINDOW,
    MessageStore,
    StoredMessage,
    decode_message,
    encode_message,
)
from mtdesk.core.redis import Redis

T = "t_1"
CONV = "whatsapp:1003:W1"


def _in(mid: str, text: str, ts: int = 1_000) -> StoredMessage:
    return StoredMessage(direction="in", message_id=mid, kind="message", channel="whatsapp",
                         account_id="1003", user_id="W1", timestamp_ms=ts, text=text)


def _out(mid: str, text: str, ts: int = 2_000) -> StoredMessage:
    return StoredMessage(direction="out", message_id=mid, kind="reply", channel="whatsapp",
                         account_id="1003", user_id="W1", timestamp_ms=ts, text=text,
                         reply_to="wamid.in1", provider="openai", model="m", status="sent")


async def test_messages_read_back_in_order_with_the_current_status(redis: Redis) -> None:
    store = MessageStore(redis, retention_days=30)
    await store.append(T, _in("wamid.in1", "hi"), now_ms=10)
    entry = await store.append(T, _out("wamid.out1", "hello!"), now_ms=11)
    assert await store.update_status(T, "wamid.out1", "delivered", now_ms=12)
    messages = await store.read(T, CONV)
    assert [(m.direction, m.text, m.status) for m in messages] == [
        ("in", "hi", "received"), ("out", "hello!", "delivered")]
    assert messages[1].entry == entry
    # Once Meta reported a status, the outbound hash expires with the retention period.
    ttl = await redis.ttl(keys.outbound(T, "wamid.out1"))
    assert 29 * 86400 < ttl <= 30 * 86400
    assert (await store.conversations(T))[0].conversation == CONV


async def test_status_moves_only_forward_and_failed_is_terminal(redis: Redis) -> None:
    store = MessageStore(redis)
    await store.append(T, _out("wamid.out1", "hello!"), now_ms=1)
    assert await store.update_status(T, "wamid.out1", "read", now_ms=2)
    assert not await store.update_status(T, "wamid.out1", "delivered", now_ms=3)
    assert not await store.update_status(T, "wamid.out1", "sent", now_ms=4)
    assert (await store.status_of(T, "wamid.out1"))["status"] == "read"
    await store.append(T, _out("wamid.out2", "again"), now_ms=5)
    assert await store.update_status(T, "wamid.out2", "failed", now_ms=6, reason=OUTSIDE_WINDOW)
    assert not await store.update_status(T, "wamid.out2", "read", now_ms=7)
    status = await store.status_of(T, "wamid.out2")
    assert (status["status"], status["reason"]) == ("failed", OUTSIDE_WINDOW)


async def test_a_message_sent_shows_sent_until_meta_reports_more(redis: Redis) -> None:
    """Storing a sent message writes only its link (the status is the stored one until
    a webhook moves it): the console shows it sent, and the first status moves it."""
    store = MessageStore(redis)
    await store.append(T, _out("wamid.plain", "hello"), now_ms=1)
    assert (await store.read(T, CONV))[0].status == "sent"
    assert await store.update_status(T, "wamid.plain", "sent", now_ms=2)
    assert not await store.update_status(T, "wamid.plain", "sent", now_ms=3)
    assert await store.update_status(T, "wamid.plain", "delivered", now_ms=4)
    assert (await store.read(T, CONV))[0].status == "delivered"


async def test_a_status_arriving_before_our_record_is_kept(redis: Redis) -> None:
    store = MessageStore(redis)
    assert await store.update_status(T, "wamid.early", "delivered", now_ms=1, conversation=CONV)
    await store.append(T, _out("wamid.early", "fast"), now_ms=2)
    [message] = await store.read(T, CONV)
    assert message.status == "delivered"


async def test_every_conversation_and_message_can_be_iterated(redis: Redis) -> None:
    store = MessageStore(redis)
    for u in range(30):
        conv_msg = StoredMessage(direction="in", message_id=f"m{u}", kind="message",
                                 channel="messenger", account_id="1001", user_id=f"U{u}",
                                 timestamp_ms=u, text="x")
        await store.append(T, conv_msg, now_ms=u)
    for i in range(12):
        await store.append(T, _in(f"wamid.{i}", f"text {i}"), now_ms=100 + i)
    convs = [c async for c in store.iter_conversations(T, batch=7)]
    assert len(convs) == 31 and CONV in convs
    texts = [m.text async for m in store.iter_messages(T, CONV, batch=5)]
    assert texts == [f"text {i}" for i in range(12)]


async def test_a_watermark_receipt_moves_earlier_outbound_messages(redis: Redis) -> None:
    store = MessageStore(redis)
    await store.append(T, _out("m.1", "one", ts=1_000), now_ms=1)
    await store.append(T, _out("m.2", "two", ts=5_000), now_ms=2)
    assert await store.mark_read_up_to(T, CONV, "read", 2_000, now_ms=3) == 1
    assert [m.status for m in await store.read(T, CONV)] == ["read", "sent"]


@given(
    text=st.one_of(st.none(), st.text(max_size=200)),
    caption=st.one_of(st.none(), st.text(max_size=50)),
    ts=st.integers(min_value=0, max_value=2**53),
)
def test_stored_messages_round_trip_through_msgpack(
    text: str | None, caption: str | None, ts: int
) -> None:
    message = StoredMessage(direction="in", message_id="mid.1", kind="message",
                            channel="instagram", account_id="1002", user_id="IG9",
                            timestamp_ms=ts, text=text,
                            attachments=(Attachment(type="image", caption=caption),))
    assert decode_message(encode_message(message)) == message


async def test_an_explicit_time_sets_the_entry_id_and_older_than_the_last_is_refused(
    redis: Redis,
) -> None:
    store = MessageStore(redis)
    first = await store.append(T, _in("wamid.a", "a year ago"), now_ms=5, at_ms=1_000_000)
    again = await store.append(T, _in("wamid.b", "same ms"), now_ms=6, at_ms=1_000_000)
    assert (first, again) == ("1000000-0", "1000000-1")
    with pytest.raises(ValidationError) as err:
        await store.append(T, _in("wamid.c", "before the last"), now_ms=7, at_ms=999_999)
    assert err.value.field == "at_ms"
    with pytest.raises(ValidationError):
        await store.append(T, _in("wamid.d", "negative"), now_ms=7, at_ms=-1)
    assert [m.text for m in await store.read(T, CONV)] == ["a year ago", "same ms"]
    # Without a time, Redis's clock (far later than 1970) names the entry.
    later = await store.append(T, _in("wamid.e", "now"), now_ms=8)
    assert int(later.split("-")[0]) > 1_600_000_000_000
