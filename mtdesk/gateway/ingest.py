"""Durable, de-duplicated hand-off of webhook events to the conversation shards.

Stream entry format (the contract with the conversation shards)
----------------------------------------------------------------
Each accepted event is one entry of ``keys.inbound(partition_of(event.conversation,
settings.partitions))`` with the fields:

- ``b"e"``: the event, msgpack (decode with :func:`mtdesk.core.events.decode_event`),
  sealed with the tenant's data key (:data:`mtdesk.core.events.EVENT_FAMILY`, id ``""``)
  when the gateway has ``MTDESK_ENCRYPTION_KEYS``;
- ``b"t"``: the tenant id owning the account (from the routing hash ``keys.account``);
- ``b"r"``: the gateway's receive time, epoch milliseconds, as decimal text;
- ``b"s"``: ``b"1"`` when the event is stale (its timestamp is older than
  ``settings.max_event_age_s``): record it, do not answer it. Absent otherwise.

Events of one conversation land in one partition in body order. Inbound streams are
never trimmed here (no MAXLEN): the shards delete what they processed.

Guarantees
----------
All events of a request are written in ONE Lua script call (``ingest.lua``): per event
it reads the routing hash (unknown account → status ``unknown``: not stored, not
marked), sets the de-duplication marker ``keys.seen(event_id)`` with ``NX`` and
``EX settings.dedup_ttl_s`` and, only when newly set, ``XADD``s the entry. A script
runs atomically, so a redelivery never enqueues twice and no marker exists without its
entry. Requests arriving while a round trip is in flight are sent together in the next
one by :class:`IngestBatcher` (one EVALSHA per up to ``max_events_per_call`` events,
all in one pipeline).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisError

from mtdesk.core import keys
from mtdesk.core.durability import ack_wait
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.events import EVENT_FAMILY, Event, conversation_key, encode_event, partition_of
from mtdesk.core.pipelined import ClusterLinks, PipelinedRedis, link_for
from mtdesk.core.redis import UNAVAILABLE, Redis, by_master, is_cluster
from mtdesk.core.resp import Arg, Link
from mtdesk.core.scripts import LuaScript, is_noscript
from mtdesk.gateway.dead_letters import owner_fields
from mtdesk.gateway.sealing import ANY_TENANT, Sealing

log = logging.getLogger(__name__)

SCRIPT = LuaScript.from_file("mtdesk.gateway", "ingest.lua")
ROUTED = LuaScript.from_file("mtdesk.gateway", "ingest_routed.lua")  # a cluster's, per partition
ROUTE_TTL_S = 1.0  # how long a cluster gateway trusts an account's tenant it looked up
DEAD_LETTER_MAXLEN = 10_000


class Outcome(enum.IntEnum):
    """What happened to one event (the script's return codes)."""

    ENQUEUED = 0
    DUPLICATE = 1
    UNKNOWN = 2
    REROUTE = 3  # the account routes to another tenant than the event was sealed for

    @property
    def label(self) -> str:
        return self.name.lower()


_OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)  # by script code: cheaper than Outcome(code)


class IngestCall:
    """The script arguments of one request's events (built without I/O)."""

    __slots__ = ("keys", "args", "count")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[bytes | str] = []
        self.count = 0

    def is_stale(self, index: int) -> bool:
        """Whether the ``index``-th event was marked stale."""
        return bool(self.args[4 * index + 2])


_INBOUND: dict[int, tuple[str, ...]] = {}  # stream keys by partition, per partition count
_ACCOUNT: dict[tuple[str, str], str] = {}  # routing hash keys of the accounts seen
_ACCOUNT_MAX = 10_000


def build_call(
    events: Sequence[Event], *, partitions: int, received_ms: int, stale_before_ms: int,
    sealing: Sequence[Sealing] | None = None,
) -> IngestCall:
    """Arguments for ``events``; an event with a timestamp before ``stale_before_ms`` is
    stale. ``sealing`` (one per event, :mod:`mtdesk.gateway.sealing`): the tenant each is
    sealed for and its key; None stores them in the clear for whichever tenant owns the
    account."""
    # Keys of accounts and partition streams kept: this runs for every event of every POST.
    call = IngestCall()
    r = str(received_ms)
    ks, args = call.keys, call.args
    inbound = _INBOUND.get(partitions)
    if inbound is None:
        inbound = _INBOUND[partitions] = tuple(keys.inbound(p) for p in range(partitions))
    for i, ev in enumerate(events):
        ts = ev.timestamp_ms
        channel, acct = ev.channel, ev.account_id
        account = _ACCOUNT.get((channel, acct))
        if account is None:
            if len(_ACCOUNT) >= _ACCOUNT_MAX:
                _ACCOUNT.clear()
            account = _ACCOUNT[(channel, acct)] = keys.account(channel, acct)
        part = partition_of(conversation_key(channel, acct, ev.user_id), partitions)
        ks += (account, keys.seen(ev.event_id, part), inbound[part])
        stale = "1" if 0 < ts < stale_before_ms else ""
        if sealing is None:
            args += (encode_event(ev), r, stale, ANY_TENANT)
            continue
        tenant, key = sealing[i]
        data = encode_event(ev)
        args += (key.seal(EVENT_FAMILY, "", data) if key is not None else data, r, stale, tenant)
    call.count = len(events)
    return call


class _Pending:
    __slots__ = ("call", "future")

    def __init__(self, call: IngestCall, future: asyncio.Future[list[Outcome]]) -> None:
        self.call = call
        self.future = future


class _Round:
    """One round trip's calls: grouped into script calls (EVALSHA commands) of at most
    ``max_events``."""

    __slots__ = ("batch", "groups", "commands", "tail")

    def __init__(self, batch: list[_Pending], max_events: int, ttl: str,
                 tail: tuple[Arg, ...] | None = None, commands: bool = True) -> None:
        self.batch = batch
        self.tail = tail  # the durability wait sent after the batch (WAIT / WAITAOF)
        groups: list[list[_Pending]] = [[]]
        size = 0
        for p in batch:
            if groups[-1] and size + p.call.count > max_events:
                groups.append([])
                size = 0
            groups[-1].append(p)
            size += p.call.count
        self.groups = groups
        self.commands: list[tuple[Arg, ...]] = []
        if not commands:  # a cluster's round builds its commands once routes are known
            return
        # SCRIPT.evalsha(keys, args) spelled out: the TTL goes in front of the events'
        # arguments without building another list per group (this runs per round trip).
        sha = SCRIPT.sha
        for group in groups:
            if len(group) == 1:
                ks = group[0].call.keys
                self.commands.append(("EVALSHA", sha, len(ks), *ks, ttl, *group[0].call.args))
                continue
            ks = []
            args: list[bytes | str] = [ttl]
            for p in group:
                ks.extend(p.call.keys)
                args.extend(p.call.args)
            self.commands.append(("EVALSHA", sha, len(ks), *ks, *args))
        if tail is not None:
            self.commands.append(tail)


class IngestBatcher:
    """Collects the calls queued while a round trip is in flight and sends them together.

    :meth:`submit` returns a future of one :class:`Outcome` per event once Redis has
    them, or of :class:`StoreUnavailable` (the route answers 503; Meta retries). Start
    with :meth:`start` and stop with :meth:`aclose` (pending calls are flushed first).

    Driven by loop callbacks, not a task: a submit when idle schedules one flush; the
    reply's callback resolves the batch and at once sends what queued meanwhile. On the
    lean link's hot path a round trip is one write and one callback. Connecting, loading
    the script (``SCRIPT LOAD`` in the same write as the batch), a retry after a broken
    connection and the redis-py path run in a task.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        dedup_ttl_s: int,
        max_events_per_call: int = 1000,
        lean: bool = True,
        durability: str = "memory",
        ack_timeout_ms: int = 1000,
    ) -> None:
        self._redis = redis
        # A cluster: the routing hash is in another slot than the partition's stream, so
        # tenants are looked up (and cached ROUTE_TTL_S) before one script per partition.
        self._cluster = is_cluster(redis)
        self._routes: dict[str, tuple[str | None, float]] = {}
        self._durability = durability
        self._ack_timeout_ms = ack_timeout_ms
        self._tail: tuple[Arg, ...] | None = None  # sent after each batch (durability)
        # The hot path talks RESP on the lean link (mtdesk.core.resp); redis-py when it
        # cannot. A pipelined client lends its own link: one connection for the process.
        self._link = link_for(redis) if lean else None
        self._own_link = not isinstance(redis, PipelinedRedis)
        # A cluster: a lean link per master (its scripts and wait in one write on it).
        self._links = ClusterLinks() if self._cluster and lean else None
        self._ttl = str(dedup_ttl_s)
        self._max = max_events_per_call
        self._loaded = False  # SCRIPT LOAD seen to succeed (EVALSHA alone then)
        self._pending: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False  # a flush is scheduled or a round trip in flight
        self._idle: asyncio.Future[None] | None = None  # aclose waits on it
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # for tests and benchmarks: how much batching happened

    async def start(self) -> None:
        """Start taking calls; with a durability beyond ``memory``, after checking the
        servers can give it (:class:`mtdesk.core.errors.ConfigError` if not)."""
        self._tail = await ack_wait(self._redis, self._durability, self._ack_timeout_ms)
        # The loop is kept: asyncio.get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()

    async def aclose(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._busy or self._pending:
            self._idle = loop.create_future()
            if not self._busy:
                self._busy = True
                loop.call_soon(self._flush)
            await self._idle
        if self._link is not None and self._own_link:
            self._link.close()
        if self._links is not None:
            self._links.close()

    def submit(self, call: IngestCall) -> asyncio.Future[list[Outcome]]:
        """A future of one :class:`Outcome` per event of ``call`` (await it; a plain
        function, not a coroutine: one frame less on the hot path)."""
        loop = self._loop
        if loop is None:
            raise StoreUnavailable("the ingest batcher is not running")
        fut: asyncio.Future[list[Outcome]] = loop.create_future()
        if call.count == 0:
            fut.set_result([])
            return fut
        self._pending.append(_Pending(call, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._flush)
        return fut

    # --- one round trip ---------------------------------------------------------------

    def _flush(self) -> None:
        """Send what is pending (``_busy`` is set): at once on a connected lean link,
        otherwise in a task."""
        batch, self._pending = self._pending, []
        if not batch:
            self._went_idle()
            return
        try:
            rnd = _Round(batch, self._max, self._ttl, self._tail, commands=not self._cluster)
            link = self._link
            if link is not None and self._loaded:
                waiter = link.send(rnd.commands)
                if waiter is not None:
                    waiter.add_done_callback(lambda w: self._on_replies(w, rnd))
                    return
            self._in_task(rnd)
        except Exception as exc:  # a callback must never leave the batcher busy forever
            self._fail(batch, exc)
            self._next()

    def _on_replies(self, waiter: asyncio.Future[list[Any]], rnd: _Round) -> None:
        try:
            try:
                replies = waiter.result()
                self._check(replies)
            except (ConnectionError, RedisError) as exc:
                # A broken or stale connection, or a script flushed: the task path
                # reconnects, reloads and retries once (safe: a re-run finds its markers).
                if isinstance(exc, NoScriptError):
                    self._loaded = False
                self._in_task(rnd)
                return
            self._resolve(rnd, replies)
        except Exception as exc:  # a callback must never leave the batcher busy forever
            self._fail(rnd.batch, exc)
        self._next()

    def _in_task(self, rnd: _Round) -> None:
        task = asyncio.ensure_future(self._send_slow(rnd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_slow(self, rnd: _Round) -> None:
        if self._cluster:
            await self._send_cluster(rnd)
            return
        try:
            try:
                replies = await self._execute(rnd.commands)
            except NoScriptError:
                # Redis restarted or SCRIPT FLUSH: an EVALSHA that says NOSCRIPT ran nothing.
                self._loaded = False
                replies = await self._execute(rnd.commands)
            except UNAVAILABLE:
                # A connection broken under the batch: once more on a new one (safe: a
                # re-run finds its own markers and answers "duplicate" for what landed).
                replies = await self._execute(rnd.commands)
        except Exception as exc:  # Redis errors, unreachable, or anything unforeseen
            self._fail(rnd.batch, exc)
        else:
            self._resolve(rnd, replies)
        self._next()

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        if not isinstance(exc, (RedisError, StoreUnavailable, *UNAVAILABLE)):
            log.exception("ingest batch failed", exc_info=exc)
        error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(
            f"ingest failed: {type(exc).__name__}")
        if error is not exc:
            error.__cause__ = exc
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    def _next(self) -> None:
        if self._pending:
            self._flush()  # what queued during the round trip goes out now
        else:
            self._went_idle()

    def _went_idle(self) -> None:
        self._busy = False
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _resolve(self, rnd: _Round, replies: list[Any]) -> None:
        if len(replies) > len(rnd.groups):  # the durability wait's reply comes last
            if not _acknowledged(replies[-1]):
                self._fail(rnd.batch, StoreUnavailable(
                    f"{self._durability}: the batch was not acknowledged within "
                    f"{self._ack_timeout_ms} ms"))
                return
            replies = replies[:-1]
        self.round_trips += 1
        for group, reply in zip(rnd.groups, replies, strict=True):
            pos = 0
            for p in group:
                n = p.call.count
                if not p.future.done():
                    p.future.set_result([_OUTCOMES[c] for c in reply[pos : pos + n]])
                pos += n

    @staticmethod
    def _check(replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                if is_noscript(reply):
                    raise NoScriptError(str(reply))
                raise RedisError(str(reply))

    async def _execute(self, commands: list[tuple[Arg, ...]]) -> list[list[int]]:
        load = not self._loaded
        if self._link is not None:
            replies = await self._execute_lean(self._link, commands, load)
        elif len(commands) == 1 and not load:
            replies = [await self._redis.execute_command(*commands[0])]
        else:
            pipe = self._redis.pipeline(transaction=False)
            if load:
                SCRIPT.load(pipe)
            for command in commands:
                pipe.execute_command(*command)
            replies = list(await pipe.execute())
            if load:
                replies = replies[1:]
        self._loaded = True
        return replies

    # --- a Redis Cluster --------------------------------------------------------------

    async def _send_cluster(self, rnd: _Round) -> None:
        try:
            codes = await self._execute_cluster(rnd)
        except Exception as exc:  # the routing lookup failed: nothing was written
            self._fail(rnd.batch, exc)
        else:
            self.round_trips += 1
            for p, got in zip(rnd.batch, codes, strict=True):
                if p.future.done():
                    continue
                if any(c < 0 for c in got):  # a master failed or did not acknowledge
                    p.future.set_exception(StoreUnavailable(
                        f"ingest: a Redis master did not take the batch ({self._durability})"))
                else:
                    p.future.set_result([_OUTCOMES[c] for c in got])
        self._next()

    async def _tenants(self, accounts: set[str]) -> dict[str, str | None]:
        """The tenant owning each routing hash (None: unknown account), from the cache
        when looked up less than ROUTE_TTL_S ago. Unknown accounts are not cached: an
        account connected a moment ago is routed at once."""
        now = asyncio.get_running_loop().time()
        out: dict[str, str | None] = {}
        missing: list[str] = []
        for acct in accounts:
            hit = self._routes.get(acct)
            if hit is not None and hit[1] > now:
                out[acct] = hit[0]
            else:
                missing.append(acct)
        if missing:
            pipe = self._redis.pipeline(transaction=False)
            for acct in missing:
                pipe.hget(acct, "tenant")
            if len(self._routes) >= _ACCOUNT_MAX:
                self._routes.clear()
            for acct, raw in zip(missing, await pipe.execute(), strict=True):
                tenant = raw.decode() if isinstance(raw, bytes) else raw
                out[acct] = tenant
                if tenant is not None:
                    self._routes[acct] = (tenant, now + ROUTE_TTL_S)
        return out

    async def _execute_cluster(self, rnd: _Round) -> list[list[int]]:
        """The round on a cluster, as codes per call (-1: not taken, the call fails):
        tenants looked up, then one script per partition present (its keys in its
        slot), one pipeline per master, all masters at once, each followed by the
        durability wait on the connection that wrote (a master that fails, or whose
        replica does not acknowledge, fails only the calls with events on it)."""
        tenants = await self._tenants({p.call.keys[3 * i] for p in rnd.batch
                                       for i in range(p.call.count)})
        codes: list[list[int]] = [[2] * p.call.count for p in rnd.batch]
        buckets: dict[str, tuple[list[str], list[Arg], list[tuple[int, int]]]] = {}
        for b, p in enumerate(rnd.batch):
            ks, args = p.call.keys, p.call.args
            for i in range(p.call.count):
                tenant = tenants.get(ks[3 * i])
                if tenant is None:
                    continue  # unknown account: code 2
                expect = args[4 * i + 3]
                if expect not in (ANY_TENANT, tenant):  # sealed for another tenant
                    codes[b][i] = Outcome.REROUTE
                    continue
                stream = ks[3 * i + 2]
                bucket = buckets.get(stream)
                if bucket is None:
                    bucket = buckets[stream] = ([], [self._ttl], [])
                bucket[0].extend((ks[3 * i + 1], stream))
                bucket[1].extend((args[4 * i], args[4 * i + 1], args[4 * i + 2], tenant))
                bucket[2].append((b, i))
        if not buckets:
            return codes
        cluster = cast(RedisCluster, self._redis)
        if not self._loaded:
            await cluster.script_load(ROUTED.source)  # on every master
            self._loaded = True
        by_node = by_master(cluster, buckets.items())
        results = await asyncio.gather(
            *(self._run_on(cluster, node, work) for node, work in by_node),
            return_exceptions=True)
        for (_, work), result in zip(by_node, results, strict=True):
            for n, (_, _, where) in enumerate(work):
                reply = result[n] if isinstance(result, list) else None
                for j, (b, i) in enumerate(where):
                    codes[b][i] = int(reply[j]) if isinstance(reply, list) else -1
        return codes

    async def _run_on(
        self, cluster: RedisCluster, node: ClusterNode,
        work: list[tuple[list[str], list[Arg], list[tuple[int, int]]]],
    ) -> list[Any] | None:
        """One master's scripts and wait; the scripts' replies, or None when the wait
        was not acknowledged. Raises what the pipeline raises. On the master's lean
        link when there is one: what it did not run there (a redirection, NOSCRIPT),
        and all of it when the link broke (a re-run finds its markers: "duplicate"),
        goes redis-py's way."""
        link = self._links.to(node) if self._links is not None else None
        if link is None:
            return await self._run_pipelined(cluster, node, work)
        commands: list[tuple[Arg, ...]] = [
            ("EVALSHA", ROUTED.sha, len(ks), *ks, *args) for ks, args, _ in work]
        if self._tail is not None:
            commands.append(self._tail)
        try:
            replies = await link.call_many(commands)
        except ConnectionError:
            return await self._run_pipelined(cluster, node, work)
        if self._tail is not None:
            if not _acknowledged(replies[-1]):
                return None
            replies = replies[:-1]
        redo = [n for n, r in enumerate(replies) if isinstance(r, hiredis.ReplyError)]
        if redo:
            again = await self._run_pipelined(cluster, node, [work[n] for n in redo])
            if again is None:
                return None
            for n, reply in zip(redo, again, strict=True):
                replies[n] = reply
        return replies

    async def _run_pipelined(
        self, cluster: RedisCluster, node: ClusterNode,
        work: list[tuple[list[str], list[Arg], list[tuple[int, int]]]],
    ) -> list[Any] | None:
        for attempt in (1, 2):
            pipe = cluster.pipeline(transaction=False)
            for ks, args, _ in work:
                pipe.execute_command("EVALSHA", ROUTED.sha, len(ks), *ks, *args)
            if self._tail is not None:
                pipe.execute_command(*self._tail, target_nodes=node)
            try:
                replies = list(await pipe.execute())
            except NoScriptError:
                # A replica promoted after a failover has no scripts cached.
                if attempt == 2:
                    raise
                await cluster.script_load(ROUTED.source)
                continue
            if self._tail is not None:
                if not _acknowledged(replies[-1]):
                    return None
                replies = replies[:-1]
            return replies
        return None

    @classmethod
    async def _execute_lean(
        cls, link: Link, commands: list[tuple[Arg, ...]], load: bool
    ) -> list[list[int]]:
        # The script's text goes in the same write as the batch: reloading costs no
        # round trip of its own.
        replies = await link.call_many([SCRIPT.load_command(), *commands] if load else commands)
        cls._check(replies)
        return replies[1:] if load else replies


def _acknowledged(reply: object) -> bool:
    """Whether a WAIT (replicas that have the writes) or WAITAOF ([local, replicas]
    fsynced) reply says the batch is durable."""
    if isinstance(reply, list):
        return bool(reply) and int(reply[0]) >= 1
    return isinstance(reply, int) and reply >= 1


async def dead_letter(redis: Redis, body: bytes, *, received_ms: int, reason: str) -> None:
    """Keep a signed but undecodable body (capped, approximately) for an operator to inspect,
    with the accounts it names and their tenant (:mod:`mtdesk.gateway.dead_letters`).

    Raises :class:`StoreUnavailable` when Redis cannot take it (the route answers 503).
    """
    try:
        accounts, tenant = await owner_fields(redis, body)
        await redis.xadd(
            keys.DEAD_LETTERS,
            {"b": body, "r": str(received_ms), "why": reason[:200], "a": accounts, "t": tenant},
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
    except (RedisError, *UNAVAILABLE) as exc:
        raise StoreUnavailable(f"dead letter failed: {type(exc).__name__}") from exc
