"""Erasure notices: after deleting data, erasure and retention publish a notice on
``keys.ERASURE_NOTICES``; whatever holds tenant data in memory listens here and drops
what the notice covers, so a cached copy is neither served nor written back.

A notice is one of three msgspec Structs tagged by ``scope`` (JSON on the wire, see
docs/privacy.md): :class:`TenantNotice` (the whole account), :class:`ChannelNotice`
(every conversation whose key starts with ``prefix``, i.e. ``"{channel}:{account}:"``)
and :class:`ConversationsNotice` (these conversations). Read them with ``match``.

Pub/sub stores nothing: a process that was not subscribed when a notice went out never
sees it. A process that was down holds nothing from before; a live one whose
subscription dropped may, so :func:`listen_for_notices` calls ``on_subscribed`` after
every (re)subscription for the listener to check what it holds against Redis.
Conversation shards, retrieval shards and the admin's knowledge search all listen
through :func:`listen_for_notices`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

import msgspec

from mtdesk.core import keys
from mtdesk.core.redis import Redis

log = logging.getLogger(__name__)


class TenantNotice(msgspec.Struct, frozen=True, tag_field="scope", tag="tenant"):
    """The tenant's whole account was erased."""

    tenant: str


class ChannelNotice(msgspec.Struct, frozen=True, tag_field="scope", tag="channel"):
    """One connected account was erased: every conversation whose key starts with
    ``prefix`` (``"{channel}:{account_id}:"``)."""

    tenant: str
    prefix: str


class ConversationsNotice(msgspec.Struct, frozen=True, tag_field="scope", tag="conversations"):
    """These conversations of the tenant were erased, or rewritten (retention cut
    their remembered turns): drop what is held of them."""

    tenant: str
    conversations: tuple[str, ...] = ()


Notice = TenantNotice | ChannelNotice | ConversationsNotice

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Notice)


def encode_notice(notice: Notice) -> bytes:
    return _encoder.encode(notice)


def decode_notice(data: bytes | str) -> Notice:
    """The notice in ``data``; ``msgspec.DecodeError`` (incl. validation) if it is none."""
    return _decoder.decode(data)


async def publish_notice(redis: Redis, notice: Notice) -> None:
    """Tell every listener. Pub/sub: nothing is stored, so the notice leaves no trace."""
    await redis.publish(keys.ERASURE_NOTICES, encode_notice(notice))


def notice_covers(notice: Notice, tenant_id: str, conversation: str) -> bool:
    """Whether ``notice`` erased the data of this tenant's conversation."""
    if notice.tenant != tenant_id:
        return False
    match notice:
        case TenantNotice():
            return True
        case ChannelNotice(prefix=prefix):
            return bool(prefix) and conversation.startswith(prefix)
        case ConversationsNotice(conversations=convs):
            return conversation in convs


def erased_tenant(notice: Notice) -> str | None:
    """The tenant whose whole account ``notice`` erased, or None for a narrower notice."""
    match notice:
        case TenantNotice(tenant=tenant) if tenant:
            return tenant
        case _:
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


async def listen_for_notices(
    redis: Redis, running: Callable[[], bool], on_notice: Callable[[Notice], object],
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
            await pubsub.subscribe(keys.ERASURE_NOTICES)
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
                    notice = decode_notice(message["data"])
                except msgspec.DecodeError:
                    log.error("undecodable erasure notice ignored")
                    continue
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
