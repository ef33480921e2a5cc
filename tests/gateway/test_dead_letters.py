"""Which accounts a dead-lettered webhook body names, and whose it is: read from any
signed bytes without raising; a tenant only when it owns every account named."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.gateway.dead_letters import accounts_named, owner_fields

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["object", "entry", "id", "changes", "value", "metadata",
                         "phone_number_id", "x"]), inner, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_any_bytes_are_read_without_raising(body: bytes) -> None:
    assert isinstance(accounts_named(body), list)


@given(_json, st.sampled_from(["page", "instagram", "whatsapp_business_account", 3]))
def test_any_json_envelope_is_read_without_raising(entry: object, obj: object) -> None:
    body = json.dumps({"object": obj, "entry": [entry, {"id": entry}]}).encode()
    for account in accounts_named(body):
        channel, _, account_id = account.partition(":")
        assert channel in ("messenger", "instagram", "whatsapp") and account_id
        assert not any(c.isspace() for c in account_id)


def test_accounts_are_the_ones_the_channel_adapters_route_by() -> None:
    page = {"object": "page", "entry": [{"id": "111"}, {"id": 222}, {"id": "111"}, "junk"]}
    assert accounts_named(json.dumps(page).encode()) == ["messenger:111", "messenger:222"]
    wa = {"object": "whatsapp_business_account", "entry": [{"id": "waba", "changes": [
        {"value": {"metadata": {"phone_number_id": "555"}}}]}, {"id": "waba2"}]}
    assert accounts_named(json.dumps(wa).encode()) == ["whatsapp:555", "whatsapp:waba2"]
    assert accounts_named(b'{"object": "page", "entry": {"id": "1"}}') == []
    assert accounts_named(b"\xff not json") == []


async def test_the_owner_is_the_tenant_of_every_account_or_nobody(redis: Redis) -> None:
    await redis.hset(keys.account("messenger", "1"), "tenant", "t_a")
    await redis.hset(keys.account("messenger", "2"), "tenant", "t_a")
    await redis.hset(keys.account("messenger", "3"), "tenant", "t_b")

    def body(*ids: str) -> bytes:
        return json.dumps({"object": "page", "entry": [{"id": i} for i in ids]}).encode()

    assert await owner_fields(redis, body("1", "2")) == ("messenger:1 messenger:2", "t_a")
    assert await owner_fields(redis, body("1", "3")) == ("messenger:1 messenger:3", "")
    assert await owner_fields(redis, body("1", "9")) == ("messenger:1 messenger:9", "")
    assert await owner_fields(redis, b"undecodable") == ("", "")
