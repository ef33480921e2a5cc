"""The conversation shard: reads its inbound partitions and hosts their conversations.

A plain class (Ray wraps it in :mod:`mtdesk.actors.deploy`; unit tests build it
directly). What a caller may rely on:

- It reads the streams ``keys.inbound(p)`` of the partitions it was given with consumer
  group ``keys.SHARD_GROUP`` (created with MKSTREAM at id 0) as consumer
  ``shard-{index}``, in batches (COUNT, BLOCK). On start it first re-reads its OWN pending
  entries (id ``0``): what it had read but not acknowledged before a crash. Every
  ``claim_interval_s`` it XAUTOCLAIMs entries idle longer than ``claim_idle_ms`` from any
  consumer (a shard that no longer exists after the shard count changed, or an event
  whose handling failed); entries it already holds are never dispatched twice.
- Events are dispatched to :class:`~mtdesk.actors.conversation.Conversation` workers
  (in order per conversation, concurrent across). When an event is fully handled it is
  XACKed and XDELed, batched in pipelines, so handled events don't linger in Redis.
- Memory is bounded: at most ``settings.max_active_conversations`` conversations in
  memory (least recently used idle ones are evicted, context persisted first) and at most
  ``max_inflight`` events read but not yet acknowledged. When every slot is busy it stops
  reading (backpressure): entries wait in Redis, not in memory. At most
  ``settings.max_concurrent_conversations`` of them handle an event at once (the rest
  wait with their events queued, so under overload the loop, Redis connections and
  pending HTTP calls stay bounded; a person's queued messages then form a burst).
- :meth:`stop` drains: stops reading, lets conversations finish what they hold (up to a
  timeout), flushes acks, persists contexts. Anything left is still pending in Redis and
  resumed by the next start.
- Metrics (:class:`~mtdesk.actors.stats.ShardMetrics`) are published to Redis every
  ``stats_interval_s``.
- Erasure notices (``keys.ERASURE_NOTICES``): what they name leaves memory without being written
  back, also the tenant's index in an in-process retriever; after every (re)subscription
  what is held is checked against Redis, for notices lost meanwhile
  (:mod:`mtdesk.actors.shard_erasure`). ``subscribed`` is set while subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import REGISTRY

from mtdesk.actors.conversation import Conversation
from mtdesk.actors.media import MediaDesk
from mtdesk.actors.mentions import Mentions
from mtdesk.actors.profiles import Pictures, Profiles
from mtdesk.actors.ratelimit import SendRateLimiter
from mtdesk.actors.records import pause_on_arrival
from mtdesk.actors.replies import ReplyStore
from mtdesk.actors.shard_erasure import ShardErasure
from mtdesk.actors.stats import ShardMetrics, publish_shard_stats
from mtdesk.actors.tenantview import TenantView
from mtdesk.actors.turns import PromptBuilder, build_prompt
from mtdesk.actors.watchers import LiveWatchers
from mtdesk.actors.work import ConversationServices, ReplySender, WorkItem
from mtdesk.core import keys
from mtdesk.core.clock import Clock, SystemClock, now_ms
from mtdesk.core.errors import DecryptionError
from mtdesk.core.events import EVENT_FAMILY, Echo, Status, decode_event
from mtdesk.core.groups import Entry, GroupReader
from mtdesk.core.history import MessageStore
from mtdesk.core.inbox import Inbox
from mtdesk.core.ports import ChatModel, Retriever
from mtdesk.core.redis import Redis, as_bytes
from mtdesk.core.retrying import retry_transient
from mtdesk.core.sealing import TenantCipher, is_sealed
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.notices import Notice, listen_for_notices

log = logging.getLogger(__name__)

# WhatsApp statuses that say Meta accepted the message (a failed one was not delivered).
_ACCEPTED = frozenset({"sent", "delivered", "read"})
# look_ahead: entries per XRANGE, pages per call.
_LOOK_PAGE = 256
_LOOK_PAGES = 40


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


@dataclass
class ShardServices:
    """What a shard talks to. ``aclose`` releases what the builder opened. ``limiter``
    is the send rate limiter the sender uses too: a reply's first permit is taken with
    its stored text (one round trip fewer)."""

    redis: Redis
    sender: ReplySender
    chat_model: ChatModel
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    limiter: SendRateLimiter | None = None
    retriever: Retriever | None = None
    prompt_builder: PromptBuilder = build_prompt
    # Called with a tenant whose account was erased: drop its cached credentials.
    forget_credentials: Callable[[str], None] | None = None
    # The tenants' data keys: events, history, replies and contexts are sealed with them.
    cipher: TenantCipher = field(default_factory=TenantCipher.disabled)
    media: MediaDesk | None = None
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()
        self.closers.clear()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again any still running a
    second later: Python 3.11 can lose a cancellation that meets a timeout firing inside
    a Redis call (the loop then waits on its next event forever; seen stopping a shard
    under load, its ack loop "cancelling" with nothing to wake it)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        while not task.done():
            await asyncio.wait([task], timeout=1.0)
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()


def _mentions(services: ShardServices) -> Mentions | None:
    """Reading Instagram @mentions, when the sender can ask Meta for them."""
    fetch = getattr(services.sender, "mention", None)
    return Mentions(fetch) if fetch is not None else None


def _profiles(services: ShardServices,
              watched: Callable[[str], bool] | None = None) -> Profiles | None:
    """The inbox's names and pictures, when the sender can ask Meta for a profile."""
    fetch = getattr(services.sender, "profile", None)
    if fetch is None:
        return None
    clock = services.clock
    download = getattr(services.sender, "download", None)
    pictures = (Pictures(download, services.media.store, lambda: now_ms(clock))
                if services.media is not None and download is not None else None)
    return Profiles(Inbox(services.redis, services.cipher), fetch, lambda: now_ms(clock),
                    pictures=pictures, watched=watched)


class ConversationShard:
    def __init__(
        self,
        index: int,
        partitions: list[int],
        services: ShardServices,
        *,
        batch: int = 256,
        block_ms: int = 500,
        max_inflight: int = 2048,
        claim_idle_ms: int = 60_000,
        claim_interval_s: float = 15.0,
        ack_delay_s: float = 0.5,
        ack_batch: int = 256,
        stats_interval_s: float = 5.0,
        analytics_interval_s: float = 1.0,
        process_metrics: bool = True,
        max_failures: int = 5,
        epochs: dict[int, int] | None = None,
        release_timeout_s: float = 30.0,
    ) -> None:
        self.index = index
        self.partitions = sorted(partitions)
        # The epoch each partition is held at (core/ownership.py); none: unfenced.
        self.epochs = {p: e for p, e in (epochs or {}).items() if p in self.partitions}
        self._release_timeout_s = release_timeout_s
        self.consumer = f"shard-{index}"
        self._svc = services
        self._redis = services.redis
        self._cipher = services.cipher
        self._settings = services.settings
        self._batch = batch
        self._block_ms = block_ms
        self._max_inflight = max(1, max_inflight)
        self._claim_idle_ms = claim_idle_ms
        self._claim_interval_s = claim_interval_s
        # Acknowledgements wait up to ack_delay_s, or until ack_batch are queued: each
        # flush costs a script per partition touched (XACK + XDEL behind the fence), and
        # the 64 partitions spread a second's few hundred entries thin (at 5 ms a flush
        # held one entry: ~4 commands per message; at 0.5 s about one). A handled entry
        # left pending by a crash meanwhile is found answered when it is read again.
        self._ack_delay_s = ack_delay_s
        self._ack_batch = max(1, ack_batch)
        self._acks_queued = 0
        self._ack_full = asyncio.Event()
        self._stats_interval_s = stats_interval_s
        self._analytics_interval_s = analytics_interval_s
        # Also publish the process-wide registry (sender, LLM): right for one shard per
        # process (Ray); several shards in one process would report it several times.
        self._process_metrics = process_metrics
        self._max_failures = max(1, max_failures)
        self._failures: dict[tuple[int, str], int] = {}
        self._reader = GroupReader(services.redis, keys.SHARD_GROUP, self.consumer,
                                   [keys.inbound(p) for p in self.partitions])
        self._partition_of = {keys.inbound(p): p for p in self.partitions}
        self._held = set(self.partitions)  # what is dispatched (a release ends it at once)
        self._read_lock = asyncio.Lock()  # one read or claim at a time
        self.metrics = ShardMetrics(index)
        settings = services.settings
        self._watchers = LiveWatchers(services.redis)
        self._conv_services = ConversationServices(
            redis=services.redis, settings=settings, clock=services.clock,
            store=MessageStore(services.redis, retention_days=settings.retention_days,
                               cipher=services.cipher),
            replies=ReplyStore(services.redis, ttl_s=settings.dedup_ttl_s,
                               history_ttl_s=settings.retention_days * 86400,
                               limiter=services.limiter, clock=services.clock,
                               cipher=services.cipher, watched=self._watchers.watched),
            tenants=TenantView(services.redis, cipher=services.cipher), sender=services.sender,
            chat_model=services.chat_model, metrics=self.metrics, ledger=self,
            retriever=services.retriever, prompt_builder=services.prompt_builder,
            slots=asyncio.Semaphore(max(1, settings.max_concurrent_conversations)),
            media=services.media,
            profiles=_profiles(services, self._watchers.watched),
            mentions=_mentions(services),
        )
        self._confirmations = self._conv_services.replies.confirmations
        self._looked: dict[int, str] = {}  # look_ahead: the last entry looked at
        self._look_locks: dict[int, asyncio.Lock] = {}
        self._convs: OrderedDict[str, Conversation] = OrderedDict()
        self._inflight: set[tuple[int, str]] = set()
        self._to_ack: dict[int, list[str]] = {}
        self._ack_event = asyncio.Event()
        self._capacity = asyncio.Event()
        self._dispatch_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._started = False
        self.handled = 0  # events acknowledged since start
        self.subscribed = asyncio.Event()  # set while subscribed to erasure notices
        self._erasure = ShardErasure(self._convs, services.redis, self._conv_services.tenants,
                                           services.retriever, shard=index,
                                           forget_credentials=self._forget_tenant)

    def _forget_tenant(self, tenant: str) -> None:
        """An account erased: its cached credentials and data key leave the process."""
        self._cipher.forget(tenant)
        if self._svc.forget_credentials is not None:
            self._svc.forget_credentials(tenant)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Create the groups, resume own pending entries, start reading. Idempotent."""
        if self._started:
            return
        self._started = True
        self._running = True
        await self._ensure_groups()
        with contextlib.suppress(Exception):
            await self._publish_stats()  # readiness is visible at once
        self._tasks = [
            asyncio.create_task(self._ack_loop(), name=f"{self.consumer}:ack"),
            asyncio.create_task(self._read_loop(), name=f"{self.consumer}:read"),
            asyncio.create_task(self._claim_loop(), name=f"{self.consumer}:claim"),
            asyncio.create_task(self._housekeeping_loop(), name=f"{self.consumer}:house"),
            asyncio.create_task(self._purge_loop(), name=f"{self.consumer}:purge"),
            asyncio.create_task(self._analytics_loop(), name=f"{self.consumer}:analytics"),
            asyncio.create_task(self._watchers.run(), name=f"{self.consumer}:live"),
        ]
        log.info("shard started", extra={"shard": self.index, "partitions": len(self.partitions)})

    async def stop(self, *, drain_timeout_s: float = 10.0) -> None:
        """Stop reading, let conversations finish (up to the timeout), ack, persist."""
        if not self._started:
            return
        self._running = False
        self._wake_capacity()
        read = self._tasks[1] if len(self._tasks) > 1 else None
        if read is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(read), self._block_ms / 1000 + 2)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain(), drain_timeout_s)
        for conv in list(self._convs.values()):
            await conv.cancel()
        await self._flush_acks()
        for conv in list(self._convs.values()):
            with contextlib.suppress(Exception):
                await conv.persist()
        self._convs.clear()
        self._ack_event.set()  # (see _ack_loop)
        self._ack_full.set()
        await _cancel_all(self._tasks)
        self._tasks = []
        self._started = False
        if self._conv_services.profiles is not None:
            await self._conv_services.profiles.aclose()
        if self._conv_services.mentions is not None:
            await self._conv_services.mentions.aclose()
        with contextlib.suppress(Exception):
            await self._conv_services.tally.flush(self._redis)
        with contextlib.suppress(Exception):
            await self._publish_stats()

    async def abort(self) -> None:
        """Stop at once as a crash would: no drain, no acks, no persisting. What was read
        stays pending in Redis for the next start (tests and emergency stops)."""
        self._running = False
        for conv in list(self._convs.values()):
            if conv.task is not None and not conv.task.done():
                conv.task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *(c.task for c in self._convs.values() if c.task)]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._to_ack, self._acks_queued = [], {}, 0
        self._convs.clear()
        self._inflight.clear()
        self._started = False
        if self._conv_services.profiles is not None:
            await self._conv_services.profiles.aclose()
        if self._conv_services.mentions is not None:
            await self._conv_services.mentions.aclose()

    async def _drain(self) -> None:
        for conv in list(self._convs.values()):
            await conv.wait_idle()
        await self._flush_acks()

    def ping(self) -> dict[str, Any]:
        return {"shard": self.index, "partitions": self.partitions, "running": self._running,
                "active": len(self._convs), "inflight": len(self._inflight),
                "handled": self.handled, "epochs": dict(self.epochs)}

    @property
    def active_conversations(self) -> int:
        return len(self._convs)

    # --- reading ----------------------------------------------------------------------
    async def _ensure_groups(self) -> None:
        await self._reader.ensure_groups()

    async def _recreate_groups(self) -> None:
        # A stream key deleted wholesale (an operator, a flush) loses its group: NOGROUP.
        with contextlib.suppress(Exception):
            await self._ensure_groups()

    async def _read_loop(self) -> None:
        while self._running:
            try:
                await self._resume_own_pending()
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("re-reading own pending entries failed; retrying")
                await asyncio.sleep(1.0)
                await self._recreate_groups()
        try:
            await self._resume_media()
        except Exception as exc:  # noqa: BLE001 - reading goes on; the listing expires
            log.warning("media downloads not taken up",
                        extra={"shard": self.index, "error": type(exc).__name__})
        while self._running:
            room = self._max_inflight - len(self._inflight)
            if room <= 0:
                await self._wait_capacity()
                continue
            if not self.partitions:  # every partition handed over: wait for one
                await asyncio.sleep(self._block_ms / 1000)
                continue
            failed = await self._read_once(room)
            if failed:
                await asyncio.sleep(1.0)
                if failed == "read":
                    await self._recreate_groups()

    async def _read_once(self, room: int) -> str:
        """One read and its dispatch; "" or what failed ("read", "dispatch")."""
        per_stream = max(1, min(self._batch, room // max(1, len(self.partitions))))
        try:
            async with self._read_lock:  # a release waits for this read, not its dispatch
                answer = await self._reader.read_new(count=per_stream, block_ms=self._block_ms)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reading the inbound streams failed; retrying")
            return "read"
        try:
            for stream, entries in answer:
                partition = self._partition_of.get(stream)
                if partition is not None:  # else released during the read: left pending
                    await self._dispatch_many(partition, entries)
        except asyncio.CancelledError:
            raise
        except Exception:
            # What was read and not handed to a conversation stays pending in Redis
            # for this consumer: taken over again by the claim loop once idle. The
            # loop itself goes on (a read loop that ended here stopped the shard
            # reading for good: `mtdesk drill redis-restart`).
            log.exception("dispatching what was read failed; it stays pending")
            return "dispatch"
        return ""

    async def _resume_own_pending(self) -> None:
        """Entries this consumer read before a crash/restart and never acknowledged."""
        for p in self.partitions:
            after: str | None = "0"
            while self._running and after is not None:
                after, entries = await self._reader.own_pending(
                    keys.inbound(p), count=self._batch, after=after)
                await self._dispatch_many(p, entries)

    async def _resume_media(self, partitions: list[int] | None = None) -> None:
        """The media downloads being retried in this shard's partitions (or ``partitions``)
        before a restart, or by their previous owner, go on here with the tries left."""
        media = self._conv_services.media
        partitions = self.partitions if partitions is None else partitions
        if media is None or not partitions:
            return
        tenants = sorted(as_bytes(t).decode()
                         for t in await self._redis.smembers(keys.TENANTS))
        taken = await media.resume(tenants, partitions, self._settings.partitions)
        if taken:
            log.info("media downloads taken up", extra={"shard": self.index, "count": taken})

    async def _claim_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self._claim_interval_s)
            try:
                await self.claim_stale()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("XAUTOCLAIM failed; will retry")

    async def claim_stale(self) -> int:
        """Take over entries idle past ``claim_idle_ms`` on this shard's partitions."""
        claimed = 0
        for p in list(self.partitions):
            if p not in self._held:  # handed over meanwhile
                continue
            count, full = await self._claim_partition(p, self._claim_idle_ms)
            claimed += count
            if full:
                break
        return claimed

    async def _claim_partition(self, p: int, min_idle_ms: int) -> tuple[int, bool]:
        """Take over (and dispatch, in id order) entries of ``p`` pending on any consumer
        for longer than ``min_idle_ms``; (how many, whether the shard is full)."""
        claimed = 0
        start = "0-0"
        for _ in range(100):  # bounded pages per round
            if len(self._inflight) >= self._max_inflight:
                return claimed, True
            async with self._read_lock:  # a release waits for this claim, not its dispatch
                start, entries = await self._reader.claim_idle(
                    keys.inbound(p), min_idle_ms=min_idle_ms, count=self._batch, start=start)
            fresh = [e for e in entries if (p, e[0]) not in self._inflight]
            claimed += len(fresh)
            await self._dispatch_many(p, fresh)
            if start == "0-0":
                break
        return claimed, False

    async def _dispatch_many(self, partition: int, entries: list[Entry]) -> None:
        async with self._dispatch_lock:
            for entry_id, fields in entries:
                await self._dispatch(partition, entry_id, fields)

    async def _dispatch(self, partition: int, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        if (partition, entry_id) in self._inflight:
            return
        if partition not in self._held:  # handed over: stays pending for its new owner
            return
        if not fields:  # deleted while pending: nothing to do but acknowledge
            self._queue_ack(partition, entry_id)
            return
        try:
            tenant_id, event = await self._open(fields)
            received_ms = int(fields.get(b"r", b"0") or 0)
        except (KeyError, ValueError, msgspec.DecodeError, DecryptionError) as exc:
            # A DecryptionError: the tenant's data key is gone (its account was erased).
            log.error("undecodable inbound entry dropped", extra={
                "entry": entry_id, "partition": partition, "error": type(exc).__name__})
            self.metrics.outcome("undecodable")
            self._queue_ack(partition, entry_id)
            return
        now = time.time()
        if received_ms:
            self.metrics.observe("queue", now - received_ms / 1000)
        item = WorkItem(partition=partition, entry_id=entry_id, tenant_id=tenant_id,
                        event=event, received_ms=received_ms or int(now * 1000),
                        stale=fields.get(b"s") == b"1")
        self._note_confirmation(event)  # before it queues behind an answer under way
        if isinstance(event, Echo):
            await pause_on_arrival(self._conv_services, tenant_id, event)
        # Activating may need Redis (the conversation's stored context, its tenant's key):
        # a blip is retried in place; the entry is in flight only once a conversation
        # holds it, so one that could not be handed over is reclaimed like any other.
        conv = await retry_transient(lambda: self._activate(tenant_id, event.conversation),
                                     attempts=8, first_s=0.2, max_s=4.0)
        self._inflight.add((partition, entry_id))
        conv.partition = partition
        conv.submit(item)

    async def _open(self, fields: dict[bytes, bytes]) -> tuple[str, Any]:
        """An inbound entry's tenant and event (raises what decoding raises)."""
        tenant_id = fields[b"t"].decode()
        raw = fields[b"e"]
        if is_sealed(raw):  # sealed by the gateway with the tenant's data key
            sealer = self._cipher.cached(tenant_id) or await self._cipher.key(
                tenant_id, create=False)
            raw = sealer.open(EVENT_FAMILY, "", raw)
        return tenant_id, decode_event(raw)

    def _note_confirmation(self, event: object) -> None:
        """Meta's confirmation of one of our sends (an echo, a WhatsApp status), noted
        for a reply resumed after a crash that cannot tell whether that part went out
        (no Redis command)."""
        if isinstance(event, Echo):
            self._confirmations.note(event.metadata, event.event_id)
        elif isinstance(event, Status) and event.status in _ACCEPTED:
            self._confirmations.note(event.callback_data, event.message_id)

    async def look_ahead(self, partition: int, after: str) -> None:
        """Note the confirmations waiting in the partition's stream after entry
        ``after`` that this shard has not read yet: a shard behind its load (its reads
        held back while ``max_inflight`` entries are in hand) would read them only after
        a resumed reply's wait for them ran out, and send its part again. Each entry is
        looked at once per process (the scan goes on from where the last one ended), at
        most ``_LOOK_PAGES`` pages of ``_LOOK_PAGE`` a call; nothing is dispatched."""
        lock = self._look_locks.setdefault(partition, asyncio.Lock())
        async with lock:
            start = max(after, self._looked.get(partition, "0-0"), key=_stream_id)
            for _ in range(_LOOK_PAGES):
                rows = await self._redis.xrange(keys.inbound(partition), min=f"({start}",
                                                max="+", count=_LOOK_PAGE)
                if not rows:
                    break
                for _raw_id, fields in rows:
                    if not fields:
                        continue
                    with contextlib.suppress(KeyError, ValueError, msgspec.DecodeError,
                                             DecryptionError):
                        entry = {as_bytes(k): as_bytes(v) for k, v in fields.items()}
                        self._note_confirmation((await self._open(entry))[1])
                last = rows[-1][0]
                start = as_bytes(last).decode() if last is not None else start
            self._looked[partition] = start

    # --- conversations ----------------------------------------------------------------
    async def _activate(self, tenant_id: str, conversation: str) -> Conversation:
        slot = f"{tenant_id}|{conversation}"
        conv = self._convs.get(slot)
        if conv is not None:
            self._convs.move_to_end(slot)
            return conv
        while len(self._convs) >= self._settings.max_active_conversations:
            if not await self._evict_one():
                await self._wait_capacity()  # every conversation is busy: backpressure
        sealer = self._cipher.cached(tenant_id) or await self._cipher.key(tenant_id)
        context = await Conversation.restore(self._redis, tenant_id, conversation, sealer)
        conv = Conversation(tenant_id, conversation, self._conv_services, context, sealer)
        self._convs[slot] = conv
        return conv

    async def _evict_one(self, *, older_than: float | None = None) -> bool:
        for slot, conv in self._convs.items():  # least recently used first
            if conv.idle and (older_than is None or conv.last_active < older_than):
                del self._convs[slot]
                if conv.dirty:  # else Redis holds it as it is (the reply's end wrote it)
                    await conv.persist()
                return True
        return False

    async def evict_idle(self) -> int:
        """Evict conversations idle longer than ``settings.conversation_idle_s``."""
        cutoff = time.monotonic() - self._settings.conversation_idle_s
        evicted = 0
        while await self._evict_one(older_than=cutoff):
            evicted += 1
        return evicted

    def _wake_capacity(self) -> None:
        self._capacity.set()

    async def _wait_capacity(self) -> None:
        self._capacity.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._capacity.wait(), 0.5)

    # --- acknowledgement (the conversations' EventLedger) ------------------------------
    def done(self, item: WorkItem) -> None:
        """Fully handled: acknowledged with the next batch."""
        self._queue_ack(item.partition, item.entry_id)

    def idle(self) -> None:
        """A conversation's worker stopped: a read waiting for capacity may go on."""
        self._wake_capacity()

    def fence(self, partition: int) -> tuple[str, str] | None:
        epoch = self.epochs.get(partition)
        return None if epoch is None else (keys.partition_owner(partition), str(epoch))

    def lost(self, partition: int) -> None:
        log.warning("partition %d was handed over; this shard lets it go", partition,
                    extra={"shard": self.index})
        asyncio.ensure_future(self._lost(partition))

    def release(self, item: WorkItem) -> None:
        """Handling failed: keep the entry pending (reclaimed after ``claim_idle_ms``)."""
        self._inflight.discard((item.partition, item.entry_id))
        self._wake_capacity()

    def failed(self, item: WorkItem) -> None:
        """Handling raised. Retried on reclaim; after ``max_failures`` the entry is a
        poison message: acknowledged and counted (its inbound is already in history
        when storing it worked), so one bad event cannot loop forever."""
        key = (item.partition, item.entry_id)
        count = self._failures.get(key, 0) + 1
        if count >= self._max_failures:
            self._failures.pop(key, None)
            log.error("event failed %d times; dropped", count,
                      extra={"entry": item.entry_id, "partition": item.partition})
            self.metrics.outcome("poison")
            self._queue_ack(item.partition, item.entry_id)
            return
        if len(self._failures) > 10_000:
            self._failures.clear()  # bounded; a counter only delays the drop
        self._failures[key] = count
        self.release(item)

    def _queue_ack(self, partition: int, entry_id: str) -> None:
        self._to_ack.setdefault(partition, []).append(entry_id)
        self._acks_queued += 1
        if self._acks_queued >= self._ack_batch:
            self._ack_full.set()
        self._ack_event.set()

    async def _ack_loop(self) -> None:
        # Ends with the shard (stop() flushes what is left itself), also when a
        # cancellation was lost inside a Redis call: stop() wakes it up to see that.
        while self._running:
            await self._ack_event.wait()
            if self._acks_queued < self._ack_batch:  # let a batch gather
                self._ack_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ack_full.wait(), self._ack_delay_s)
            try:
                await self._flush_acks()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("acknowledging failed; will retry")
                await asyncio.sleep(0.5)

    async def _flush_acks(self) -> None:
        self._ack_event.clear()
        if not self._to_ack:
            return
        batch, self._to_ack = self._to_ack, {}
        self._acks_queued = 0
        try:
            outcome = await self._reader.ack_fenced({
                keys.inbound(p): (keys.partition_owner(p), str(self.epochs.get(p, "")), ids)
                for p, ids in batch.items()})
        except Exception:
            self._put_back(batch)  # nothing known acknowledged: retried by the loop
            raise
        for stream in outcome.refused:
            lost = self._stream_partition(stream, batch)
            # Handed over behind this shard's back (it did not answer in time): the new
            # owner takes these entries over, and finds them answered.
            log.warning("partition %d was handed over; its acknowledgements are dropped",
                        lost, extra={"shard": self.index})
            batch.pop(lost, None)
            asyncio.ensure_future(self._lost(lost))
        # A cluster master that failed: its partitions' acknowledgements are sent again
        # (the loop's next flush); the other masters' are done, and their entries leave
        # the in-flight count, so reading the live partitions goes on past the cap.
        self._put_back({p: batch.pop(p) for p in
                        {self._stream_partition(s, batch) for s in outcome.failed}})
        for partition, ids in batch.items():
            for entry_id in ids:
                self._inflight.discard((partition, entry_id))
            self.handled += len(ids)
        self._wake_capacity()

    def _put_back(self, acks: dict[int, list[str]]) -> None:
        """Acknowledgements not done queued again for the ack loop's next flush."""
        for partition, ids in acks.items():
            self._to_ack.setdefault(partition, []).extend(ids)
            self._acks_queued += len(ids)
        if acks:
            self._ack_event.set()

    def _stream_partition(self, stream: str, batch: Mapping[int, object]) -> int:
        partition = self._partition_of.get(stream)
        if partition is None:  # released meanwhile
            partition = next(p for p in batch if keys.inbound(p) == stream)
        return partition

    # --- partition ownership (core/ownership.py) ----------------------------------------
    def _set_partitions(self, partitions: list[int]) -> None:
        self.partitions = sorted(partitions)
        self._reader = GroupReader(self._redis, keys.SHARD_GROUP, self.consumer,
                                   [keys.inbound(p) for p in self.partitions])
        self._partition_of = {keys.inbound(p): p for p in self.partitions}

    async def release_partitions(self, partitions: list[int], *,
                                 timeout_s: float | None = None) -> dict[str, Any]:
        """Hand ``partitions`` over: stop reading them, hand back what their conversations
        have queued but not started, let them finish the event each is handling (up to
        ``timeout_s``; what is left is cancelled), acknowledge, persist their contexts and
        drop them from memory. Everything not finished stays pending for the next owner.
        Idempotent (a partition not held is already released)."""
        gone = set(partitions) & set(self.partitions)
        if not gone:
            return {"released": [], "left_pending": 0}
        # What a read or claim under way returns of these partitions is not dispatched:
        # it stays pending, and waiting for that call to end (not for its dispatch) puts
        # it on this consumer's pending list before the next owner claims the list.
        self._held -= gone
        self._set_partitions([p for p in self.partitions if p not in gone])
        async with self._read_lock:
            pass
        # What is queued and not started stays pending for the next owner, which takes
        # it in order; only what a conversation is handling now is finished here (a
        # shard behind its load would otherwise hold the handover for its whole backlog).
        for conv in list(self._convs.values()):
            if conv.partition in gone:
                conv.release_queued()
        budget = self._release_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        while any(p in gone for p, _ in self._inflight) and time.monotonic() < deadline:
            await self._flush_acks_quietly()
            await asyncio.sleep(0.02)
        left = sum(1 for p, _ in self._inflight if p in gone)
        await self._drop_conversations(gone, persist=True)
        await self._flush_acks_quietly()
        for p in gone:
            self.epochs.pop(p, None)
        self._failures = {k: v for k, v in self._failures.items() if k[0] not in gone}
        self._wake_capacity()
        log.info("partitions released", extra={"shard": self.index, "partitions": len(gone),
                                                "left_pending": left})
        return {"released": sorted(gone), "left_pending": left}

    async def take_partitions(self, held: dict[int, int]) -> dict[str, Any]:
        """Take ``held`` (partition → epoch) over: every entry pending on them, whoever
        read it, is claimed and dispatched in order, before anything new is read."""
        fresh = {p: e for p, e in held.items() if p not in self.partitions}
        self.epochs.update(held)
        self._held |= set(held)
        claimed = 0
        if fresh:
            await GroupReader(self._redis, keys.SHARD_GROUP, self.consumer,
                              [keys.inbound(p) for p in fresh]).ensure_groups()
        # The pending entries first, then the partitions join the reads: nothing newer
        # of them is dispatched before what the old owner left.
        for p in sorted(held):
            count, _full = await self._claim_partition(p, 0)
            claimed += count
        if fresh:
            self._set_partitions([*self.partitions, *fresh])
            try:
                await self._resume_media(sorted(fresh))
            except Exception as exc:  # noqa: BLE001 - the partitions are taken regardless
                log.warning("media downloads not taken up", extra={
                    "shard": self.index, "error": type(exc).__name__})
        log.info("partitions taken", extra={"shard": self.index, "partitions": len(fresh),
                                             "claimed": claimed})
        return {"taken": sorted(fresh), "claimed": claimed}

    async def _lost(self, partition: int) -> None:
        """A partition handed over without this shard releasing it: stop at once, write
        nothing back (the new owner's contexts are the ones that count)."""
        if partition not in self._held:
            return
        self._held.discard(partition)
        self._set_partitions([p for p in self.partitions if p != partition])
        self.epochs.pop(partition, None)
        await self._drop_conversations({partition}, persist=False)
        self._inflight = {k for k in self._inflight if k[0] != partition}
        self._acks_queued -= len(self._to_ack.pop(partition, []))

    async def _drop_conversations(self, partitions: set[int], *, persist: bool) -> None:
        for slot, conv in list(self._convs.items()):
            if conv.partition not in partitions:
                continue
            if not conv.idle:
                await conv.cancel()
            del self._convs[slot]
            if persist:
                with contextlib.suppress(Exception):
                    await conv.persist()

    async def _flush_acks_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush_acks()

    # --- erasure notices (mtdesk.actors.shard_erasure) -------------------------------------
    async def _purge_loop(self) -> None:
        await listen_for_notices(self._redis, lambda: self._running, self._erasure.on_notice,
                                  subscribed=self.subscribed, on_subscribed=self.prune_erased)

    def forget(self, notice: Notice) -> int:
        """Drop the conversations an erasure notice covers; returns how many."""
        return self._erasure.forget(notice)

    async def prune_erased(self) -> int:
        """Drop what a missed erasure notice would have (run after every
        (re)subscription; see :meth:`ShardErasure.prune`). Returns the conversations
        dropped."""
        return await self._erasure.prune()

    # --- housekeeping -----------------------------------------------------------------
    async def _housekeeping_loop(self) -> None:
        interval = min(self._stats_interval_s, max(0.05, self._settings.conversation_idle_s / 2))
        last_stats = 0.0
        while self._running:
            await asyncio.sleep(interval)
            try:
                await self.evict_idle()
                if time.monotonic() - last_stats >= self._stats_interval_s:
                    last_stats = time.monotonic()
                    await self._publish_stats()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("shard housekeeping failed")

    async def _analytics_loop(self) -> None:
        """Writes the analytics the conversations counted (core/analytics.py), every
        ``analytics_interval_s``: one pipeline, nothing when nothing was counted."""
        while self._running:
            await asyncio.sleep(self._analytics_interval_s)
            try:
                await self._conv_services.tally.flush(self._redis)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("analytics not written; kept for the next try")

    async def _publish_stats(self) -> None:
        self.metrics.set_active(len(self._convs), len(self._inflight))
        await publish_shard_stats(
            self._redis, self.metrics, self.partitions,
            process_registries=(REGISTRY,) if self._process_metrics else (),
            ttl_s=max(30, int(self._stats_interval_s * 6)))
