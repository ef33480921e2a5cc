"""A Redis written by the layout before hash tags is moved once to the tagged names."""

from __future__ import annotations

from mtdesk.core import keys, layout
from mtdesk.core.redis import Redis


async def test_older_names_are_renamed_once_keeping_groups_pending_entries_and_ttls(
    redis: Redis,
) -> None:
    await redis.hset("mt:t:t_old", mapping={"name": "Old shop", "status": "active"})
    await redis.xadd("mt:t:t_old:hist:messenger:1:2", {"m": b"hello"})
    await redis.set("mt:t:t_old:paused:messenger:1:2", b"1", ex=600)
    await redis.xadd("mt:in:3", {"e": b"x", "t": b"t_old"})
    await redis.xgroup_create("mt:in:3", keys.SHARD_GROUP, id="0")
    await redis.xreadgroup(keys.SHARD_GROUP, "shard-0", {"mt:in:3": ">"})
    await redis.hset(keys.bot("t_new"), "x", "1")  # already tagged: left alone
    await redis.set("mt:in:{3}x", b"odd")  # not a partition name of either layout

    assert await layout.migrate(redis) == 4

    assert (await redis.hgetall(keys.tenant("t_old")))[b"name"] == b"Old shop"
    assert len(await redis.xrange(keys.history("t_old", "messenger:1:2"))) == 1
    assert 0 < await redis.ttl(keys.paused("t_old", "messenger:1:2")) <= 600
    pending = await redis.xpending(keys.inbound(3), keys.SHARD_GROUP)
    assert pending["pending"] == 1
    assert not await redis.exists("mt:t:t_old", "mt:in:3", "mt:t:t_old:hist:messenger:1:2")
    assert await redis.exists(keys.bot("t_new"), "mt:in:{3}x") == 2
    # Recorded: a later start does not scan again, and a stray old name stays put.
    await redis.set("mt:t:t_late:bot", b"{}")
    assert await layout.migrate(redis) == 0
    assert await redis.exists("mt:t:t_late:bot")


async def test_a_name_whose_new_form_exists_is_never_overwritten(redis: Redis) -> None:
    await redis.set("mt:t:t_1:bot", b"old")
    await redis.set(keys.bot("t_1"), b"new")
    assert await layout.migrate(redis) == 0
    assert await redis.get(keys.bot("t_1")) == b"new"
    assert await redis.get("mt:t:t_1:bot") == b"old"
