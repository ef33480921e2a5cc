"""A plain ConversationShard against real Redis, the fake Graph API and the fake LLM:
every message answered once, in order, on the channel it came from."""

from __future__ import annotations

from shardkit import ACCOUNTS, desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.actors.stats import live_shards, read_shard_stats, render_shard_stats
from mtdesk.core.history import MessageStore
from mtdesk.core.redis import Redis


async def test_a_message_on_each_channel_gets_one_reply_stored_and_acked(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        for channel in ("messenger", "instagram", "whatsapp"):
            await d.push(d.message(f"hello from {channel}", user=f"u-{channel}", channel=channel))
        await eventually(lambda: len(d.graph.sends) == 3)
        for channel in ("messenger", "instagram", "whatsapp"):
            assert d.texts_to(f"u-{channel}") == [f"[gpt-test] You said: hello from {channel}"]
        # Handled events are acknowledged and deleted: nothing lingers in the streams.
        await eventually(lambda: shard.handled == 3)
        assert await d.pending() == 0
        assert await d.stream_lengths() == 0
        store = MessageStore(redis)
        conv = f"whatsapp:{ACCOUNTS['whatsapp']}:u-whatsapp"
        messages = await store.read(d.tenant_id, conv)
        assert [(m.direction, m.text) for m in messages] == [
            ("in", "hello from whatsapp"), ("out", "[gpt-test] You said: hello from whatsapp")]
        assert messages[1].reply_to == messages[0].message_id
        assert messages[1].provider == "openai"
        # WhatsApp replies quote the message they answer.
        wa = [s for s in d.graph.sends if s.account_id == ACCOUNTS["whatsapp"]][0]
        assert wa.body["context"]["message_id"] == messages[0].message_id


async def test_the_same_inbound_delivered_twice_is_answered_once(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        event = d.message("where is my order?", mid="m.dup.1")
        await d.push(event)
        await d.push(event)  # a redelivery the gateway's dedup did not catch
        await eventually(lambda: shard.handled == 2)
        await d.push(event)  # and once more, after it was answered
        await eventually(lambda: shard.handled == 3)
        assert d.texts_to("U1") == ["[gpt-test] You said: where is my order?"]
        assert len(d.llm.chat_requests) == 1
        history = await MessageStore(redis).read(d.tenant_id, event.conversation)
        assert [m.direction for m in history] == ["in", "out"]


async def test_conversations_are_answered_concurrently(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        d.llm.latency_s = 1.0
        shard = await d.shard()
        await shard.start()
        for i in range(6):
            await d.push(d.message(f"question {i}", user=f"user{i}"))
        # All six are at the model at once, before any answer is back.
        await eventually(lambda: len(d.llm.chat_requests) == 6 and not d.graph.sends)
        await eventually(lambda: len(d.graph.sends) == 6)
        for i in range(6):
            assert d.texts_to(f"user{i}") == [f"[gpt-test] You said: question {i}"]


async def test_one_conversation_is_handled_in_order_with_its_context(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("first"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(d.message("second"))
        await eventually(lambda: len(d.graph.sends) == 2)
        prompt = d.llm.chat_requests[1].messages
        assert [(m["role"], m["content"]) for m in prompt[1:]] == [
            ("user", "first"), ("assistant", "[gpt-test] You said: first"), ("user", "second")]
        assert prompt[0]["role"] == "system" and "Acme" in prompt[0]["content"]


async def test_a_burst_is_answered_once_and_history_keeps_the_order(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        d.llm.latency_s = 0.5
        shard = await d.shard()
        await shard.start()
        first = d.message("hi")
        await d.push(first)
        await eventually(lambda: len(d.llm.chat_requests) == 1)
        # These arrive while the first reply is being made: answered together, once.
        burst = [d.message(t) for t in ("I ordered a lamp", "it arrived broken", "help")]
        for m in burst:
            await d.push(m)
        await eventually(lambda: shard.handled == 4)
        assert len(d.graph.sends) == 2
        second_prompt = d.llm.chat_requests[1].messages
        assert second_prompt[-1] == {"role": "user",
                                     "content": "I ordered a lamp\nit arrived broken\nhelp"}
        records = await ReplyStore(redis, ttl_s=60, history_ttl_s=60).load_many(
            d.tenant_id, [m.event_id for m in burst])
        assert records[0].state == "sent"
        assert [r.answered_by for r in records[1:]] == [burst[0].event_id] * 2
        history = await MessageStore(redis).read(d.tenant_id, first.conversation)
        assert [m.text for m in history if m.direction == "in"] == [
            "hi", "I ordered a lamp", "it arrived broken", "help"]


async def test_burst_window_groups_messages_sent_in_quick_succession(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, burst_window_ms=400) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("hello"))
        await d.push(d.message("are you there?"))
        await eventually(lambda: shard.handled == 2)
        assert len(d.graph.sends) == 1
        assert d.llm.chat_requests[0].messages[-1]["content"] == "hello\nare you there?"


async def test_an_attachment_only_message_is_described_to_the_model(
    redis: Redis, redis_url: str
) -> None:
    from mtdesk.core.events import Attachment

    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message(None, attachments=(Attachment(type="image", url="https://x/y.jpg"),),
                               type="image"))
        await eventually(lambda: len(d.graph.sends) == 1)
        last_user = d.llm.chat_requests[0].messages[-1]["content"]
        # The address does not answer: the model is told what was sent all the same.
        assert "The customer sent a picture. It could not be downloaded." in last_user


async def test_shard_publishes_metrics_the_gateway_can_render(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard(stats_interval_s=0.1)
        await shard.start()
        assert await live_shards(redis) == [0]  # published on start: /readyz can see it
        await d.push(d.message("hello"))
        await eventually(lambda: shard.handled == 1)

        async def published() -> bool:
            stats = await read_shard_stats(redis)
            return bool(stats) and any(
                s.name == "mtdesk_shard_replies_total" and s.labels.get("outcome") == "sent"
                for f in stats[0].families for s in f.samples)

        await eventually(published)
        text = render_shard_stats(await read_shard_stats(redis)).decode()
        assert 'mtdesk_shard_replies_total{outcome="sent",shard="0"} 1.0' in text
        assert "mtdesk_shard_stage_seconds_bucket" in text
        assert 'mtdesk_queue_pending_entries{partition="0",shard="0"}' in text
        # The sender's own series come along, labelled with the shard.
        assert any(line.startswith('mtdesk_sends_total{channel="messenger",outcome="sent",'
                                   'shard="0"}') for line in text.splitlines())
