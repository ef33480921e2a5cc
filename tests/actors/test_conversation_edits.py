"""Edits and unsends, as the person meant them: an edit is stored as a version of its
message and never answered on its own; an unsent message (and its versions) leaves the
history, the export and what the model is shown."""

from __future__ import annotations

import time

from shardkit import desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.actors.turns import without_texts
from mtdesk.core.clock import SystemClock
from mtdesk.core.events import Edit, Message, Unsend
from mtdesk.core.history import MessageStore
from mtdesk.core.ports import ChatMessage
from mtdesk.core.redis import Redis
from mtdesk.policy.export import export_user


def _now() -> int:
    return int(time.time() * 1000)


async def test_an_unsent_message_leaves_history_export_and_the_models_context(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        first = d.message("my card number is 4111 1111 1111 1111", user="U7")
        await d.push(first)
        await eventually(lambda: len(d.graph.sends) == 1)
        edit = Edit(event_id=f"edit:{first.event_id}:1", channel="messenger", account_id=first.account_id,
                    user_id="U7", timestamp_ms=_now(), target_id=first.event_id,
                    text="my card number is 4111 1111 1111 1112", version=1)
        await d.push(edit)
        store = d.store()
        conv = first.conversation
        await eventually(lambda: _kinds(store, d.tenant_id, conv, "edit"))
        assert len(d.graph.sends) == 1  # the edit itself is not answered

        await d.push(Unsend(event_id=f"unsend:{first.event_id}", channel="messenger",
                            account_id=first.account_id, user_id="U7", timestamp_ms=_now(),
                            target_id=first.event_id))
        await eventually(lambda: _kinds(store, d.tenant_id, conv, "unsend"))
        stored = await store.read(d.tenant_id, conv)
        # The person's message and its version are gone; the record that something was
        # unsent stays (no text), and so does the business's own reply.
        assert [(m.direction, m.kind) for m in stored] == [("out", "reply"), ("in", "unsend")]
        assert stored[1].text is None
        exported = b"".join([c async for c in export_user(redis, SystemClock(), d.tenant_id,
                                                           "messenger", "U7", cipher=d.cipher())])
        assert b"4111 1111 1111 1112" not in exported  # the edited version
        assert exported.count(b"4111 1111 1111 1111") == 1  # only inside the bot's echo-reply

        # The next answer's prompt no longer carries the unsent text, nor does the context.
        await d.push(d.message("thanks", user="U7"))
        await eventually(lambda: len(d.graph.sends) == 2)
        said = [m["content"] for m in d.llm.chat_requests[-1].messages if m["role"] == "user"]
        assert said == ["thanks"]
        context = await d.stored_context(conv)
        assert context is not None
        turns = context.turns
        assert [t.content for t in turns if t.role == "user"] == ["thanks"]


async def _kinds(store: MessageStore, tenant_id: str, conv: str, kind: str) -> bool:
    return any(m.kind == kind for m in await store.read(tenant_id, conv))


def test_without_texts_drops_the_latest_user_turn_of_each_text() -> None:
    turns = [ChatMessage("user", "yes"), ChatMessage("assistant", "ok"), ChatMessage("user", "yes"),
             ChatMessage("assistant", "yes")]
    assert without_texts(turns, ["yes"]) == [ChatMessage("user", "yes"), ChatMessage("assistant", "ok"),
                                             ChatMessage("assistant", "yes")]
    assert without_texts(turns, ["nothing like it"]) == turns


async def test_an_edit_of_a_message_still_waiting_is_what_gets_answered(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        typo = d.message("Do you ship to Canda?", user="U8")
        # Both arrive before the shard takes the message up (e.g. it was busy or restarting).
        await d.push(typo)
        await d.push(Edit(event_id=f"edit:{typo.event_id}:1", channel="messenger",
                          account_id=typo.account_id, user_id="U8", timestamp_ms=_now(),
                          target_id=typo.event_id, text="Do you ship to Canada?", version=1))
        shard = await d.shard()
        await shard.start()
        await eventually(lambda: len(d.graph.sends) == 1)
        said = [m["content"] for m in d.llm.chat_requests[-1].messages if m["role"] == "user"]
        assert said == ["Do you ship to Canada?"]
        store = d.store()
        await eventually(lambda: _kinds(store, d.tenant_id, typo.conversation, "edit"))
        assert len(d.graph.sends) == 1 and len(d.llm.chat_requests) == 1


def _edit(of: Message, text: str, version: int = 1) -> Edit:
    return Edit(event_id=f"edit:{of.event_id}:{version}", channel="messenger",
                account_id=of.account_id, user_id=of.user_id, timestamp_ms=_now(),
                target_id=of.event_id, text=text, version=version)


def _unsend(of: Message) -> Unsend:
    return Unsend(event_id=f"unsend:{of.event_id}", channel="messenger", account_id=of.account_id,
                  user_id=of.user_id, timestamp_ms=_now(), target_id=of.event_id)


async def test_an_edit_while_the_answer_is_being_made_is_what_gets_answered_once(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard, typo = await d.answering("Do you ship to Canda?", user="U9")  # the model is working on the typo
        await d.push(_edit(typo, "Do you ship to Canada?"))
        # The stale answer is dropped; the model is asked again with the edited text.
        await eventually(lambda: len(d.llm.chat_requests) == 2)
        d.llm.release()
        await eventually(lambda: len(d.graph.sends) == 1)
        said = [m["content"] for m in d.llm.chat_requests[-1].messages if m["role"] == "user"]
        assert said == ["Do you ship to Canada?"]
        store = d.store()
        await eventually(lambda: _kinds(store, d.tenant_id, typo.conversation, "edit"))
        await eventually(lambda: shard.handled == 2)
        assert len(d.graph.sends) == 1  # answered once, not once per version
        context = await d.stored_context(typo.conversation)
        assert context is not None
        turns = context.turns
        assert [t.content for t in turns if t.role == "user"] == ["Do you ship to Canada?"]


async def test_a_message_unsent_while_the_answer_is_being_made_is_not_answered(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard, oops = await d.answering("my password is hunter2", user="U10")
        await d.push(_unsend(oops))
        await eventually(lambda: shard.handled == 2)
        d.llm.release()
        store = d.store()
        await eventually(lambda: _kinds(store, d.tenant_id, oops.conversation, "unsend"))
        assert d.graph.sends == []
        stored = await store.read(d.tenant_id, oops.conversation)
        assert [(m.direction, m.kind) for m in stored] == [("in", "unsend")]
        assert not any(m.text and "hunter2" in m.text for m in stored)
        exported = b"".join([c async for c in export_user(redis, SystemClock(), d.tenant_id,
                                                           "messenger", "U10", cipher=d.cipher())])
        assert b"hunter2" not in exported
        context = await d.stored_context(oops.conversation)
        turns = context.turns if context else []
        assert not any("hunter2" in t.content for t in turns)

        # What the person writes next is answered, and the model never sees the unsent text.
        await d.push(d.message("hello", user="U10"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert all("hunter2" not in m["content"] for m in d.llm.chat_requests[-1].messages)


async def test_a_message_unsent_before_its_turn_is_never_answered_nor_kept(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        first = d.message("call me at 555-0100", user="U11")
        await d.push(first)
        await d.push(_unsend(first))  # both arrive before the shard takes the message up
        shard = await d.shard()
        await shard.start()
        await eventually(lambda: shard.handled == 2)
        assert d.graph.sends == [] and d.llm.chat_requests == [] and d.graph.signals == []
        stored = await d.store().read(d.tenant_id, first.conversation)
        assert [(m.kind, m.text) for m in stored] == [("unsend", None)]
        record = await ReplyStore(redis, ttl_s=60, history_ttl_s=60, cipher=d.cipher()).load(d.tenant_id,
                                                                          first.event_id)
        assert record.done  # a late redelivery of it is not answered either
