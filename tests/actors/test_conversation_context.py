"""What a conversation remembers: bounded recent turns, persisted with the data's TTL."""

from __future__ import annotations

from shardkit import desk, eventually

from mtdesk.actors.turns import describe_attachments
from mtdesk.core import keys
from mtdesk.core.events import Attachment, Message
from mtdesk.core.redis import Redis


async def test_the_model_sees_only_the_last_configured_turns(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url, history_turns=2, retention_days=30) as d:
        shard = await d.shard()
        await shard.start()
        for n, text in enumerate(("one", "two", "three"), start=1):
            await d.push(d.message(text))
            await eventually(lambda n=n: len(d.graph.sends) == n)
        prompt = [(m["role"], m["content"]) for m in d.llm.chat_requests[-1].messages[1:]]
        assert prompt == [("user", "two"), ("assistant", "[gpt-test] You said: two"),
                          ("user", "three")]
        conv = d.message("x").conversation
        context = await d.stored_context(conv)
        assert context is not None
        assert [t.content for t in context.turns] == ["three", "[gpt-test] You said: three"]
        assert context.last_inbound_ms > 0
        assert 29 * 86400 < await redis.ttl(keys.context(d.tenant_id, conv)) <= 30 * 86400


def test_attachments_are_described_with_their_captions() -> None:
    message = Message(event_id="w1", channel="whatsapp", account_id="1003", user_id="W1",
                      timestamp_ms=1, type="image",
                      attachments=(Attachment(type="image", caption="broken lamp"),))
    assert describe_attachments(message) == "(The customer sent: image, with the caption: broken lamp)"
