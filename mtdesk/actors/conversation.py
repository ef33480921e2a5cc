"""A conversation as a virtual actor inside a shard: its worker's lifecycle.

One :class:`Conversation` per (channel, account, end user) while it is active: a FIFO of
work items and, while there is work, one asyncio task draining it. So events of one
conversation are handled strictly in order, and different conversations concurrently
(at most ``services.slots`` at once). Its :class:`ConversationContext` (recent turns
bounded by ``settings.history_turns``, bot state, last inbound time, paused-until) is
kept in memory, persisted to ``keys.context(tenant, conv)`` after every reply and on
eviction, and restored on activation.

Per event (see docs/shards.md for the table) the work is done elsewhere: messages and
postbacks are answered by :mod:`mtdesk.actors.answering` (admission, bursts, the reply),
unless they came on ``standby`` (another app owns the thread); Instagram comments by
:mod:`mtdesk.actors.comments` (recorded, maybe a private reply); a person's reply from
the console is sent by :mod:`mtdesk.actors.takeover`; everything else is
recorded by :mod:`mtdesk.actors.records` (handovers move the thread's owner, a user id
change moves the conversation). An edit or unsend is looked at as it arrives
(:meth:`Conversation.submit`): of a message still queued, or in the burst being
answered, it changes what is answered before the answer is made. Every event is handed back
to the shard through ``services.ledger`` (:class:`~mtdesk.actors.work.EventLedger`):
``done(item)`` once it is fully handled (the shard acks it then), ``failed(item)`` when
its handling raised, ``release(item)`` when it was not handled (cancelled, or answered
elsewhere meanwhile): neither of the last two is acked, the shard reclaims them later.
Redis blips are retried in place, so one conversation's order survives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import msgspec

from mtdesk.actors import records
from mtdesk.actors.answering import answer, greeted
from mtdesk.actors.comments import on_comment
from mtdesk.actors.replies import PartitionLost
from mtdesk.actors.takeover import send_agent_reply
from mtdesk.actors.turns import (
    ConversationContext,
    PromptBuilder,
    bounded,
    build_prompt,
    decode_context,
    encode_context,
)
from mtdesk.actors.work import ConversationServices, WorkItem
from mtdesk.core import keys
from mtdesk.core.clock import now_ms
from mtdesk.core.errors import DecryptionError
from mtdesk.core.events import (
    AgentReply,
    Comment,
    Echo,
    Edit,
    Handover,
    Imported,
    Mention,
    Message,
    Postback,
    Receipt,
    Status,
    Unsend,
    UserChanged,
)
from mtdesk.core.ports import ChatMessage
from mtdesk.core.redis import Redis, as_opt_bytes
from mtdesk.core.retrying import retry_transient
from mtdesk.core.sealing import TenantKey

__all__ = ["Conversation", "ConversationServices", "PromptBuilder", "WorkItem",
           "build_prompt", "greeted"]

log = logging.getLogger(__name__)


class Conversation:
    """One conversation's in-order worker. Built by the shard, never shared."""

    def __init__(
        self, tenant_id: str, key: str, services: ConversationServices,
        context: ConversationContext,
        sealer: TenantKey | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.key = key
        self.context = context
        # The tenant's data key: the context is sealed with it (held while the
        # conversation is: an erasure drops the conversation, and the key with it).
        self.sealer = sealer or TenantKey(tenant_id, None)
        self.services = services
        self.queue: deque[WorkItem] = deque()  # in order; bursts take from its front
        self._task: asyncio.Task[None] | None = None
        self.last_active = time.monotonic()
        self._dirty = False
        self.forgotten = False  # its data was erased: never write its context again
        # The burst being answered (event id → item): an edit or unsend of one of them
        # arriving meanwhile revises what is answered (:meth:`revise`); ``unsent``: ids
        # of messages unsent before they were answered (until their unsend is handled).
        self.answering: dict[str, WorkItem] = {}
        self.unsent: set[str] = set()
        self.revised = False
        self.making: asyncio.Future[Any] | None = None  # the model call under way
        self.phone_noted = False  # WhatsApp: the person's number ↔ business-scoped id kept
        self.partition = -1  # the inbound partition its events come from (set by the shard)

    # --- shard-facing -----------------------------------------------------------------
    @staticmethod
    async def restore(
        redis: Redis, tenant_id: str, key: str, sealer: TenantKey | None = None,
    ) -> ConversationContext:
        raw = as_opt_bytes(await redis.get(keys.context(tenant_id, key)))
        if raw is None:
            return ConversationContext()
        try:
            return decode_context(raw, sealer or TenantKey(tenant_id, None), key)
        except (msgspec.DecodeError, DecryptionError):
            log.warning("conversation context undecodable, starting fresh", extra={"conv": key})
            return ConversationContext()

    def submit(self, item: WorkItem) -> None:
        if isinstance(item.event, Edit) and not item.event.by_business:
            records.edit_queued(self, item.event)
        elif isinstance(item.event, Unsend) and not item.event.by_business:
            records.unsend_queued(self, item.event)
        self.queue.append(item)
        self.last_active = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"conv:{self.key}")

    @property
    def idle(self) -> bool:
        return not self.queue and (self._task is None or self._task.done())

    @property
    def dirty(self) -> bool:
        """The context changed since it was last persisted."""
        return self._dirty

    @property
    def settled(self) -> bool:
        """Idle, and its context is what it last persisted: something in it while the
        stored context is gone means the stored one was erased (or expired)."""
        return self.idle and not self._dirty and self.context != ConversationContext()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def queued(self) -> int:
        return len(self.queue)

    async def persist(self) -> None:
        if self.forgotten:
            return
        await self.services.redis.set(
            keys.context(self.tenant_id, self.key),
            encode_context(self.context, self.sealer, self.key),
            ex=self.services.store.ttl_s,
        )
        self._dirty = False

    async def wait_idle(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def release_queued(self) -> None:
        """Hand back every queued event not started yet (its partition is handed over):
        the one being handled, if any, goes on."""
        for item in self.queue:
            self.services.ledger.release(item)
        self.queue.clear()

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for item in self.queue:
            self.services.ledger.release(item)
        self.queue.clear()

    # --- for the handlers (answering, bursts, records) ----------------------------------
    def now_ms(self) -> int:
        return now_ms(self.services.clock)

    def mark_dirty(self) -> None:
        """The context changed since it was last persisted."""
        self._dirty = True

    def mark_clean(self) -> None:
        """The context as it is was just persisted (with a reply's end)."""
        self._dirty = False

    def revise(self) -> None:
        """What the burst being answered says changed: the answer under way (if the
        model is still at it) is dropped and made again."""
        self.revised = True
        if self.making is not None and not self.making.done():
            self.making.cancel()

    def bounded(self, turns: list[ChatMessage]) -> list[ChatMessage]:
        return bounded(turns, self.services.settings.history_turns)

    def requeue(self, items: list[WorkItem]) -> None:
        """Put ``items`` back in front of the queue, in order."""
        for b in reversed(items):
            self.queue.appendleft(b)

    # --- the worker -------------------------------------------------------------------
    async def _run(self) -> None:
        slots = self.services.slots
        try:
            while self.queue:
                if slots is None:
                    await self._next()
                else:
                    # Waiting here (cancellable: the items stay queued) rather than all
                    # at once keeps the loop's work, the Redis connections and the
                    # pending HTTP calls bounded under overload.
                    async with slots:
                        await self._next()
                if not self.queue and self._dirty:
                    with contextlib.suppress(Exception):
                        await self.persist()
                # An item submitted while persisting found this task still running:
                # the loop goes on with it rather than leave it queued with no worker.
        finally:
            self.services.ledger.idle()

    async def _next(self) -> None:
        """Handle the first queued event (if any is left)."""
        if not self.queue:
            return
        item = self.queue.popleft()
        try:
            await self._handle_with_retry(item)
        except asyncio.CancelledError:
            self.services.ledger.release(item)
            raise
        except PartitionLost:  # its new owner answers it; nothing more from here
            self.services.ledger.release(item)
            self.services.ledger.lost(item.partition)
        except Exception:
            log.exception("event failed, left pending for redelivery",
                          extra={"entry": item.entry_id, "conv": self.key})
            self.services.ledger.failed(item)
        self.last_active = time.monotonic()

    async def _handle_with_retry(self, item: WorkItem, attempts: int = 10) -> None:
        # Redis blips and restarts (and other retriable errors) are retried in place, for
        # about 25 s (waits from 0.2 s doubling to 4 s), so one conversation's order
        # survives them and its reply goes out as soon as Redis is back, not when the
        # entry is reclaimed a minute later (measured: `mtdesk drill redis-restart`).
        await retry_transient(lambda: self._handle(item), attempts=attempts, first_s=0.2,
                              max_s=4.0)

    async def _handle(self, item: WorkItem) -> None:
        event = item.event
        if isinstance(event, Message | Postback):
            if self.services.profiles is not None:  # the inbox's name for the person
                self.services.profiles.note(item.tenant_id, event)
            if not self.phone_noted and event.wa_id and event.wa_id != event.user_id:
                await records.note_phone(self, event)  # imported history joins here
                self.phone_noted = True
            if event.standby:  # another app owns the thread: recorded, never answered
                await records.on_standby(self, item, event)
            else:
                await answer(self, item, event)  # hands the item (and its burst) back itself
                return
        elif isinstance(event, Comment):
            await on_comment(self, item, event)  # recorded; maybe a private reply
            return
        elif isinstance(event, AgentReply):  # a person's reply from the console
            await send_agent_reply(self, item, event)  # hands the item back itself
            return
        elif isinstance(event, Echo):
            if event.standby:
                records.thread_seen_elsewhere(self, event.timestamp_ms)
            if event.channel == "whatsapp":  # sent from the WhatsApp Business app
                await records.mark_coexistence(self, event)
            await records.on_echo(self, item, event)
        elif isinstance(event, Handover):
            await records.on_handover(self, item, event)
        elif isinstance(event, UserChanged):
            await records.on_user_changed(self, item, event)
        elif isinstance(event, Imported):
            await records.on_imported(self, item, event)
        elif isinstance(event, Receipt):
            await records.on_receipt(self, event)
        elif isinstance(event, Status):
            await records.on_status(self, event)
        elif isinstance(event, Mention):  # recorded; what it says is read off the worker
            await records.record_only(self, item)
            if self.services.mentions is not None:
                self.services.mentions.note(self, event)
        else:  # reaction, unsend, edit, mention, unsupported: recorded, never answered
            await records.record_only(self, item)
        self.services.ledger.done(item)
