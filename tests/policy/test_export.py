"""Export: one valid JSON document with everything of the tenant (all messages), streamed
in chunks, never a token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _privacy_world import World, build_world, make_settings

from mtdesk.core.clock import FakeClock, now_ms
from mtdesk.core.errors import NotFound, ValidationError
from mtdesk.core.history import MessageStore, StoredMessage
from mtdesk.core.redis import Redis
from mtdesk.core.tenants import Bots, parse_bot_config
from mtdesk.policy.export import export_tenant, export_user
from mtdesk.policy.restriction import restrict


@pytest.fixture
async def world(redis: Redis, tmp_path: Path) -> World:
    return await build_world(redis, make_settings(tmp_path), FakeClock())


async def collect(gen) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    chunks = [c async for c in gen]
    assert all(isinstance(c, bytes) and c for c in chunks)
    return b"".join(chunks), len(chunks)


async def test_tenant_export_is_complete_json_without_tokens(redis: Redis, world: World) -> None:
    w = world
    clock = FakeClock()
    await Bots(redis).put(w.a.id, parse_bot_config({"system_prompt": "Be kind."}, []))
    body, _ = await collect(export_tenant(redis, clock, w.a.id))
    doc = json.loads(body)
    assert doc["format"] == "mtdesk-export/1"
    assert doc["tenant"]["id"] == w.a.id and doc["tenant"]["email"] == "owner@a.example.com"
    assert {c["account_id"] for c in doc["channels"]} == {"1110001", "2220002"}
    assert doc["bot"]["system_prompt"] == "Be kind."
    assert [k["name"] for k in doc["knowledge"]] == ["faq of a"]
    assert {"channel": "messenger", "user_id": w.alice.user_id} in doc["restricted"]
    convs = {c["conversation"]: c for c in doc["conversations"]}
    assert set(convs) == {w.alice.conv, w.carol.conv, w.bob.conv}
    alice = convs[w.alice.conv]
    assert alice["user_id"] == w.alice.user_id
    assert [m.get("text") for m in alice["messages"]] == [
        w.alice.text, None, f"answer for {w.alice.text}"]
    assert alice["messages"][2]["status"] == "sent"
    # The picture alice sent is exported as a reference (type, size, digest, ref), never
    # as its bytes.
    picture = alice["messages"][1]
    assert picture["kind"] == "media" and picture["reply_to"] == w.alice.mid
    [ref] = picture["media"]
    assert ref["mime_type"] == "image/jpeg" and ref["size"] > 0 and len(ref["sha256"]) == 64
    assert ref["ref"] and b"JFIF" not in body
    for token in w.tokens.values():
        assert token.encode() not in body
    assert b"v1." not in body and b"token" not in body.replace(b"max_tokens", b"")
    assert b"api_key" not in body
    assert w.dave.text.encode() not in body and w.b.id.encode() not in body


async def test_a_large_tenant_streams_in_many_small_chunks_with_every_message(
    redis: Redis, world: World
) -> None:
    w = world
    store = MessageStore(redis)
    conv = "messenger:1110001:9000000000000999"
    at = now_ms(FakeClock())
    for i in range(1200):
        await store.append(w.a.id, StoredMessage(
            direction="in", message_id=f"m{i}", kind="message", channel="messenger",
            account_id="1110001", user_id="9000000000000999", timestamp_ms=at + i,
            text=f"message number {i} " + "x" * 50), now_ms=at + i)
    body, n_chunks = await collect(export_tenant(redis, FakeClock(), w.a.id, batch=100,
                                                 chunk_bytes=4096))
    assert n_chunks > 15  # streamed, not built in one piece
    doc = json.loads(body)
    texts = [m.get("text") for c in doc["conversations"] if c["conversation"] == conv
             for m in c["messages"]]
    assert texts == [f"message number {i} " + "x" * 50 for i in range(1200)]


async def test_one_end_user_export_holds_only_their_messages(redis: Redis, world: World) -> None:
    w = world
    await restrict(redis, w.a.id, "messenger", w.carol.user_id)
    body, _ = await collect(export_user(redis, FakeClock(), w.a.id, "messenger", w.carol.user_id))
    doc = json.loads(body)
    assert doc["user_id"] == w.carol.user_id and doc["restricted"] is True
    assert [c["conversation"] for c in doc["conversations"]] == [w.carol.conv]
    assert w.carol.text.encode() in body
    for other in (w.alice, w.bob, w.dave):
        assert other.text.encode() not in body and other.user_id.encode() not in body


async def test_an_unknown_user_exports_as_an_empty_list(redis: Redis, world: World) -> None:
    body, _ = await collect(export_user(redis, FakeClock(), world.a.id, "instagram", "424242"))
    assert json.loads(body)["conversations"] == []


async def test_bad_input_names_the_field(redis: Redis, world: World) -> None:
    with pytest.raises(ValidationError) as err:
        await collect(export_user(redis, FakeClock(), world.a.id, "telegram", "1"))
    assert err.value.field == "channel"
    with pytest.raises(NotFound):
        await collect(export_tenant(redis, FakeClock(), "t_unknown"))
