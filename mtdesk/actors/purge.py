"""Erasure notices: the privacy module publishes on ``keys.PURGE`` after deleting data;
shards drop what they hold in memory for it, so a cached context is never written back.

A notice is JSON ``{"scope": "tenant"|"channel"|"conversations", "tenant",
"prefix"?, "conversations"?}`` (see docs/privacy.md). Pub/sub stores nothing, so a shard
that was down missed nothing it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def listen_for_erasures(
    redis: Redis, running: Callable[[], bool], on_notice: Callable[[dict[str, Any]], object]
) -> None:
    """Call ``on_notice`` for every notice while ``running()``; resubscribes on errors."""
    while running():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.PURGE)
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
                    on_notice(notice)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("erasure subscription failed; resubscribing")
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
