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
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rx

from mtdesk.core.redis import connect
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
        name = args[0]
        upper = name.upper() if isinstance(name, str) else name.decode().upper()
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


def _has_block(args: tuple[Any, ...]) -> bool:
    for a in args[1:]:
        if (isinstance(a, str) and a.upper() == "BLOCK") or (isinstance(a, bytes) and a.upper() == b"BLOCK"):
            return True
    return False


def link_for(redis: aioredis.Redis) -> Link | None:
    """The lean link to ``redis``'s server and database: the client's own shared one for
    a :class:`PipelinedRedis` (one connection for the process), a new one otherwise;
    None when the client's connections are of a kind a link does not speak: use ``redis`` then."""
    if isinstance(redis, PipelinedRedis):
        return redis.link
    target = RespTarget.of(redis)
    return Link(target) if target is not None else None


def connect_pipelined(url: str, *, max_connections: int = 4096) -> PipelinedRedis:
    """Like :func:`mtdesk.core.redis.connect`, plain commands on one shared pipelined
    connection (the pool, RESP2 like it, for the rest)."""
    client = connect(url, max_connections=max_connections, client_class=PipelinedRedis, protocol=2)
    assert isinstance(client, PipelinedRedis)
    return client
