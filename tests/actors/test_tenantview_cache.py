"""The shard's tenant cache: full means the least recently used answer goes, not all."""

from __future__ import annotations

import asyncio

from mtdesk.actors.tenantview import TenantView
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.core.tenants import Bots


async def test_a_full_cache_drops_only_the_least_recently_used_tenant(redis: Redis) -> None:
    bots = Bots(redis)
    for tid in ("t_a", "t_b", "t_c"):
        await bots.put(tid, BotConfig(system_prompt=f"old {tid}"))
    view = TenantView(redis, ttl_s=3600, max_entries=2)
    assert (await view.bot("t_a")).system_prompt == "old t_a"
    assert (await view.bot("t_b")).system_prompt == "old t_b"
    await view.bot("t_a")  # t_a used again: t_b is now the least recently used
    for tid in ("t_a", "t_b"):
        await bots.put(tid, BotConfig(system_prompt=f"new {tid}"))
    await view.bot("t_c")  # the cache is full: one entry must go
    assert (await view.bot("t_a")).system_prompt == "old t_a"  # still cached
    assert (await view.bot("t_b")).system_prompt == "new t_b"  # dropped, read afresh


async def test_an_answer_expires_after_its_ttl(redis: Redis) -> None:
    await Bots(redis).put("t_a", BotConfig(system_prompt="before"))
    view = TenantView(redis, ttl_s=0.001)
    assert (await view.bot("t_a")).system_prompt == "before"
    await Bots(redis).put("t_a", BotConfig(system_prompt="after"))
    await asyncio.sleep(0.01)
    assert (await view.bot("t_a")).system_prompt == "after"
