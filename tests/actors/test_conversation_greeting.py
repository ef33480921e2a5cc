"""The bot's greeting opens the first reply of a new conversation, once, whatever happens."""

from __future__ import annotations

import time

from shardkit import ACCOUNTS, desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.channels.outbound import split_text
from mtdesk.core import keys
from mtdesk.core.events import Echo
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis

HELLO = "Hi, I'm Acme's assistant!"
GREETER = BotConfig(provider="openai", model="gpt-test", system_prompt="You are Acme's assistant.",
                    greeting=HELLO)


async def test_a_new_person_gets_the_greeting_with_the_first_answer_only(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("do you ship to Norway?", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(d.message("and to Sweden?", user="U1"))
        await d.push(d.message("hello", user="U2"))  # someone else: new as well
        await eventually(lambda: len(d.graph.sends) == 3)
        assert d.texts_to("U1") == [f"{HELLO}\n\n[gpt-test] You said: do you ship to Norway?",
                                    "[gpt-test] You said: and to Sweden?"]
        assert d.texts_to("U2") == [f"{HELLO}\n\n[gpt-test] You said: hello"]
        # The model never sees the greeting as something to answer: only the turns.
        assert all(HELLO not in m["content"] for m in d.llm.chat_requests[0].messages)


async def test_a_bot_without_greeting_answers_as_before(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("hello", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == ["[gpt-test] You said: hello"]


async def test_a_redelivered_first_message_gets_no_second_greeting(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER) as d:
        shard = await d.shard()
        await shard.start()
        first = d.message("hello", user="U1")
        await d.push(first)
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(first)  # Meta delivers it again
        await d.push(d.message("still there?", user="U1"))
        await eventually(lambda: shard.handled == 3)
        assert d.texts_to("U1") == [f"{HELLO}\n\n[gpt-test] You said: hello",
                                    "[gpt-test] You said: still there?"]


async def test_a_crash_in_the_middle_of_a_greeted_reply_resumes_without_greeting_again(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER) as d:
        # Part 0 (greeting and the answer's start) is accepted; part 1 meets a 503 and the
        # sender waits a long back-off, during which the shard crashes.
        first = await d.shard(sender_options={"base_delay_s": 60.0, "max_attempts": 3})
        d.graph.on_send = lambda _send: d.graph.fail_next("*", 0, http_status=503)
        await first.start()
        long = " ".join(f"sentence {i} of a long question." for i in range(80))
        await d.push(d.message(long, user="U1"))
        await eventually(lambda: len(d.graph.attempts) == 2)
        await first.abort()
        d.graph.on_send = None
        again = await d.shard()  # the same consumer: resumes its pending entry
        await again.start()
        await eventually(lambda: again.handled == 1)
        text = f"{HELLO}\n\n[gpt-test] You said: {long}"
        parts = split_text("messenger", text)
        assert len(parts) >= 2
        # Part 0 before the crash, then the rest of the same reply: one greeting.
        assert d.texts_to("U1") == parts
        assert len(d.llm.chat_requests) == 1  # the stored text, not a new answer
        conv = d.message("x", user="U1").conversation
        context = await d.stored_context(conv)
        assert context is not None and context.replied


async def test_a_crash_while_the_model_answers_greets_once_on_redelivery(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER) as d:
        first = await d.shard()
        await first.start()
        d.llm.latency_s = 2.0
        await d.push(d.message("hello", user="U1"))
        await eventually(lambda: len(d.llm.chat_requests) == 1)
        await first.abort()  # nothing was sent: the reply is still "generating"
        d.llm.latency_s = 0.0
        again = await d.shard()
        await again.start()
        await eventually(lambda: again.handled == 1)
        assert d.texts_to("U1") == [f"{HELLO}\n\n[gpt-test] You said: hello"]


async def test_nothing_is_sent_while_paused_and_the_first_real_reply_is_greeted(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER) as d:
        shard = await d.shard()
        await shard.start()
        conv = d.message("x", user="U1").conversation
        await redis.set(keys.paused(d.tenant_id, conv), b"1", ex=600)
        await d.push(d.message("anyone?", user="U1"))
        await eventually(lambda: shard.handled == 1)
        assert d.graph.sends == []
        await redis.delete(keys.paused(d.tenant_id, conv))
        await d.push(d.message("hello", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == [f"{HELLO}\n\n[gpt-test] You said: hello"]


async def test_after_a_human_agent_wrote_first_the_bot_does_not_greet(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER, handoff_pause_s=0) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(Echo(event_id="m.agent.1", channel="messenger",
                          account_id=ACCOUNTS["messenger"], user_id="U1",
                          timestamp_ms=int(time.time() * 1000), app_id="263902037430900",
                          text="Hello from Anna at Acme"))
        await eventually(lambda: shard.handled == 1)
        await d.push(d.message("hi Anna", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == ["[gpt-test] You said: hi Anna"]


async def test_without_remembered_turns_the_greeting_still_comes_once(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=GREETER, history_turns=0) as d:
        shard = await d.shard()
        await shard.start()
        events = [d.message(text, user="U1") for text in ("one", "two")]
        for n, event in enumerate(events, start=1):
            await d.push(event)
            await eventually(lambda n=n: len(d.graph.sends) == n)
        assert d.texts_to("U1") == [f"{HELLO}\n\n[gpt-test] You said: one",
                                    "[gpt-test] You said: two"]
        record = await ReplyStore(redis, ttl_s=60, history_ttl_s=60, cipher=d.cipher()).load(
            d.tenant_id, events[0].event_id)
        assert record.text.startswith(HELLO)  # stored with the reply: a resume resends it as is
