"""Tenant, channel and bot repositories over the real Redis."""

from __future__ import annotations

import pytest

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import Conflict, NotFound, ValidationError
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import (
    Bots,
    Channels,
    Tenants,
    channel_token_aad,
    hash_api_key,
    parse_bot_config,
)
from mtdesk.policy.vault import TokenVault, generate_key

PROVIDERS = ("openai", "openrouter")


@pytest.fixture
def vault() -> TokenVault:
    return TokenVault([Secret(generate_key())])


async def dump(redis: Redis) -> bytes:
    """Every key and value in the database, as one byte string."""
    out = []
    async for key in redis.scan_iter(count=500):
        kind = (await redis.type(key)).decode()
        out.append(key)
        if kind == "string":
            out.append(await redis.get(key) or b"")
        elif kind == "hash":
            for k, v in (await redis.hgetall(key)).items():
                out += [k, v]
        elif kind == "set":
            out += list(await redis.smembers(key))
        elif kind == "zset":
            out += list(await redis.zrange(key, 0, -1))
    return b"\n".join(out)


async def test_a_tenant_authenticates_with_its_key_stored_only_hashed(redis: Redis) -> None:
    tenants = Tenants(redis, FakeClock())
    record, api_key = await tenants.create("  Acme Shoes ", "owner@acme.example")
    assert record.name == "Acme Shoes"
    assert api_key.reveal().startswith("mtd_")
    assert await tenants.authenticate(api_key.reveal()) == record.id
    assert await tenants.authenticate(api_key.reveal() + "x") is None
    assert await tenants.authenticate("mtd_nope") is None
    blob = await dump(redis)
    assert api_key.reveal().encode() not in blob
    assert hash_api_key(api_key.reveal()).encode() in blob
    assert [t.id for t in await tenants.list()] == [record.id]


async def test_a_suspended_tenant_key_stops_working(redis: Redis) -> None:
    tenants = Tenants(redis, FakeClock())
    record, api_key = await tenants.create("Acme", "a@acme.example")
    await tenants.set_status(record.id, "suspended")
    assert await tenants.authenticate(api_key.reveal()) is None


@pytest.mark.parametrize(
    ("name", "email", "field"),
    [("", "a@b.co", "name"), ("x", "not-an-email", "email"), (None, "a@b.co", "name"),
     ("x" * 201, "a@b.co", "name"), ("ok", 5, "email")],
)
async def test_tenant_validation_names_the_field(
    redis: Redis, name: object, email: object, field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await Tenants(redis, FakeClock()).create(name, email)
    assert err.value.field == field


async def test_connect_routes_the_account_and_stores_the_token_encrypted(
    redis: Redis, vault: TokenVault
) -> None:
    clock = FakeClock()
    tenant, _ = await Tenants(redis, clock).create("Acme", "a@acme.example")
    channels = Channels(redis, clock, vault.encrypt)
    rec = await channels.connect(tenant.id, "whatsapp", "106540352242922", "EAAtoken1", "5551")
    assert rec.status == "connected" and rec.token_kid == vault.current_kid
    route = await redis.hgetall(keys.account("whatsapp", "106540352242922"))
    assert (route[b"tenant"], route[b"channel_id"]) == (tenant.id.encode(), rec.id.encode())
    assert await redis.smembers(keys.app_user("5551")) == {f"{tenant.id}:{rec.id}".encode()}
    assert b"EAAtoken1" not in await dump(redis)
    sealed = await channels.token_ciphertext(tenant.id, rec.id)
    assert vault.decrypt(sealed, channel_token_aad(tenant.id, rec.id)).reveal() == "EAAtoken1"
    assert "EAAtoken1" not in repr(rec)

    again = await channels.connect(tenant.id, "whatsapp", "106540352242922", "EAAtoken2")
    assert again.id == rec.id
    sealed = await channels.token_ciphertext(tenant.id, rec.id)
    assert vault.decrypt(sealed, channel_token_aad(tenant.id, rec.id)).reveal() == "EAAtoken2"
    assert len(await channels.list(tenant.id)) == 1


async def test_an_account_of_another_tenant_is_a_conflict(redis: Redis, vault: TokenVault) -> None:
    clock = FakeClock()
    a, _ = await Tenants(redis, clock).create("A", "a@a.example")
    b, _ = await Tenants(redis, clock).create("B", "b@b.example")
    channels = Channels(redis, clock, vault.encrypt)
    await channels.connect(a.id, "messenger", "123", "tok")
    with pytest.raises(Conflict) as err:
        await channels.connect(b.id, "messenger", "123", "tok2")
    assert err.value.field == "account_id"
    # The same number on another channel is another account.
    await channels.connect(b.id, "instagram", "123", "tok2")


async def test_disconnect_drops_routing_and_token_and_frees_the_account(
    redis: Redis, vault: TokenVault
) -> None:
    clock = FakeClock()
    a, _ = await Tenants(redis, clock).create("A", "a@a.example")
    b, _ = await Tenants(redis, clock).create("B", "b@b.example")
    channels = Channels(redis, clock, vault.encrypt)
    rec = await channels.connect(a.id, "instagram", "17841400000", "tok")
    gone = await channels.disconnect(a.id, rec.id)
    assert gone.status == "disconnected" and gone.token_kid is None
    assert await channels.resolve("instagram", "17841400000") is None
    assert await channels.token_ciphertext(a.id, rec.id) is None
    with pytest.raises(NotFound):
        await channels.disconnect(b.id, rec.id)  # not B's channel
    await channels.connect(b.id, "instagram", "17841400000", "tok-b")
    assert (await channels.resolve("instagram", "17841400000"))[0] == b.id


async def test_a_dead_token_marks_the_channel_but_keeps_routing(
    redis: Redis, vault: TokenVault
) -> None:
    clock = FakeClock()
    a, _ = await Tenants(redis, clock).create("A", "a@a.example")
    channels = Channels(redis, clock, vault.encrypt)
    rec = await channels.connect(a.id, "messenger", "42", "tok")
    await channels.mark_token_invalid(a.id, rec.id, "graph error 190")
    after = await channels.get(a.id, rec.id)
    assert after.status == "disconnected" and after.disconnected_reason == "graph error 190"
    assert await channels.resolve("messenger", "42") == (a.id, rec.id)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"channel": "telegram"}, "channel"), ({"account_id": "abc"}, "account_id"),
     ({"access_token": ""}, "access_token"), ({"access_token": "a b"}, "access_token"),
     ({"connected_by": "x1"}, "connected_by")],
)
async def test_channel_validation_names_the_field(
    redis: Redis, vault: TokenVault, body: dict[str, str], field: str
) -> None:
    tenant, _ = await Tenants(redis, FakeClock()).create("A", "a@a.example")
    args = {"channel": "messenger", "account_id": "1", "access_token": "t"} | body
    with pytest.raises(ValidationError) as err:
        await Channels(redis, FakeClock(), vault.encrypt).connect(tenant.id, **args)
    assert err.value.field == field


async def test_bot_config_round_trips_and_defaults_to_extractive(redis: Redis) -> None:
    bots = Bots(redis)
    assert (await bots.get("t_x")).provider == "extractive"
    cfg = parse_bot_config(
        {"provider": "openai", "model": "gpt-4o-mini", "fallback": ["openrouter:x/y"]},
        PROVIDERS,
    )
    await bots.put("t_x", cfg)
    assert await bots.get("t_x") == cfg


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "nope"}, "provider"),
        ({"provider": "openai"}, "model"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"fallback": ["openai"]}, "fallback"),
        ({"fallback": ["bogus:m"]}, "fallback"),
        ({"colour": "red"}, "colour"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"grounding": "vibes"}, "grounding"),
    ],
)
def test_bot_validation_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_bot_config(body, PROVIDERS)
    assert err.value.field == field


def test_bot_config_partial_update_keeps_the_rest() -> None:
    base = BotConfig(provider="openai", model="m", system_prompt="Be brief.")
    cfg = parse_bot_config({"temperature": 1}, PROVIDERS, base)
    assert (cfg.model, cfg.system_prompt, cfg.temperature) == ("m", "Be brief.", 1.0)
