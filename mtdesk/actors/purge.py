"""Erasure notices: the privacy module publishes on ``keys.PURGE`` after deleting data;
shards drop what they hold in memory for it, so a cached context is never written back.

A notice is JSON ``{"scope": "tenant"|"channel"|"conversations", "tenant",
"prefix"?, "conversations"?}`` (see docs/privacy.md). Pub/sub stores nothing, so a shard
that was down missed nothing it holds. Conversation shards and retrieval shards both
listen through :func:`listen_for_erasures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from mtdesk.core import keys
from mtdesk.core.redis import Redis

log = logging.getLogger(__name__)


def erasure_covers(notice: dict[str, Any], tenant_id: str, conversation: str) -> bool:
    """Whether ``notice`` erased the data of this tenant's conversation."""
    if str(notice.get("tenant", "")) != tenant_id:
        return False
    scope = notice.get("scope")
    if scope == "tenant":
        return True
    if scope == "channel":
        prefix = str(notice.get("prefix", ""))
        return bool(prefix) and conversation.startswith(prefix)
    if scope == "conversations":
        return conversation in {str(c) for c in notice.get("conversations") or ()}
    return False


def tenant_erased(notice: dict[str, Any]) -> str | None:
    """The tenant whose whole account ``notice`` erased, or None for a narrower notice."""
    tenant = notice.get("tenant")
    if notice.get("scope") == "tenant" and isinstance(tenant, str) and tenant:
        return tenant
    return None


async def listen_for_erasures(
    redis: Redis, running: Callable[[], bool], on_notice: Callable[[dict[str, Any]], object],
    *, subscribed: asyncio.Event | None = None,
) -> None:
    """Call ``on_notice`` for every notice while ``running()``; resubscribes on errors.

    ``on_notice`` may be a coroutine function (awaited before the next notice); an error
    it raises is logged and the next notice still arrives. ``subscribed`` is set while
    the subscription is active (notices published from then on are seen)."""
    while running():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.PURGE)
            if subscribed is not None:
                subscribed.set()
            while running():
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                try:
                    notice = msgspec.json.decode(message["data"])
                except msgspec.DecodeError:
                    log.error("undecodable erasure notice ignored")
                    continue
                if isinstance(notice, dict):
                    try:
                        done = on_notice(notice)
                        if inspect.isawaitable(done):
                            await done
                    except Exception:
                        log.exception("erasure notice handler failed")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("erasure subscription failed; resubscribing")
            if subscribed is not None:
                subscribed.clear()
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
