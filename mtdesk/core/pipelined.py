"""A Redis client that pipelines by itself: for the conversation shards' hot path.

:class:`PipelinedRedis` is a ``redis.asyncio.Redis`` (same methods, same replies, same
exceptions), except that a command goes out on ONE shared connection instead of a
connection of the pool: every command issued during one turn of the event loop, by any
conversation, is written with one ``write`` and its reply matched in order. A shard
has hundreds of conversations each awaiting a command now and then; through the pool
each costs a connection checkout, a write and a read of its own (~0.1 ms of CPU per
command in redis-py, ~25 % of a shard), here they share them.

What still goes through the pool (redis-py's own path, its retries included):
commands that block (``XREADGROUP … BLOCK``, ``BLPOP``, ``WAIT``…) or change the
connection's state (``MULTI``, ``WATCH``, ``SELECT``, ``CLIENT``…), pipelines,
transactions and pub/sub. A command whose shared connection breaks is re-run through
the pool, as redis-py would retry it on a new connection.

The shared connection speaks RESP2 (as :func:`mtdesk.core.redis.connect` asks of the pool),
so redis-py's reply callbacks see the same shapes either way. Plain TCP and unix
sockets; a TLS client (``rediss://``) stays on the pool.

On a Redis Cluster, :class:`PipelinedCluster` does the same with one shared connection
per master: a command whose key (the first one; a script's first key) the slot map
places on a master goes on that master's connection; everything else, and a command
the master answers with a redirection (``MOVED``, ``ASK``: it did not run) or whose
connection breaks, goes redis-py's cluster way, which follows the redirection, reloads
the slot map and retries. :meth:`PipelinedCluster.call_on` sends a batch of commands to
one master the same way (the shards' reads of their partitions on it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import SlotNotCoveredError

from mtdesk.core.redis import ClusterClient, connect, connect_cluster, is_cluster
from mtdesk.core.resp import Link, RespTarget

# Commands that must not sit on the shared connection: they block it, or change the
# state of the connection they run on.
_POOL_ONLY = frozenset({
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    "WAIT", "WAITAOF", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT", "AUTH",
    "HELLO", "CLIENT", "RESET", "QUIT", "MONITOR", "SUBSCRIBE", "PSUBSCRIBE",
    "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "SYNC", "PSYNC",
})
_MAYBE_BLOCKING = frozenset({"XREAD", "XREADGROUP"})  # only with BLOCK

# Options redis-py's command methods pass to ``execute_command`` for its reply handling
# (the names are its keyword arguments, not imports of its private modules): the value
# an error reply stands for, "never decode this reply", and the keys a cluster routes by.
_EMPTY_RESPONSE = "EMPTY_RESPONSE"
_NOT_FOR_CALLBACKS = ("NEVER_DECODE", "keys")

# Error replies as redis-py raises them: its public exception classes by the reply's
# first word, given the rest of the message; an unknown word, the whole message as a
# ResponseError. The cluster's redirections are here for the links a cluster will need.
_ERRORS: dict[str, type[Exception]] = {
    "ERR": rx.ResponseError,
    "NOSCRIPT": rx.NoScriptError,
    "EXECABORT": rx.ExecAbortError,
    "READONLY": rx.ReadOnlyError,
    "NOPERM": rx.NoPermissionError,
    "OOM": rx.OutOfMemoryError,
    "LOADING": rx.BusyLoadingError,
    "WRONGPASS": rx.AuthenticationError,
    "NOAUTH": rx.AuthenticationError,
    "ASK": rx.AskError,
    "MOVED": rx.MovedError,
    "TRYAGAIN": rx.TryAgainError,
    "CLUSTERDOWN": rx.ClusterDownError,
    "CROSSSLOT": rx.ClusterCrossSlotError,
    "MASTERDOWN": rx.MasterDownError,
}
_ERR_MESSAGES: dict[str, type[Exception]] = {  # "ERR <message>" that redis-py raises apart
    "max number of clients reached": rx.ConnectionError,
    "invalid password": rx.AuthenticationError,
}


class PipelinedRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose plain commands share one auto-pipelined connection."""

    _link: Link | None = None
    _link_checked = False

    @property
    def link(self) -> Link | None:
        """The shared connection (made on first use), or None when this client's
        connections are of a kind a link does not speak: everything is on the pool then."""
        if not self._link_checked:
            target = RespTarget.of(self)
            self._link = Link(target) if target is not None else None
            self._link_checked = True
        return self._link

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        upper = _upper(args[0])
        if upper in _POOL_ONLY or (upper in _MAYBE_BLOCKING and _has_block(args)):
            return await super().execute_command(*args, **options)
        link = self._link if self._link_checked else self.link
        if link is None:
            return await super().execute_command(*args, **options)
        wire = args if " " not in upper else (*upper.split(" "), *args[1:])
        try:
            reply = await link.call(wire)
        except ConnectionError:
            # The shared connection broke: this command goes the pool's way, with its
            # retries (the next plain command reconnects the shared one).
            return await super().execute_command(*args, **options)
        if isinstance(reply, hiredis.ReplyError):
            if _EMPTY_RESPONSE in options:
                return options[_EMPTY_RESPONSE]
            raise error_of(str(reply))
        options.pop(_EMPTY_RESPONSE, None)
        for option in _NOT_FOR_CALLBACKS:
            options.pop(option, None)
        callback = self.response_callbacks.get(upper)
        if callback is None:
            return reply
        result = callback(reply, **options)
        if asyncio.iscoroutine(result):
            return await result
        return result

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None  # what still comes (a late task) goes the pool's way
        self._link_checked = True
        await super().aclose(close_connection_pool)


def error_of(message: str) -> Exception:
    """The exception redis-py raises for the error reply ``message``."""
    code, _, rest = message.partition(" ")
    error = _ERRORS.get(code)
    if error is None:
        return rx.ResponseError(message)
    if code == "ERR":
        error = _ERR_MESSAGES.get(rest, rx.ResponseError)
    return error(rest)


def _upper(name: str | bytes) -> str:
    """A command's name as the reply callbacks and the tables here spell it."""
    return name.upper() if isinstance(name, str) else name.decode().upper()


def _has_block(args: tuple[Any, ...]) -> bool:
    for a in args[1:]:
        if (isinstance(a, str) and a.upper() == "BLOCK") or (isinstance(a, bytes) and a.upper() == b"BLOCK"):
            return True
    return False


# Commands whose one key is their first argument (the shards' and the stores' plain
# commands): on a cluster they go on the key's master's shared connection. Those that
# may name several keys (EXISTS, DEL, UNLINK) only with one.
_FIRST_KEY = frozenset({
    "GET", "SET", "SETEX", "SETNX", "GETDEL", "GETEX", "INCR", "INCRBY", "DECR", "DECRBY",
    "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "TTL", "PTTL", "PERSIST", "TYPE",
    "HGET", "HSET", "HMGET", "HMSET", "HGETALL", "HDEL", "HINCRBY", "HEXISTS", "HLEN",
    "HSETNX", "HKEYS", "HVALS", "SISMEMBER", "SMISMEMBER", "SADD", "SREM", "SMEMBERS",
    "SCARD", "ZADD", "ZREM", "ZSCORE", "ZCARD", "ZINCRBY", "ZRANGE", "ZREVRANGE",
    "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "XADD", "XACK", "XDEL", "XLEN", "XRANGE",
    "XREVRANGE", "XPENDING", "XCLAIM", "XAUTOCLAIM", "PFADD", "PFCOUNT", "LPUSH", "RPUSH",
    "LRANGE", "LLEN", "LTRIM", "STRLEN", "APPEND", "GETRANGE",
})
_ONE_KEY = frozenset({"EXISTS", "DEL", "UNLINK"})
_SCRIPTS = frozenset({"EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO"})
# A master's answer that means the command did not run there: redis-py's way runs it.
_NOT_RUN = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN")


def _routing_key(upper: str, args: tuple[Any, ...]) -> Any:
    """The key a cluster routes the command by, or None (redis-py's way)."""
    if upper in _FIRST_KEY or (upper in _ONE_KEY and len(args) == 2):
        return args[1] if len(args) > 1 else None
    if upper in _SCRIPTS and len(args) > 3:
        try:
            return args[3] if int(args[2]) > 0 else None
        except (TypeError, ValueError):
            return None
    return None


class ClusterLinks:
    """One lean link per master (made on first use, plain TCP only: None for a node of
    another kind, such as TLS), for a hot path that sends its own batches to a master
    it picked from the slot map."""

    def __init__(self) -> None:
        self._links: dict[str, Link | None] = {}
        self._closed = False

    def to(self, node: ClusterNode) -> Link | None:
        links = self._links
        if node.name in links:
            return links[node.name]
        link = None
        if node.connection_class.__name__ == "Connection" and not self._closed:
            kw = node.connection_kwargs
            link = Link(RespTarget(
                host=str(node.host), port=int(node.port),
                username=kw.get("username"), password=kw.get("password"),
                connect_timeout_s=float(kw.get("socket_connect_timeout") or 10.0),
                timeout_s=float(kw.get("socket_timeout") or 5.0)))
        links[node.name] = link
        return link

    @property
    def made(self) -> dict[str, Link]:
        """The links made so far, by node name."""
        return {name: link for name, link in self._links.items() if link is not None}

    def close(self) -> None:
        self._closed = True
        for link in self._links.values():
            if link is not None:
                link.close()
        self._links.clear()


class PipelinedCluster(ClusterClient):
    """The cluster client whose plain keyed commands share one auto-pipelined connection
    per master (see the module's docstring). Speaks RESP2 (:func:`connect_shared` asks
    for it), so redis-py's reply callbacks see the shapes the link reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.links = ClusterLinks()  # this client's shared connections, one per master

    def _master_of(self, key: Any) -> ClusterNode | None:
        try:
            return self.get_node_from_key(key)
        except (SlotNotCoveredError, KeyError, IndexError):  # no slot map yet
            return None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        upper = _upper(args[0])
        key = None if "target_nodes" in kwargs else _routing_key(upper, args)
        node = self._master_of(key) if key is not None else None
        link = self.links.to(node) if node is not None else None
        if link is None:
            return await super().execute_command(*args, **kwargs)
        try:
            reply = await link.call(args)
        except ConnectionError:  # the master's connection broke: redis-py's retries
            return await super().execute_command(*args, **kwargs)
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith(_NOT_RUN):
                return await super().execute_command(*args, **kwargs)
            if _EMPTY_RESPONSE in kwargs:
                return kwargs[_EMPTY_RESPONSE]
            raise error_of(message)
        return self._parsed(upper, reply, kwargs)

    def _parsed(self, upper: str, reply: Any, options: dict[str, Any]) -> Any:
        options.pop(_EMPTY_RESPONSE, None)
        for option in _NOT_FOR_CALLBACKS:
            options.pop(option, None)
        callback = self.response_callbacks.get(upper)
        return reply if callback is None else callback(reply, **options)

    async def call_on(self, node: ClusterNode,
                      commands: list[tuple[Any, ...]]) -> list[Any] | None:
        """``commands`` sent to ``node`` on its shared connection in one write: each
        one's parsed reply, or the exception its error reply stands for. What the master
        did not run there (a redirection: a stale slot map) is run redis-py's way, which
        follows it. None when there is no shared connection to it (use a pipeline);
        ConnectionError when it broke meanwhile (what ran is not known)."""
        link = self.links.to(node)
        if link is None:
            return None
        replies = await link.call_many(commands)
        out: list[Any] = []
        for command, reply in zip(commands, replies, strict=True):
            if not isinstance(reply, hiredis.ReplyError):
                out.append(self._parsed(_upper(command[0]), reply, {}))
            elif str(reply).startswith(_NOT_RUN):
                try:
                    out.append(await super().execute_command(*command))
                except Exception as exc:  # noqa: BLE001 - the caller's to judge, as an error reply
                    out.append(exc)
            else:
                out.append(error_of(str(reply)))
        return out

    async def aclose(self) -> None:
        self.links.close()
        await super().aclose()


def link_for(redis: aioredis.Redis) -> Link | None:
    """The lean link to ``redis``'s server and database: the client's own shared one for
    a :class:`PipelinedRedis` (one connection for the process), a new one otherwise;
    None when the client's connections are of a kind a link does not speak (TLS, a
    cluster's slot routing): use ``redis`` then."""
    if isinstance(redis, PipelinedRedis):
        return redis.link
    if is_cluster(redis):
        return None
    target = RespTarget.of(redis)
    return Link(target) if target is not None else None


def connect_pipelined(url: str, *, max_connections: int = 4096) -> PipelinedRedis:
    """Like :func:`mtdesk.core.redis.connect`, plain commands on one shared pipelined
    connection (the pool, RESP2 like it, for the rest)."""
    client = connect(url, max_connections=max_connections, client_class=PipelinedRedis, protocol=2)
    assert isinstance(client, PipelinedRedis)
    return client


def connect_shared(url: str, *, cluster: bool, max_connections: int = 4096) -> aioredis.Redis:
    """The client of a process whose many tasks issue small commands (the shards):
    :func:`connect_pipelined`, or with ``cluster`` a :class:`PipelinedCluster` (each
    command to its slot's master, on one shared connection per master; redirections and
    failovers followed by redis-py's cluster client)."""
    if cluster:
        return connect_cluster(url, max_connections=max_connections,
                               client_class=PipelinedCluster, protocol=2)
    return connect_pipelined(url, max_connections=max_connections)
