"""Restriction flags: set, cleared and listed per end user; bad input names the field."""

from __future__ import annotations

import pytest

from mtdesk.core import keys
from mtdesk.core.errors import ValidationError
from mtdesk.core.redis import Redis
from mtdesk.policy.restriction import is_restricted, list_restricted, restrict, unrestrict


async def test_a_restricted_user_is_flagged_where_the_shard_looks(redis: Redis) -> None:
    assert await restrict(redis, "t_1", "whatsapp", "US.1029") is True
    assert await restrict(redis, "t_1", "whatsapp", "US.1029") is False
    # The shard checks exactly this member of this set before answering.
    assert await redis.sismember(keys.restricted("t_1"), "whatsapp:US.1029")
    assert await is_restricted(redis, "t_1", "whatsapp", "US.1029")
    assert not await is_restricted(redis, "t_2", "whatsapp", "US.1029")
    assert not await is_restricted(redis, "t_1", "messenger", "US.1029")


async def test_lifting_a_restriction_and_listing(redis: Redis) -> None:
    await restrict(redis, "t_1", "messenger", 123)
    await restrict(redis, "t_1", "instagram", "456")
    assert await list_restricted(redis, "t_1") == [
        {"channel": "instagram", "user_id": "456"}, {"channel": "messenger", "user_id": "123"}]
    assert await unrestrict(redis, "t_1", "messenger", "123") is True
    assert await unrestrict(redis, "t_1", "messenger", "123") is False
    assert await list_restricted(redis, "t_1") == [{"channel": "instagram", "user_id": "456"}]


@pytest.mark.parametrize("channel, user_id, field", [
    ("sms", "1", "channel"), ("messenger", "", "user_id"), ("messenger", None, "user_id"),
    ("messenger", "a b", "user_id"), ("messenger", "x:y", "user_id"),
    ("messenger", "9" * 200, "user_id"),
])
async def test_bad_input_names_the_field(
    redis: Redis, channel: object, user_id: object, field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await restrict(redis, "t_1", channel, user_id)
    assert err.value.field == field
