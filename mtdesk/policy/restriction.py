"""Restriction of processing: per end user, the bot stays silent and nothing of theirs
goes to an AI provider.

The flag is a member ``"{channel}:{user_id}"`` of the set ``keys.restricted(tenant)``.
The conversation shard checks it before answering (and adds a sender who writes one of
``settings.stop_words``); this module is how the tenant sets, clears and lists it.
Messages of a restricted user are still stored (restriction limits processing, not
keeping) and still erased or exported on request.
"""

from __future__ import annotations

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.policy.erasure.params import validate_end_user


def member(channel: str, user_id: str) -> str:
    return f"{channel}:{user_id}"


async def restrict(redis: Redis, tenant_id: str, channel: object, user_id: object) -> bool:
    """Restrict one end user; True when newly restricted. ValidationError on bad input."""
    ch, uid = validate_end_user(channel, user_id)
    return bool(await redis.sadd(keys.restricted(tenant_id), member(ch, uid)))


async def unrestrict(redis: Redis, tenant_id: str, channel: object, user_id: object) -> bool:
    """Lift a restriction; True when there was one."""
    ch, uid = validate_end_user(channel, user_id)
    return bool(await redis.srem(keys.restricted(tenant_id), member(ch, uid)))


async def is_restricted(redis: Redis, tenant_id: str, channel: str, user_id: str) -> bool:
    return bool(await redis.sismember(keys.restricted(tenant_id), member(channel, user_id)))


async def list_restricted(redis: Redis, tenant_id: str) -> list[dict[str, str]]:
    """Every restricted end user of the tenant, sorted: ``[{"channel", "user_id"}]``."""
    out: list[dict[str, str]] = []
    async for raw in redis.sscan_iter(keys.restricted(tenant_id), count=500):
        ch, _, uid = raw.decode("utf-8", "replace").partition(":")
        out.append({"channel": ch, "user_id": uid})
    return sorted(out, key=lambda x: (x["channel"], x["user_id"]))
