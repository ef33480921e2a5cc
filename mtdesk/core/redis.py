"""The Redis client: one per process, made by the composition root and passed in."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    CrossSlotTransactionError,
    ExecAbortError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

Redis = aioredis.Redis
_T = TypeVar("_T")

# What "Redis is unreachable" looks like from redis-py; callers map it to StoreUnavailable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


CONNECT_TIMEOUT_S = 10.0
"""How long opening one connection may take (see :func:`connect`)."""


def connect(
    url: str,
    *,
    max_connections: int = 4096,
    client_class: type[Redis] = Redis,
    protocol: int | None = None,
) -> Redis:
    """A client for ``url`` (bytes in, bytes out; hiredis parses when installed).

    Connections open on demand, one per command in flight, up to ``max_connections``;
    past that a command FAILS at once (redis' ConnectionError), so the cap must stay
    above what the process can have in flight. A shard can: up to 2,048 events in flight,
    each conversation with a command pending while its loop lags under load. At 64,
    ``mtdesk bench e2e`` at 300 msgs/s dropped events ("Too many connections"); at 512 it
    still did at 450 msgs/s on a loaded machine. A blocking pool was tried and is worse:
    its lock convoy costs ~5% of a shard's CPU and, under overload, starves waiters past
    any timeout. Idle processes hold few connections; Redis accepts 10,000 by default.

    ``client_class``/``protocol``: a subclass such as the shards' pipelined client, and
    the RESP version its connections speak (None: redis-py's default)."""
    extra: dict[str, Any] = {} if protocol is None else {"protocol": protocol}
    return client_class.from_url(
        url,
        max_connections=max_connections,
        # Measured on this process' event loop, not on the wire: a burst of hundreds of
        # new connections on a loaded host (load 10+) takes several seconds of loop time
        # to open while Redis itself is fine; at 2 s such bursts failed. An unreachable
        # Redis still fails at once (refused), so a long budget costs only a dead host.
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=5.0,
        health_check_interval=30,
        decode_responses=False,
        **extra,
    )


class _Transaction(ClusterPipeline):
    """What ``pipeline(transaction=True)`` gives on a cluster.

    Without ``watch()``: the commands run as one MULTI/EXEC when their keys share a slot
    (every tenant-scoped transaction: the key layout puts them in the tenant's slot), and
    otherwise (a transaction mixing a global index with a tenant's keys: docs/redis.md)
    in the order queued, one slot's run of commands after another (``_in_order``). With
    ``watch()``: everything goes on one connection to the
    master of the watched keys' slot (a plain client's pipeline: WATCH, immediate reads,
    MULTI, EXEC, ``WatchError`` as on one Redis). A watched transaction that writes
    outside that slot is refused by Redis as a whole (CROSSSLOT, nothing run) and then
    runs in order without its optimistic check (a caller needing one across slots claims
    first with a script of its own: ``Channels.connect``)."""

    def __init__(self, client: ClusterClient) -> None:
        super().__init__(client, transaction=False)
        self._owner = client
        self._queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._pinned: Any = None  # the watched slot's master's pipeline, while watching
        self._multi = False

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._pinned is not None:
            if self._multi:
                self._queued.append((args, kwargs))
            return self._pinned.execute_command(*args, **kwargs)
        self._queued.append((args, kwargs))
        return self

    def _split_command_across_slots(self, command: str, *keys: Any) -> Any:
        # DEL / EXISTS / TOUCH / UNLINK: one command on the watched slot's connection
        # (redis-py's cluster pipeline splits them by slot and returns itself).
        if self._pinned is not None:
            return self.execute_command(command, *keys)
        return super()._split_command_across_slots(command, *keys)

    async def watch(self, *names: Any) -> None:  # type: ignore[override]
        if self._pinned is None:
            node = self.cluster_client.get_node_from_key(names[0])
            if node is None:
                raise RedisClusterException("no master serves the watched key's slot")
            self._pinned = self._owner.node_client(node).pipeline(transaction=True)
        self._multi = False
        self._queued = []
        await self._pinned.watch(*names)

    async def unwatch(self) -> None:  # type: ignore[override]
        if self._pinned is not None:
            await self._pinned.unwatch()

    def multi(self) -> None:
        self._multi = True
        if self._pinned is not None:
            self._pinned.multi()

    async def reset(self) -> None:  # type: ignore[override]
        self._queued = []
        self._multi = False
        if self._pinned is not None:
            await self._pinned.reset()

    def __len__(self) -> int:
        return len(self._queued)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        queued, self._queued = self._queued, []
        self._multi = False
        if self._pinned is not None:
            try:
                return list(await self._pinned.execute(raise_on_error=raise_on_error))
            except (AskError, ClusterCrossSlotError, ExecAbortError):
                pass  # a write outside the watched slot (MOVED, CROSSSLOT): nothing ran
        if not queued:
            return []
        if self._pinned is None:
            atomic = ClusterPipeline(self.cluster_client, transaction=True)  # type: ignore[abstract]
            for args, kwargs in queued:
                atomic.execute_command(*args, **kwargs)
            try:
                return list(await atomic.execute(raise_on_error=raise_on_error))
            except CrossSlotTransactionError:
                pass  # raised before anything was sent
        return await self._in_order(queued, raise_on_error)

    def _slot_of(self, args: tuple[Any, ...]) -> int | None:
        # Every command queued here names its key first (DEL/UNLINK of many keys were
        # split by slot before they were queued).
        return self.cluster_client.keyslot(args[1]) if len(args) > 1 else None

    async def _in_order(self, queued: list[tuple[tuple[Any, ...], dict[str, Any]]],
                        raise_on_error: bool) -> list[Any]:
        """Commands of several slots, in the order they were queued: each run of
        consecutive commands of one slot as one MULTI/EXEC, the next run only after it.
        A crash in between leaves a prefix done, never a later write without an earlier
        one: the callers queue what finds a thing (an index, a list one can revoke from)
        before what grants it, and remove a grant before its index entry
        (docs/redis.md)."""
        out: list[Any] = []
        for slot, run in itertools.groupby(queued, key=lambda command: self._slot_of(command[0])):
            step = ClusterPipeline(self.cluster_client,  # type: ignore[abstract]
                                   transaction=slot is not None)
            for args, kwargs in run:
                step.execute_command(*args, **kwargs)
            out.extend(await step.execute(raise_on_error=raise_on_error))
        return out


class ClusterClient(RedisCluster):
    """redis-py's cluster client with this product's transactions (:class:`_Transaction`)
    and a plain client per master for watched ones."""

    _node_clients: dict[str, Redis]

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if transaction:
            return _Transaction(self)  # type: ignore[abstract]
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)

    def node_client(self, node: ClusterNode) -> Redis:
        """A plain client of one master (for a watched transaction), made once per node."""
        clients = self.__dict__.setdefault("_node_clients", {})
        client = clients.get(node.name)
        if client is None:
            kwargs = {k: v for k, v in node.connection_kwargs.items()
                      if k not in ("host", "port", "event_dispatcher")}
            pool = aioredis.ConnectionPool(connection_class=node.connection_class,
                                           host=node.host, port=node.port, **kwargs)
            client = clients[node.name] = Redis(connection_pool=pool)
        return client

    async def aclose(self) -> None:
        for client in self.__dict__.pop("_node_clients", {}).values():
            await client.aclose()
        await super().aclose()


def connect_cluster(url: str, *, max_connections: int = 4096,
                    client_class: type[RedisCluster] | None = None,
                    protocol: int | None = None) -> Redis:
    """A client for the Redis Cluster that ``url``'s node belongs to (the other nodes and
    the slot map are discovered from it). redis-py's cluster client follows ``MOVED`` and
    ``ASK``, reloads the slot map after a failover and splits multi-key commands
    (``DEL``, ``UNLINK``, ``EXISTS``) by slot. It is typed as :data:`Redis`: the commands
    the product uses exist on both, with the same replies; what differs (SCAN, WAIT,
    multi-key reads) goes through the functions below. ``max_connections`` is per node;
    ``client_class``/``protocol`` as for :func:`connect` (a subclass of this module's
    cluster client, such as the shards' pipelined one)."""
    extra: dict[str, Any] = {} if protocol is None else {"protocol": protocol}
    client = (client_class or ClusterClient).from_url(
        url,
        max_connections=max_connections,
        **extra,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=5.0,
        decode_responses=False,
        require_full_coverage=True,
    )
    return cast(Redis, client)


def connect_to(url: str, *, cluster: bool, max_connections: int = 4096) -> Redis:
    """:func:`connect_cluster` when ``cluster`` (``MTDESK_REDIS_CLUSTER``), else
    :func:`connect`."""
    if cluster:
        return connect_cluster(url, max_connections=max_connections)
    return connect(url, max_connections=max_connections)


def by_master(
    cluster: RedisCluster, keyed: Iterable[tuple[KeyT, _T]]
) -> list[tuple[ClusterNode, list[_T]]]:
    """``keyed`` (key, item) grouped by the master the client's slot map names for each
    key, in the order first seen: one pipeline per master, sent to it by name (a stale
    map gets MOVED, and redis-py sends the command again by its key). Raises
    SlotNotCoveredError when the map does not cover a key's slot (not loaded yet)."""
    groups: dict[str, tuple[ClusterNode, list[_T]]] = {}
    for key, item in keyed:
        node = cluster.get_node_from_key(key)  # type: ignore[arg-type]
        if node is None:  # only asked of a replica; a master is always named
            raise SlotNotCoveredError(f"no master for {key!r}")
        groups.setdefault(node.name, (node, []))[1].append(item)
    return list(groups.values())


def is_cluster(redis: object) -> bool:
    """Whether ``redis`` is a Redis Cluster client."""
    return isinstance(redis, RedisCluster)


def primaries(redis: Redis) -> list[Redis | ClusterNode]:
    """What to send a per-server command to (``CONFIG GET``, ``INFO``, a SCAN): every
    master of a cluster, or the one server."""
    if isinstance(redis, RedisCluster):
        return list(redis.get_primaries())
    return [redis]


async def on_server(redis: Redis, target: Redis | ClusterNode, *args: Any) -> Any:
    """Run one command on one server of :func:`primaries`."""
    if isinstance(target, ClusterNode):
        return await cast(RedisCluster, redis).execute_command(*args, target_nodes=target)
    return await target.execute_command(*args)


async def scan_pages(
    redis: Redis, *, match: str, count: int = 500, type_: str | None = None
) -> AsyncIterator[list[bytes]]:
    """The key names matching ``match``, a SCAN page at a time, on every master of a
    cluster (a key lives on one of them) or the one server. Names may repeat across
    pages (SCAN's guarantee: every key present throughout is seen at least once)."""
    extra: tuple[str, ...] = () if type_ is None else ("TYPE", type_)
    for target in primaries(redis):
        cursor = b"0"
        while True:
            reply = await on_server(
                redis, target, "SCAN", cursor, "MATCH", match, "COUNT", count, *extra)
            cursor, names = reply[0], reply[1]
            if isinstance(cursor, dict):  # a cluster client's shape: {node: cursor}
                cursor = next(iter(cursor.values()))
                names = names if not isinstance(names, dict) else next(iter(names.values()))
            if names:
                yield as_bytes_list(names)
            if int(cursor) == 0:
                break


async def read_many(redis: Redis, names: Sequence[str | bytes]) -> list[bytes | None]:
    """GET of each of ``names`` (nil where missing), in order: one MGET on a server, one
    per slot on a cluster (a multi-key command's keys must share a slot)."""
    if not names:
        return []
    if isinstance(redis, RedisCluster):
        return as_opt_bytes_list(await redis.mget_nonatomic(list(names)))
    return as_opt_bytes_list(await redis.mget(list(names)))


# --- reply types --------------------------------------------------------------------------
# redis-py annotates replies for both of its modes at once (``bytes | str``, and streams as
# ``… | None``). Our client is always bytes-mode (``decode_responses=False`` above), so a
# reply is bytes; these tell the type checker so. They are casts: no runtime work, no check,
# the value is returned as is.
HashFields = dict[FieldT, EncodableT]
"""A mapping built up for HSET (redis-py wants exactly this key type: Mapping keys are
invariant, so a ``dict[str, …]`` is refused)."""

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
"""XRANGE / XREVRANGE / XCLAIM entries: (entry id, fields)."""


def as_bytes(reply: bytes | str) -> bytes:
    """A bytes-mode reply (a key, a field value, a member) as ``bytes``."""
    return cast(bytes, reply)


def as_opt_bytes(reply: bytes | str | None) -> bytes | None:
    """A bytes-mode reply that may be nil (GET, HGET, LINDEX …)."""
    return cast("bytes | None", reply)


def as_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[bytes, bytes]:
    """An HGETALL reply as ``dict[bytes, bytes]``."""
    return cast("dict[bytes, bytes]", reply)


def as_entries(reply: object) -> StreamEntries:
    """An XRANGE / XREVRANGE reply as a list of (entry id, fields)."""
    return cast(StreamEntries, reply)


def as_scored(reply: object) -> list[tuple[bytes, float]]:
    """A ZRANGE … WITHSCORES reply, or the pairs of a ZSCAN page, as (member, score)."""
    return cast("list[tuple[bytes, float]]", reply)


def as_bytes_list(reply: Sequence[object]) -> list[bytes]:
    """A list of bytes-mode replies: a SCAN / SSCAN page's names, LRANGE, ZRANGE (without
    scores), HKEYS …"""
    return cast("list[bytes]", reply)


def as_bytes_set(reply: set[bytes | str]) -> set[bytes]:
    """An SMEMBERS reply."""
    return cast("set[bytes]", reply)


def as_opt_bytes_list(reply: list[bytes | str | None]) -> list[bytes | None]:
    """An HMGET / MGET reply (nil where a field or key is missing)."""
    return cast("list[bytes | None]", reply)


StreamOffsets = dict[KeyT, StreamIdT]
"""XREADGROUP's ``streams`` argument: stream → id to read after (``">"`` for new)."""

PendingEntries = list[tuple[bytes, dict[bytes, bytes] | None]]
"""Entries read by a consumer group (XREADGROUP, XAUTOCLAIM): fields are None for an
entry that was deleted after it was delivered."""

StreamReads = list[tuple[bytes, PendingEntries]]
"""An XREADGROUP reply: (stream name, entries) per stream (redis-py gives 2-item lists)."""


def as_stream_reads(reply: object) -> StreamReads:
    """An XREADGROUP reply (empty when it timed out)."""
    return cast(StreamReads, reply)


def as_autoclaim(reply: object) -> tuple[bytes, PendingEntries, *tuple[list[bytes], ...]]:
    """An XAUTOCLAIM reply: next start id, the claimed entries, and (Redis 7+) the ids of
    deleted entries."""
    return cast("tuple[bytes, PendingEntries, *tuple[list[bytes], ...]]", reply)
