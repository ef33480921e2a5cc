"""A conversation as a virtual actor inside a shard.

One :class:`Conversation` per (channel, account, end user) while it is active: a FIFO of
work items and, while there is work, one asyncio task draining it. So events of one
conversation are handled strictly in order, and different conversations concurrently.
Its :class:`ConversationContext` (recent turns bounded by ``settings.history_turns``, bot
state, last inbound time, paused-until) is kept in memory, persisted to
``keys.context(tenant, conv)`` after every reply and on eviction, and restored on
activation.

Per event (see docs/shards.md for the table): echoes of our own sends are never
answered; a human agent's echo pauses the bot (``keys.paused`` with a TTL); receipts and
WhatsApp statuses move stored statuses forward; stale replays, unsends, reactions,
paused/disabled bots, disconnected channels and restricted users are recorded, not
answered (a restricted user's text never reaches a model); everything else is answered
once, bursts of one person's messages together. The first reply of a new conversation
(no turns, nothing sent yet) starts with the bot's greeting, as part of the reply's stored
text, so it is never sent twice. A ``knowledge_only`` LLM bot whose tenant has knowledge
but none of it scoring ``min_score`` answers its fallback message without a model (outcome
``no_knowledge``; docs/retrieval.md). Every event is handed back to the shard
with ``services.done(item)`` once it is fully handled (the shard acks it then); an event
whose handling raised is handed back with ``services.failed(item)``, one not handled
(cancelled, or answered elsewhere meanwhile) with ``services.release(item)``: neither is
acked, the shard reclaims them later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from mtdesk.actors.replies import ReplyRecord, ReplyStore, ResumableSender
from mtdesk.actors.stats import ShardMetrics
from mtdesk.actors.tenantview import TenantView
from mtdesk.actors.turns import (
    ConversationContext,
    PromptBuilder,
    bounded,
    build_prompt,
    context_decoder,
    context_encoder,
    user_text,
    without_texts,
)
from mtdesk.channels.outbound import is_our_metadata, split_text
from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import GraphError, MTDeskError, ProviderError
from mtdesk.core.events import Echo, Event, Message, Postback, Receipt, Status, Unsend
from mtdesk.core.history import MessageStore, StoredMessage, inbound_message
from mtdesk.core.ports import (
    BotConfig,
    ChatMessage,
    ChatModel,
    Completion,
    OutboundMessage,
    Passage,
    Retriever,
)
from mtdesk.core.redis import UNAVAILABLE, Redis, as_opt_bytes
from mtdesk.core.settings import Settings
from mtdesk.policy.quotas import consume_call
from mtdesk.retrieval.extractive import is_extractive
from mtdesk.retrieval.prompt import shown_passages

log = logging.getLogger(__name__)

# The reply's reason when it is not the model's answer (its outcome says which).
_DONE_REASONS = {"fallback": "model failed: fallback message",
                 "no_knowledge": "no knowledge: fallback message"}


def greeted(bot: BotConfig, text: str) -> str:
    """``text`` after the bot's greeting (a paragraph of its own), if it has one."""
    greeting = (bot.greeting or "").strip()
    return f"{greeting}\n\n{text}" if greeting else text


@dataclass(slots=True)
class WorkItem:
    """One inbound stream entry, decoded once by the shard."""

    partition: int
    entry_id: str
    tenant_id: str
    event: Event
    received_ms: int  # gateway receive time (field r)
    stale: bool = False  # field s: older than max_event_age_s: record, don't answer
    dispatched: float = field(default_factory=time.monotonic)


@dataclass
class ConversationServices:
    """What every conversation of a shard shares (built once per shard)."""

    redis: Redis
    settings: Settings
    clock: Clock
    store: MessageStore
    replies: ReplyStore
    tenants: TenantView
    sender: ResumableSender
    chat_model: ChatModel
    metrics: ShardMetrics
    done: Callable[[WorkItem], None]
    release: Callable[[WorkItem], None]
    failed: Callable[[WorkItem], None] = lambda item: None
    retriever: Retriever | None = None
    prompt_builder: PromptBuilder = build_prompt
    on_idle: Callable[[], None] = lambda: None
    # At most this many conversations handle an event at once (the shard's
    # max_concurrent_conversations); the others wait with their events queued.
    slots: asyncio.Semaphore | None = None


class Conversation:
    """One conversation's in-order worker. Built by the shard, never shared."""

    def __init__(
        self, tenant_id: str, key: str, services: ConversationServices,
        context: ConversationContext,
    ) -> None:
        self.tenant_id = tenant_id
        self.key = key
        self.context = context
        self._s = services
        self._queue: deque[WorkItem] = deque()
        self._task: asyncio.Task[None] | None = None
        self.last_active = time.monotonic()
        self._dirty = False
        self.forgotten = False  # its data was erased: never write its context again

    # --- shard-facing -----------------------------------------------------------------
    @staticmethod
    async def restore(redis: Redis, tenant_id: str, key: str) -> ConversationContext:
        raw = as_opt_bytes(await redis.get(keys.context(tenant_id, key)))
        if raw is None:
            return ConversationContext()
        try:
            return context_decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("conversation context undecodable, starting fresh", extra={"conv": key})
            return ConversationContext()

    def submit(self, item: WorkItem) -> None:
        self._queue.append(item)
        self.last_active = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"conv:{self.key}")

    @property
    def idle(self) -> bool:
        return not self._queue and (self._task is None or self._task.done())

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
        return len(self._queue)

    async def persist(self) -> None:
        if self.forgotten:
            return
        await self._s.redis.set(
            keys.context(self.tenant_id, self.key), context_encoder.encode(self.context),
            ex=self._s.store.ttl_s,
        )
        self._dirty = False

    async def wait_idle(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for item in self._queue:
            self._s.release(item)
        self._queue.clear()

    # --- the worker -------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while self._queue:
                if self._s.slots is None:
                    await self._next()
                else:
                    # Waiting here (cancellable: the items stay queued) rather than all
                    # at once keeps the loop's work, the Redis connections and the
                    # pending HTTP calls bounded under overload.
                    async with self._s.slots:
                        await self._next()
            if self._dirty:
                with contextlib.suppress(Exception):
                    await self.persist()
        finally:
            self._s.on_idle()

    async def _next(self) -> None:
        """Handle the first queued event (if any is left)."""
        if not self._queue:
            return
        item = self._queue.popleft()
        try:
            await self._handle_with_retry(item)
        except asyncio.CancelledError:
            self._s.release(item)
            raise
        except Exception:
            log.exception("event failed, left pending for redelivery",
                          extra={"entry": item.entry_id, "conv": self.key})
            self._s.failed(item)
        self.last_active = time.monotonic()

    async def _handle_with_retry(self, item: WorkItem, attempts: int = 3) -> None:
        # Redis blips are retried in place, so one conversation's order survives them.
        for attempt in range(attempts):
            try:
                await self._handle(item)
                return
            except MTDeskError as exc:
                if not exc.retriable or attempt == attempts - 1:
                    raise
            except UNAVAILABLE:  # redis-py's errors too: they are not builtin subclasses
                if attempt == attempts - 1:
                    raise
            await asyncio.sleep(0.2 * 2**attempt)

    async def _handle(self, item: WorkItem) -> None:
        event = item.event
        if isinstance(event, Message | Postback):
            await self._on_message(item, event)
            return
        if isinstance(event, Echo):
            await self._on_echo(item, event)
        elif isinstance(event, Receipt):
            await self._on_receipt(event)
        elif isinstance(event, Status):
            await self._on_status(event)
        else:  # reaction, unsend, edit, unsupported: recorded, never answered
            if isinstance(event, Unsend):
                await self._forget_unsent(event)
            tag = event.__struct_config__.tag  # typed str | int | None; ours are str
            await self._record(item, reason=tag if isinstance(tag, str) and tag else "other")
            self._s.metrics.outcome("recorded")
        self._s.done(item)

    async def _forget_unsent(self, event: Unsend) -> None:
        """An unsent message (and its edits) leaves the history, so the inbox and exports,
        and the turns the model is shown."""
        gone = await self._s.store.unsend(self.tenant_id, self.key, event.target_id)
        turns = without_texts(self.context.turns, [m.text for m in gone if m.text])
        if len(turns) != len(self.context.turns):
            self.context.turns = turns
            self._dirty = True

    def _now_ms(self) -> int:
        return now_ms(self._s.clock)

    @staticmethod
    def _inbound(item: WorkItem, *, status: str = "received",
                 reason: str | None = None) -> StoredMessage:
        return inbound_message(item.event, status=status, reason=reason)

    async def _record(self, item: WorkItem, *, reason: str) -> None:
        await self._s.replies.store_inbound(
            item.tenant_id, item.event.event_id,
            self._inbound(item, status="skipped", reason=reason),
            now_ms=self._now_ms(), skip_reason=reason,
        )

    # --- echoes, receipts, statuses ---------------------------------------------------
    async def _on_echo(self, item: WorkItem, echo: Echo) -> None:
        # Our send is already in history when we recorded it (also covers an app id that
        # is not configured); one seen only through its echo is stored as kind "echo".
        recorded = await self._s.redis.hexists(keys.outbound(item.tenant_id, echo.event_id),
                                               "entry")
        ours = recorded or is_our_metadata(echo.metadata) or (
            self._s.settings.meta_app_id is not None
            and echo.app_id == self._s.settings.meta_app_id)
        if ours:
            self._s.metrics.outcome("echo")
            if recorded:
                return
            kind = "echo"
        else:
            kind = "agent"
            pause_s = self._s.settings.handoff_pause_s
            if pause_s > 0:
                await self._s.redis.set(keys.paused(item.tenant_id, self.key), b"1", ex=pause_s)
                self.context.paused_until_ms = self._now_ms() + pause_s * 1000
                self._dirty = True
            self._s.metrics.outcome("handoff")
        message = StoredMessage(
            direction="out", message_id=echo.event_id, kind=kind, channel=echo.channel,
            account_id=echo.account_id, user_id=echo.user_id, timestamp_ms=echo.timestamp_ms,
            text=echo.text, attachments=echo.attachments, status="sent",
        )
        # Stored once per mid, like inbound events (a redelivered echo is not stored twice).
        await self._s.replies.store_inbound(item.tenant_id, echo.event_id, message,
                                            now_ms=self._now_ms(), skip_reason="echo")
        self.context.replied = True
        self._dirty = True
        if not ours:
            self.context.turns = self._bounded([*self.context.turns,
                                                ChatMessage("assistant", echo.text or "")])

    async def _on_receipt(self, receipt: Receipt) -> None:
        await self._s.store.apply_receipt(self.tenant_id, self.key, receipt, now_ms=self._now_ms())
        self._s.metrics.outcome("receipt")

    async def _on_status(self, status: Status) -> None:
        await self._s.store.apply_status(self.tenant_id, self.key, status, now_ms=self._now_ms())
        self._s.metrics.outcome("status")

    # --- messages -----------------------------------------------------------------------
    async def _admit(
        self, item: WorkItem, *, claim: bool = False
    ) -> tuple[str, ReplyRecord, bool]:
        """Store the inbound once; returns (skip reason, its reply record, claimed).

        Why a message is recorded but not answered, in this order: stale, stop word,
        restricted, paused, bot disabled, channel disconnected, quota exceeded (last, so
        messages skipped for other reasons never count against the plan). Everything
        from "restricted" on, the store and — with ``claim`` — the claim of a reply with
        no burst members are ONE Redis round trip (``ReplyStore.admit``); ``claimed``
        says that claim happened (the record is then ``generating``)."""
        event = item.event
        assert isinstance(event, Message | Postback)
        s = self._s.settings
        tid = self.tenant_id
        member = f"{event.channel}:{event.user_id}"
        reason = ""
        record: ReplyRecord | None = None
        claimed = False
        text = (event.text or "").strip().upper() if isinstance(event, Message) else ""
        if item.stale:
            reason = "stale"
        elif text and text in s.stop_words:
            await self._s.redis.sadd(keys.restricted(tid), member)
            reason = "stop word"
        else:
            # Cached reads (TenantView); the script checks them after restricted/paused.
            late = ""
            if not (await self._s.tenants.bot(tid)).enabled:
                late = "bot disabled"
            elif not await self._s.tenants.channel_connected(tid, event.channel,
                                                             event.account_id):
                late = "channel disconnected"
            now = self._now_ms()
            reason, record, claimed = await self._s.replies.admit(
                item.tenant_id, event.event_id, self._inbound(item), now_ms=now,
                member=member, paused_key=keys.paused(tid, self.key), reason=late,
                quota=consume_call(tid, 1, now_ms=now, enforce=s.billing_enabled),
                claim=claim,
            )
        if record is None:  # skipped: stored as such (nothing was counted)
            record = await self._s.replies.store_inbound(
                item.tenant_id, event.event_id,
                self._inbound(item, status="skipped", reason=reason),
                now_ms=self._now_ms(), skip_reason=reason,
            )
        self.context.last_inbound_ms = max(self.context.last_inbound_ms, event.timestamp_ms)
        self._dirty = True
        return reason, record, claimed

    def _burst_is_empty(self) -> bool:
        """True when :meth:`_collect_burst` would find nothing to add right now: no burst
        window and no message of this person queued next. The head can then be claimed
        in the same round trip as its admission."""
        if self._s.settings.burst_window_ms > 0:
            return False
        return not (self._queue and isinstance(self._queue[0].event, Message | Postback))

    async def _on_message(self, item: WorkItem, event: Message | Postback) -> None:
        reason, record, claimed_now = await self._admit(item, claim=self._burst_is_empty())
        if reason or record.done:
            self._s.metrics.outcome("skipped" if reason else "duplicate")
            self._s.done(item)
            return
        if record.resumable:  # a restart mid-send: finish the same reply
            await self._send(item, [item], record.text, record.provider, record.model,
                             already_sent=record.parts_sent)
            return
        if claimed_now:  # claimed with its admission: a burst of one
            burst = [item]
            texts = [user_text(event)]
        elif record.state == "generating":
            # A crash while the model was answering: the burst was claimed then, so its
            # members' texts come back from history (their entries follow in the stream
            # and will be acknowledged as answered by this one).
            burst = [item]
            texts = [user_text(event), *await self._stored_texts(item.tenant_id, record.members)]
        else:
            burst = [item, *await self._collect_burst({event.event_id})]
            try:
                claimed = await self._s.replies.claim(
                    item.tenant_id, event.event_id, [b.event.event_id for b in burst[1:]],
                    now_ms=self._now_ms(),
                )
            except BaseException:
                self._requeue(burst[1:])
                raise
            if claimed is None:  # someone else is answering it: look again on redelivery
                for b in burst:
                    self._s.release(b)
                return
            keep = set(claimed)
            for b in burst[1:]:
                if b.event.event_id not in keep:
                    self._s.done(b)  # already answered elsewhere
            burst = [item, *(b for b in burst[1:] if b.event.event_id in keep)]
            texts = [user_text(b.event) for b in burst
                     if isinstance(b.event, Message | Postback)]
        try:
            bot = await self._s.tenants.bot(item.tenant_id)
            completion, outcome = await self._generate(bot, item.tenant_id, texts)
            # The greeting is part of the reply's stored text: a resumed send continues
            # the same text, so it is never sent twice.
            text = greeted(bot, completion.text) if self.context.new else completion.text
            limiter = self._s.sender.limiter
            prepaid = False
            if limiter is None:
                await self._s.replies.generated(item.tenant_id, event.event_id,
                                                text, completion.provider,
                                                completion.model, now_ms=self._now_ms())
            else:  # the first part's send permit in the same round trip
                _, prepaid = await self._s.replies.generated_with_permit(
                    item.tenant_id, event.event_id, text, completion.provider,
                    completion.model, now_ms=self._now_ms(),
                    window=limiter.window(event.channel, event.account_id))
            self.context.turns = self._bounded(
                [*self.context.turns, *(ChatMessage("user", t) for t in texts)]
            )
            await self._send(item, burst, text, completion.provider,
                             completion.model, already_sent=0, outcome=outcome,
                             prepaid=prepaid)
        except BaseException:
            # The head is retried (or left pending); its members go back in front of the
            # queue, in order, so none is stranded (they are answered_by the head now).
            self._requeue(burst[1:])
            raise

    def _requeue(self, items: list[WorkItem]) -> None:
        for b in reversed(items):
            self._queue.appendleft(b)

    async def _stored_texts(self, tenant_id: str, event_ids: tuple[str, ...]) -> list[str]:
        """The stored texts of inbound events (by their history entries), in order."""
        if not event_ids:
            return []
        records = await self._s.replies.load_many(tenant_id, list(event_ids))
        texts = []
        for record in records:
            if record.stored:
                found = await self._s.store.read(tenant_id, self.key, start=record.stored,
                                                 end=record.stored, join_status=False)
                if found and found[0].text:
                    texts.append(found[0].text)
        return texts

    async def _collect_burst(self, seen: set[str]) -> list[WorkItem]:
        """The person's further messages already queued (they arrived while the previous
        reply was being made), and, with ``burst_window_ms``, those arriving within it.
        A second copy of an event already in the burst (a redelivery) is acknowledged."""
        window_s = self._s.settings.burst_window_ms / 1000
        deadline = time.monotonic() + window_s
        burst: list[WorkItem] = []
        try:
            return await self._collect_into(burst, seen, deadline)
        except BaseException:
            self._requeue(burst)
            raise

    async def _collect_into(
        self, burst: list[WorkItem], seen: set[str], deadline: float
    ) -> list[WorkItem]:
        while True:
            while self._queue and isinstance(self._queue[0].event, Message | Postback):
                nxt = self._queue[0]
                if nxt.event.event_id in seen:
                    self._queue.popleft()
                    self._s.metrics.outcome("duplicate")
                    self._s.done(nxt)
                    continue
                reason, record, _ = await self._admit(nxt)
                if reason or record.done:
                    self._queue.popleft()
                    self._s.metrics.outcome("skipped" if reason else "duplicate")
                    self._s.done(nxt)
                    continue
                if record.state:  # resumable/generating: its own turn, after this burst
                    return burst
                seen.add(nxt.event.event_id)
                burst.append(self._queue.popleft())
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._queue and not isinstance(
                    self._queue[0].event, Message | Postback)):
                return burst
            await asyncio.sleep(min(remaining, 0.05))

    async def _generate(
        self, bot: BotConfig, tenant_id: str, texts: list[str]
    ) -> tuple[Completion, str]:
        """The answer and its outcome: ``sent`` (the model's), ``fallback`` (the model
        failed) or ``no_knowledge`` (see :meth:`_search`: no model asked)."""
        passages: list[Passage] = []
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._s.settings.llm_timeout_s):
                if self._s.retriever is not None:
                    passages, silent = await self._search(bot, tenant_id, "\n".join(texts))
                    if silent:
                        return Completion(text=bot.fallback_message, provider="fallback",
                                          model="no knowledge"), "no_knowledge"
                prompt = self._s.prompt_builder(bot, list(self.context.turns), texts, passages)
                completion = await self._s.chat_model.complete(bot, prompt, passages)
            self._s.metrics.observe("llm", time.monotonic() - started)
            return completion, "sent"
        except (ProviderError, TimeoutError) as exc:
            self._s.metrics.observe("llm", time.monotonic() - started)
            log.warning("model failed, sending the bot's fallback message",
                        extra={"tenant": tenant_id, "error": type(exc).__name__})
            return Completion(text=bot.fallback_message, provider="fallback",
                              model=str(getattr(exc, "provider", "timeout"))), "fallback"

    async def _search(
        self, bot: BotConfig, tenant_id: str, query: str
    ) -> tuple[list[Passage], bool]:
        """The passages for ``query``, and whether the knowledge has nothing for it: a
        ``knowledge_only`` LLM bot, no passage at ``bot.min_score``, and the tenant HAS a
        knowledge base (without one, the model is asked under the no-knowledge rule). The
        offline extractive model judges its passages itself."""
        # A broken knowledge base degrades the answer, it does not drop the message.
        retriever = self._s.retriever
        assert retriever is not None
        try:
            passages = await retriever.search(tenant_id, query)
            silent = (bot.grounding != "general" and not is_extractive(bot)
                      and not shown_passages(bot, passages)
                      and await retriever.has_knowledge(tenant_id))
            return passages, silent
        except Exception as exc:
            log.warning("retrieval failed; answering without passages",
                        extra={"tenant": tenant_id, "error": type(exc).__name__})
            self._s.metrics.outcome("retrieval_failed")
            return [], False

    async def _send(
        self, head: WorkItem, burst: list[WorkItem], text: str, provider: str, model: str,
        *, already_sent: int, outcome: str = "sent", prepaid: bool = False,
    ) -> None:
        event = head.event
        tid = head.tenant_id
        replies = self._s.replies
        # The sender splits the same text the same way: the last part's record can also
        # finish the reply and persist the context (one round trip instead of two).
        last = len(split_text(event.channel, text)) - 1
        done_reason = _DONE_REASONS.get(outcome, "")
        finished: list[list[ChatMessage]] = []  # the turns persisted with the last part

        async def record(index: int, sent: StoredMessage) -> None:
            if index != last or self.forgotten:
                await replies.part_sent(tid, event.event_id, index, sent, now_ms=self._now_ms())
                return
            turns = self._bounded([*self.context.turns, ChatMessage("assistant", text)])
            await replies.last_part_sent(
                tid, event.event_id, index, sent, now_ms=self._now_ms(), state="sent",
                reason=done_reason, context_key=keys.context(self.tenant_id, self.key),
                context=context_encoder.encode(
                    msgspec.structs.replace(self.context, turns=turns)),
                context_ttl_s=self._s.store.ttl_s,
            )
            finished.append(turns)

        async def on_part_sent(index: int, mid: str) -> None:
            self.context.replied = True  # the person got something: no greeting again
            sent = StoredMessage(
                direction="out", message_id=mid, kind="reply", channel=event.channel,
                account_id=event.account_id, user_id=event.user_id,
                timestamp_ms=self._now_ms(), text=text if index == 0 else None,
                reply_to=event.event_id, provider=provider, model=model, status="sent",
                part=index,
            )
            # Meta has accepted this part: if its record is lost, a resume sends it again.
            # The record is idempotent, so ride out a Redis blip here (~5 s) rather than
            # fail the reply.
            delay = 0.05
            for attempt in range(8):
                try:
                    await record(index, sent)
                    return
                except UNAVAILABLE:
                    if attempt == 7:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

        outbound = OutboundMessage(
            tenant_id=tid, channel=event.channel, account_id=event.account_id,
            user_id=event.user_id, wa_id=event.wa_id, text=text, reply_key=event.event_id,
            reply_to=event.event_id if event.channel == "whatsapp" else None,
        )
        started = time.monotonic()
        turns = self.context.turns
        try:
            await self._s.sender.send(outbound, already_sent=already_sent,
                                      on_part_sent=on_part_sent, prepaid=prepaid)
            state, reason = "sent", done_reason
            turns = self._bounded([*turns, ChatMessage("assistant", text)])
        except GraphError as exc:
            outcome = "failed"
            self._s.metrics.graph_error(exc.code)
            if exc.code == 190:  # the sender marked the channel disconnected
                self._s.tenants.forget_channel(tid, event.channel, event.account_id)
            log.warning("reply not sent", extra={"tenant": tid, "code": exc.code})
            state, reason = "failed", f"graph error {exc.code}"
        except MTDeskError as exc:
            if exc.retriable:
                raise
            outcome = "failed"  # e.g. the channel was removed: NotFound
            state, reason = "failed", type(exc).__name__
        if finished:  # finished and persisted with the last part
            self.context.turns = finished[-1]
            self._dirty = False
        else:
            await self._finish(tid, event.event_id, state, reason, turns)
        now = time.monotonic()
        self._s.metrics.observe("send", now - started)
        self._s.metrics.outcome(outcome)
        for b in burst:
            self._s.metrics.observe("end_to_end", time.time() - b.received_ms / 1000)
            self._s.done(b)

    async def _finish(
        self, tid: str, event_id: str, state: str, reason: str, turns: list[ChatMessage]
    ) -> None:
        """The reply's terminal state and the context (with ``turns``) persisted, in one
        round trip. The turns are taken only once that succeeded: a retry after a Redis
        blip must not add the assistant turn twice."""
        if self.forgotten:  # erased meanwhile: the state still moves, no context write
            await self._s.replies.finish(tid, event_id, state, now_ms=self._now_ms(),
                                         reason=reason)
            self.context.turns = turns
            return
        updated = msgspec.structs.replace(self.context, turns=turns)
        await self._s.replies.finish_with_context(
            tid, event_id, state, now_ms=self._now_ms(), reason=reason,
            context_key=keys.context(self.tenant_id, self.key),
            context=context_encoder.encode(updated), context_ttl_s=self._s.store.ttl_s,
        )
        self.context.turns = turns
        self._dirty = False

    def _bounded(self, turns: list[ChatMessage]) -> list[ChatMessage]:
        return bounded(turns, self._s.settings.history_turns)

