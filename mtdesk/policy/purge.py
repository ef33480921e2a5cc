"""Erasure notices, the listening side: erasure and retention publish on ``keys.PURGE``
after deleting data; whatever holds tenant data in memory listens here and drops it, so
a cached copy is neither served nor written back.

A notice is JSON ``{"scope": "tenant"|"channel"|"conversations", "tenant",
"prefix"?, "conversations"?}`` (see docs/privacy.md). Pub/sub stores nothing: a process
that was not subscribed when a notice went out never sees it. A process that was down
holds nothing from before; a live one whose subscription dropped may, so
:func:`listen_for_erasures` calls ``on_subscribed`` after every (re)subscription for the
listener to check what it holds against Redis. Conversation shards, retrieval shards
and the admin's knowledge search all listen through :func:`listen_for_erasures`.
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


class _Reconnects:
    """Counts re-connections of a subscribed connection: a client with retries (the
    gateway's) reconnects and re-subscribes by itself, without raising, and the notices
    sent while it was away are lost."""

    def __init__(self) -> None:
        self.seen = False

    def connected(self, connection: object) -> None:  # redis-py keeps a weak method
        self.seen = True

    def take(self) -> bool:
        seen, self.seen = self.seen, False
        return seen


async def _call(handler: Callable[..., object], *args: object) -> None:
    done = handler(*args)
    if inspect.isawaitable(done):
        await done


async def listen_for_erasures(
    redis: Redis, running: Callable[[], bool], on_notice: Callable[[dict[str, Any]], object],
    *, subscribed: asyncio.Event | None = None,
    on_subscribed: Callable[[], object] | None = None,
) -> None:
    """Call ``on_notice`` for every notice while ``running()``; resubscribes on errors.

    ``on_notice`` may be a coroutine function (awaited before the next notice); an error
    it raises is logged and the next notice still arrives. ``subscribed`` is set while
    the subscription is active (notices published from then on are seen).
    ``on_subscribed`` (may be a coroutine function) is called once subscribed, and again
    after every re-subscription, including a reconnection the client made by itself: a
    notice sent before it may have been missed. If it fails (Redis down), the
    subscription is made again and it is called again."""
    watch = _Reconnects()
    while running():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        connection = None
        try:
            await pubsub.subscribe(keys.PURGE)
            connection = pubsub.connection
            if connection is not None:
                connection.register_connect_callback(watch.connected)
            if subscribed is not None:
                subscribed.set()
            watch.take()
            if on_subscribed is not None:
                await _call(on_subscribed)
            while running():
                message = await pubsub.get_message(timeout=1.0)
                if watch.take():
                    log.warning("erasure subscription reconnected; checking what may have been missed")
                    if on_subscribed is not None:
                        await _call(on_subscribed)
                if message is None:
                    continue
                try:
                    notice = msgspec.json.decode(message["data"])
                except msgspec.DecodeError:
                    log.error("undecodable erasure notice ignored")
                    continue
                if isinstance(notice, dict):
                    try:
                        await _call(on_notice, notice)
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
            if connection is not None:
                connection.deregister_connect_callback(watch.connected)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
