"""Retention: message data older than the tenant's retention period is deleted.

What a caller may rely on:

- The period is ``settings.retention_days`` (default and maximum 365 days, the privacy
  policy's 12 months); a tenant may set less with :func:`set_retention_days` (field
  ``retention_days`` of the tenant hash). :func:`effective_retention_days` is what applies.
- :meth:`RetentionSweep.run` deletes, per tenant, everything stored before
  ``now - period``: history entries (``XTRIM MINID``: entry ids are store times), and
  imported history (WhatsApp Business app) written before then, whenever imported
  (``keys.imported``: each entry's message time), the
  conversation index entry, context and pause marker of a conversation with nothing
  left, the remembered turns of a continuing conversation's context that are older than
  its retained messages (shards are told to reload it by an erasure notice), the media
  bytes customers sent (``keys.media``, trimmed like the history), reply and
  outbound state last updated before the cutoff, and dead letters (raw webhook bodies)
  older than the global maximum. Time comes from the injected clock. No analytics store
  holds personal data (shard stats and usage counters are counts only).
- It works in pages (``ZSCAN``/``SCAN`` of ``batch`` items, pipelined writes, an optional
  ``pause_s`` between pages) so the hot path never waits behind it.
- Every run adds its counts to the hash ``keys.RETENTION_STATUS`` (``deleted:<type>``,
  ``last_run_ms``, ``last_duration_ms``); :class:`RetentionCollector` exports them to
  Prometheus as ``mtdesk_retention_deleted_total{type}`` and
  ``mtdesk_retention_last_run_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import DecryptionError, NotFound, ValidationError
from mtdesk.core.history import MEDIA_KIND, decode_message
from mtdesk.core.keys import Retention
from mtdesk.core.redis import (
    Redis,
    as_bytes_set,
    as_entries,
    as_hash,
    as_opt_bytes,
    as_scored,
    scan_pages,
)
from mtdesk.core.scripts import LuaScript
from mtdesk.core.sealing import CONTEXT_FAMILY, TenantCipher, TenantKey
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.notices import ConversationsNotice, publish_notice

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# What a run's report calls the records of a family (the metric's ``type`` label).
_REPORTED_AS = {keys.REPLY.name: "replies", keys.OUTBOUND.name: "outbound"}
_STATE_TIME_FIELDS = (b"updated_ms", b"created_ms")

# KEYS: history, context, paused, conversations, media, inbox card, imported; ARGV: conversation, cutoff ms.
# Expire a conversation only while its history is empty and it was not active since.
_EXPIRE_CONVERSATION = """
if redis.call('XLEN', KEYS[1]) > 0 then return {0, 0} end
local last = redis.call('ZSCORE', KEYS[4], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then return {0, 0} end
local ctx = redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[3], KEYS[5], KEYS[6], KEYS[7])
return {redis.call('ZREM', KEYS[4], ARGV[1]), ctx}
"""

# KEYS: a key; ARGV: the value read, the new value. Keeps the key's TTL.
_REPLACE_IF_SAME = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""


class RetentionReport(msgspec.Struct, kw_only=True):
    """What one run deleted. ``deleted`` maps a data type to a count."""

    started_ms: int
    finished_ms: int = 0
    tenants: int = 0
    deleted: dict[str, int] = msgspec.field(default_factory=dict)

    def add(self, kind: str, n: int) -> None:
        if n:
            self.deleted[kind] = self.deleted.get(kind, 0) + int(n)


def effective_retention_days(stored: object, settings: Settings) -> int:
    """The tenant's period: its own setting when valid and shorter, else the maximum."""
    try:
        days = int(stored) if stored not in (None, b"", "") else settings.retention_days  # type: ignore[call-overload]
    except (TypeError, ValueError):
        days = settings.retention_days
    return max(1, min(days, settings.retention_days))


def validate_retention_days(value: object, settings: Settings) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("days", "must be a whole number of days")
    if not 1 <= value <= settings.retention_days:
        raise ValidationError("days", f"must be between 1 and {settings.retention_days}")
    return value


async def set_retention_days(redis: Redis, settings: Settings, tenant_id: str, days: object) -> int:
    """Store a tenant's retention period (1..``settings.retention_days``); returns it."""
    value = validate_retention_days(days, settings)
    if ":" in tenant_id or not await redis.exists(keys.tenant(tenant_id)):
        raise NotFound(f"tenant {tenant_id!r} not found")
    await redis.hset(keys.tenant(tenant_id), "retention_days", value)
    return value


async def get_retention_days(redis: Redis, settings: Settings, tenant_id: str) -> int:
    return effective_retention_days(await redis.hget(keys.tenant(tenant_id), "retention_days"), settings)


class RetentionSweep:
    """Deletes expired message data; ``run`` on demand, ``run_forever`` on a schedule."""

    def __init__(
        self, redis: Redis, settings: Settings, clock: Clock, *,
        batch: int = 500, pause_s: float = 0.0,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._cipher = TenantCipher.from_settings(redis, settings)  # for sealed contexts
        self._batch = batch
        self._pause_s = pause_s
        self._expire = LuaScript(_EXPIRE_CONVERSATION, name="expire_conversation").bind(redis)
        self._cas = LuaScript(_REPLACE_IF_SAME, name="replace_if_same").bind(redis)
        # One sweep at a time: the schedule and an on-demand run would otherwise race over
        # the same keys. A run asked for during a sweep starts after it, so everything
        # expired when it was asked for is gone when it returns.
        self._running = asyncio.Lock()

    async def run(self, tenant_ids: Sequence[str] | None = None) -> RetentionReport:
        """One sweep over ``tenant_ids`` (default: every tenant), after any sweep in flight."""
        async with self._running:
            return await self._run(tenant_ids)

    async def _run(self, tenant_ids: Sequence[str] | None) -> RetentionReport:
        t0 = time.monotonic()
        report = RetentionReport(started_ms=now_ms(self._clock))
        if tenant_ids is None:
            tenant_ids = sorted(
                t.decode() for t in as_bytes_set(await self._redis.smembers(keys.TENANTS))
            )
        for tid in tenant_ids:
            await self.sweep_tenant(tid, report)
            report.tenants += 1
        cutoff = report.started_ms - self._settings.retention_days * DAY_MS
        # Streams of no single tenant (dead letters: raw webhook bodies) by the maximum.
        for family in keys.FAMILIES:
            if family.retention is Retention.MAX_AGE and not family.parted:
                name = keys.global_key(family)
                if await self._redis.exists(name):
                    trimmed = await self._redis.xtrim(name, minid=cutoff, approximate=False)
                    report.add(_REPORTED_AS.get(family.name, family.name), trimmed)
        report.finished_ms = now_ms(self._clock)
        await self._record(report, duration_ms=int((time.monotonic() - t0) * 1000))
        log.info("retention run: tenants=%d deleted=%s", report.tenants, report.deleted)
        return report

    async def run_forever(self, interval_s: float = 3600.0, stop: asyncio.Event | None = None) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set; a failed run is retried next time."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.run()
            except Exception as exc:  # noqa: BLE001 - a schedule must survive one bad run
                log.warning("retention run failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    async def sweep_tenant(self, tenant_id: str, report: RetentionReport) -> None:
        days = await get_retention_days(self._redis, self._settings, tenant_id)
        cutoff = now_ms(self._clock) - days * DAY_MS
        r = self._redis
        cursor = 0
        while True:
            cursor, rows = await r.zscan(keys.conversations(tenant_id), cursor, count=self._batch)
            convs = [(c.decode(), float(s)) for c, s in as_scored(rows)]
            if convs:
                await self._trim_page(tenant_id, convs, cutoff, report)
            if cursor == 0:
                break
            await self._breathe()
        # Per-message state: replies (with the generated text) and outbound statuses:
        # every family whose records expire by age. (Exact XTRIM above: the
        # approximate form keeps whole old nodes.)
        for family in keys.FAMILIES:
            if family.retention is Retention.RECORD_AGE:
                await self._expire_state(tenant_id, family, cutoff, report)

    async def _trim_page(
        self, tenant_id: str, convs: list[tuple[str, float]], cutoff: int, report: RetentionReport
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for conv, _ in convs:
            pipe.xtrim(keys.history(tenant_id, conv), minid=cutoff, approximate=False)
            # The media bytes customers sent: their entry ids are store times too.
            pipe.xtrim(keys.media(tenant_id, conv), minid=cutoff, approximate=False)
            # Imported history: entry ids are import times; it goes by when it was written.
            pipe.zrangebyscore(keys.imported(tenant_id, conv), "-inf", f"({cutoff}")
        results = await pipe.execute()
        trimmed = [int(n) for n in results[0::3]]
        report.add("media", sum(int(n) for n in results[1::3]))
        old_imports = results[2::3]
        if any(old_imports):
            pipe = self._redis.pipeline(transaction=False)
            for (conv, _), ids in zip(convs, old_imports, strict=True):
                if ids:
                    pipe.xdel(keys.history(tenant_id, conv), *ids)
                    pipe.zrem(keys.imported(tenant_id, conv), *ids)
            deleted = iter((await pipe.execute())[0::2])  # the XDELs' counts
            trimmed = [cut + int(next(deleted)) if ids else cut
                       for cut, ids in zip(trimmed, old_imports, strict=True)]
        pipe = self._redis.pipeline(transaction=False)
        for conv, _ in convs:
            pipe.xlen(keys.history(tenant_id, conv))
        lengths = await pipe.execute()
        report.add("messages", sum(int(n) for n in trimmed))
        # A conversation with no message left and no activity since the cutoff goes,
        # with its context; decided atomically so a message arriving meanwhile keeps it.
        # A conversation that lost old messages but goes on may still remember them in
        # its context: keep only the turns its retained messages account for.
        rewritten = []
        for (conv, _), cut, n in zip(convs, trimmed, lengths, strict=True):
            if int(cut) and int(n) and await self._forget_expired_turns(tenant_id, conv):
                rewritten.append(conv)
        if rewritten:
            report.add("context_turns", len(rewritten))
            await publish_notice(self._redis, ConversationsNotice(tenant_id, tuple(rewritten)))
        stale = [conv for (conv, _), n in zip(convs, lengths, strict=True) if int(n) == 0]
        if not stale:
            return
        pipe = self._redis.pipeline(transaction=False)
        expire = self._expire.script
        expire.load(pipe)  # the EVALSHAs below find it even after a Redis restart
        for conv in stale:
            expire.queue(
                pipe,
                [keys.history(tenant_id, conv), keys.context(tenant_id, conv),
                 keys.paused(tenant_id, conv), keys.conversations(tenant_id),
                 keys.media(tenant_id, conv), keys.inbox_card(tenant_id, conv),
                 keys.imported(tenant_id, conv)],
                [conv, cutoff],
            )
        _sha, *expired = await pipe.execute()
        for zremoved, ctx in expired:
            report.add("conversations", int(zremoved))
            report.add("contexts", int(ctx))

    async def _forget_expired_turns(self, tenant_id: str, conv: str) -> bool:
        """Cut the context's ``turns`` to those newer than the cutoff; True if changed.

        Turns carry no times, but each maps to its own retained history entry, in order:
        a user turn to an inbound message that was not skipped, an assistant turn to the
        first part of a reply. So the context may keep as many of its last turns as the
        history still holds such entries (counted newest first, at most ``len(turns)``).
        Counting fewer than there are only drops memory, never keeps expired text.
        """
        ctx_key = keys.context(tenant_id, conv)
        raw = as_opt_bytes(await self._redis.get(ctx_key))
        if raw is None:
            return False
        sealer: TenantKey | None = None
        try:
            ctx = msgspec.msgpack.decode(raw)
            sealed = ctx.get("sealed") if isinstance(ctx, dict) else None
            if isinstance(sealed, bytes):  # turns and bot state sealed: [turns, bot_state]
                sealer = await self._cipher.key(tenant_id, create=False)
                ctx["turns"], ctx["bot_state"] = msgspec.msgpack.decode(
                    sealer.open(CONTEXT_FAMILY, conv, sealed))
                ctx["sealed"] = None
        except (msgspec.DecodeError, DecryptionError, ValueError, TypeError):
            return bool(await self._redis.delete(ctx_key))  # unreadable: cannot be vetted
        turns = ctx.get("turns") if isinstance(ctx, dict) else None
        if not isinstance(turns, list) or not turns:
            return False
        need, kept = len(turns), 0
        end = "+"
        while kept < need:
            page = as_entries(
                await self._redis.xrevrange(keys.history(tenant_id, conv), end, "-", count=50)
            )
            for _entry, fields in page:
                try:
                    m = decode_message(fields[b"m"])
                except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if (m.direction == "in" and m.status != "skipped"
                        and m.kind != MEDIA_KIND) or (
                        m.direction == "out" and m.kind == "reply" and m.part == 0):
                    kept += 1
            if len(page) < 50:
                break
            end = "(" + page[-1][0].decode()
        kept = min(kept, need)
        if kept == need:
            return False
        ctx["turns"] = turns[need - kept:] if kept else []
        if sealer is not None:  # sealed again, as the shard stores it
            ctx["sealed"] = sealer.seal(CONTEXT_FAMILY, conv, msgspec.msgpack.encode(
                [ctx["turns"], ctx["bot_state"]]))
            ctx["turns"], ctx["bot_state"] = [], {}
        # Only if the shard did not write a newer context meanwhile.
        return bool(await self._cas(keys=[ctx_key], args=[raw, msgspec.msgpack.encode(ctx)]))

    async def _expire_state(
        self, tenant_id: str, family: keys.Family, cutoff: int, report: RetentionReport
    ) -> None:
        match = keys.tenant_pattern(tenant_id, family)
        async for names in scan_pages(self._redis, match=match, count=self._batch):
            if names:
                pipe = self._redis.pipeline(transaction=False)
                for name in names:
                    pipe.hmget(name, *_STATE_TIME_FIELDS, b"entry", b"stored")
                rows = await pipe.execute()
                old = [n for n, row in zip(names, rows, strict=True) if _state_ms(row) < cutoff]
                if old:
                    report.add(_REPORTED_AS.get(family.name, family.name),
                               int(await self._redis.unlink(*old)))
            await self._breathe()

    async def _breathe(self) -> None:
        if self._pause_s:
            await asyncio.sleep(self._pause_s)

    async def _record(self, report: RetentionReport, *, duration_ms: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for kind, n in report.deleted.items():
            pipe.hincrby(keys.RETENTION_STATUS, f"deleted:{kind}", n)
        pipe.hset(keys.RETENTION_STATUS, mapping={
            "last_run_ms": report.finished_ms, "last_duration_ms": duration_ms,
            "last_tenants": report.tenants,
        })
        await pipe.execute()


def _state_ms(row: list[bytes | None]) -> int:
    """When a reply/outbound record was last touched; unknown → never expired here."""
    for value in row[: len(_STATE_TIME_FIELDS)]:
        if value and value.isdigit():
            return int(value)
    for value in row[len(_STATE_TIME_FIELDS):]:  # a history entry id: "<ms>-<seq>"
        if value and value.split(b"-")[0].isdigit():
            return int(value.split(b"-")[0])
    return 1 << 62


class RetentionStatus(msgspec.Struct, kw_only=True):
    last_run_ms: int | None = None
    last_duration_ms: int | None = None
    deleted: dict[str, int] = msgspec.field(default_factory=dict)


async def read_retention_status(redis: Redis) -> RetentionStatus:
    raw = as_hash(await redis.hgetall(keys.RETENTION_STATUS))
    status = RetentionStatus()
    for k, v in raw.items():
        name = k.decode()
        if name.startswith("deleted:"):
            status.deleted[name.removeprefix("deleted:")] = int(v)
        elif name == "last_run_ms":
            status.last_run_ms = int(v)
        elif name == "last_duration_ms":
            status.last_duration_ms = int(v)
    return status


class RetentionCollector(Collector):
    """Prometheus view of :func:`read_retention_status`; await :meth:`refresh` first."""

    def __init__(self) -> None:
        self._status = RetentionStatus()

    async def refresh(self, redis: Redis) -> RetentionStatus:
        self._status = await read_retention_status(redis)
        return self._status

    def collect(self) -> Iterator[Metric]:
        deleted = CounterMetricFamily(
            "mtdesk_retention_deleted", "Items deleted by retention sweeps, by type",
            labels=["type"],
        )
        for kind, n in sorted(self._status.deleted.items()):
            deleted.add_metric([kind], float(n))
        yield deleted
        last = GaugeMetricFamily(
            "mtdesk_retention_last_run_timestamp_seconds", "When the last retention sweep ended"
        )
        last.add_metric([], (self._status.last_run_ms or 0) / 1000)
        yield last
