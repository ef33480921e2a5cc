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
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.client import EMPTY_RESPONSE, NEVER_DECODE

from mtdesk.core.redis import connect
from mtdesk.core.resp import RespTarget, check_setup, pack

# Commands that must not sit on the shared connection: they block it, or change the
# state of the connection they run on.
_POOL_ONLY = frozenset({
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    "WAIT", "WAITAOF", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT", "AUTH",
    "HELLO", "CLIENT", "RESET", "QUIT", "MONITOR", "SUBSCRIBE", "PSUBSCRIBE",
    "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "SYNC", "PSYNC",
})
_MAYBE_BLOCKING = frozenset({"XREAD", "XREADGROUP"})  # only with BLOCK

class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, replies handed to waiters in order."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        self.progress = 0  # replies received: the watchdog's sign of life
        # Kept: asyncio.get_running_loop() costs a getpid() system call per command.
        self.loop = asyncio.get_running_loop()  # protocols are made inside the loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        gets = self.reader.gets
        while True:
            reply = gets()
            if reply is False:
                break
            self.progress += 1
            if waiters:
                waiter = waiters.popleft()
                if not waiter.done():  # a cancelled caller: its reply is dropped, in order
                    waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.out.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("Redis closed the shared connection"))

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.closed:
            data = b"".join(self.out)
            self.out.clear()
            self.transport.write(data)


class SharedLink:
    """The one connection of a :class:`PipelinedRedis`, opened on first use and again
    after it breaks; a watchdog closes it when Redis stops answering (``timeout_s``)."""

    def __init__(self, target: RespTarget) -> None:
        self._target = target
        self._timeout = target.timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self.writes = 0  # for tests: how many writes carried the commands

    async def call(self, args: tuple[Any, ...]) -> Any:
        """Send one command (queued for this loop turn's write); its raw reply, an
        error reply as a ``hiredis.ReplyError`` value. Raises ConnectionError."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connection()
        loop = proto.loop
        waiter: asyncio.Future[Any] = loop.create_future()
        proto.waiters.append(waiter)
        proto.out.append(pack(args))
        if not proto.flush_scheduled:
            proto.flush_scheduled = True
            self.writes += 1
            loop.call_soon(proto.flush)
        return await waiter

    async def _connection(self) -> _Protocol:
        # Concurrent callers share one connection attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        target = self._target
        proto = await target.open(_Protocol)
        setup = target.setup_commands()
        if setup:
            waiters = [loop.create_future() for _ in setup]
            proto.waiters.extend(waiters)
            proto.transport.write(b"".join(pack(c) for c in setup))
            try:
                check_setup(await asyncio.wait_for(asyncio.gather(*waiters), target.connect_timeout_s))
            except (TimeoutError, ConnectionError) as exc:
                proto.transport.close()
                raise ConnectionError(f"Redis connection set-up failed: {exc}") from exc
        self._proto = proto
        loop.call_later(1.0, self._watch, proto, proto.progress, 0.0)
        return proto

    def _watch(self, proto: _Protocol, progress: int, stalled_s: float) -> None:
        if proto.closed:
            return
        if proto.waiters and proto.progress == progress:
            stalled_s += 1.0
            if stalled_s >= self._timeout:
                proto.transport.close()  # connection_lost fails every waiter
                return
        else:
            stalled_s = 0.0
        asyncio.get_running_loop().call_later(1.0, self._watch, proto, proto.progress, stalled_s)

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class PipelinedRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose plain commands share one auto-pipelined connection."""

    _link: SharedLink | None = None
    _link_checked = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        upper = name.upper() if isinstance(name, str) else name.decode().upper()
        if upper in _POOL_ONLY or (upper in _MAYBE_BLOCKING and _has_block(args)):
            return await super().execute_command(*args, **options)
        link = self._link
        if link is None:
            if self._link_checked:
                return await super().execute_command(*args, **options)
            target = RespTarget.of(self)
            link = self._link = SharedLink(target) if target is not None else None
            self._link_checked = True
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
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise BaseParser.parse_error(str(reply))
        options.pop(EMPTY_RESPONSE, None)
        options.pop(NEVER_DECODE, None)
        options.pop("keys", None)
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
            self._link = None
        await super().aclose(close_connection_pool)


def _has_block(args: tuple[Any, ...]) -> bool:
    for a in args[1:]:
        if (isinstance(a, str) and a.upper() == "BLOCK") or (isinstance(a, bytes) and a.upper() == b"BLOCK"):
            return True
    return False


def connect_pipelined(url: str, *, max_connections: int = 4096) -> PipelinedRedis:
    """Like :func:`mtdesk.core.redis.connect`, plain commands on one shared pipelined
    connection (the pool, RESP2 like it, for the rest)."""
    client = connect(url, max_connections=max_connections, client_class=PipelinedRedis, protocol=2)
    assert isinstance(client, PipelinedRedis)
    return client
