"""The lean Redis link: RESP on one asyncio socket, shared by the hot paths.

Two hot paths talk RESP on their own socket rather than through redis-py's pool: the
gateway's ingest batcher (:mod:`mtdesk.gateway.ingest`: one batch of script calls per
round trip, written at once from a loop callback) and the shards' auto-pipelined client
(:mod:`mtdesk.core.pipelined`: every command of one loop turn in one write). Both use
:class:`Link`. Why not redis-py there: one ``execute_command`` costs ~54 µs of CPU on
this project's machines (pool checkout, retry wrapper, argument encoding), a command on
the link ~14 µs with hiredis's parser, and the gateway's ack budget is ~1 ms plus one
round trip.

What a caller may rely on:

- Replies are matched to callers in the order the commands were written (one FIFO):
  :meth:`Link.call` gives one command's reply, :meth:`Link.send` /
  :meth:`Link.call_many` one reply per command of a batch. An error reply is returned
  as a :class:`hiredis.ReplyError` value, never raised.
- A caller that stops waiting (cancelled) leaves its reply to be read and dropped in
  order: the others' replies never shift.
- A broken connection fails every command in flight with ``ConnectionError`` (it may or
  may not have run: callers retry only what is safe to repeat); the next command
  reconnects. When Redis answers nothing for ``timeout_s`` while commands wait, the link
  closes the connection (a watchdog, ticking each second: no timer per command).
- It connects to the server and database of a redis-py client, plain TCP or a unix
  socket, or TLS for a ``rediss://`` client (:meth:`RespTarget.of` takes its ssl context).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection

Arg = bytes | str | int | float

# hiredis packs in C (~2.5x faster than a Python loop on the ingest batches); its stub
# types the argument as a 1-tuple and the result not at all. It takes tuples only.
_pack_command = cast("Callable[[tuple[Any, ...]], bytes]", hiredis.pack_command)


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP (an array of bulk strings; str as UTF-8, numbers as decimal)."""
    return _pack_command(args if type(args) is tuple else tuple(args))


P = TypeVar("P", bound=asyncio.Protocol)


@dataclass(frozen=True)
class RespTarget:
    """Where a lean link connects, and how long it waits."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host:port
    db: int = 0
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 10.0
    timeout_s: float = 5.0
    tls: ssl.SSLContext | None = field(default=None, compare=False)  # rediss://

    def __repr__(self) -> str:  # never the password
        where = self.path or f"{self.host}:{self.port}"
        return f"RespTarget({'tls ' if self.tls else ''}{where}/{self.db})"

    @classmethod
    def of(cls, redis: aioredis.Redis) -> RespTarget | None:
        """The server and database of ``redis``'s pool (TLS included: the context its own
        connections would use), or None when its connections are of a kind a lean link
        does not speak."""
        pool = redis.connection_pool
        kw = pool.connection_kwargs
        cls_name = pool.connection_class.__name__
        if cls_name not in ("Connection", "UnixDomainSocketConnection", "SSLConnection"):
            return None
        tls: ssl.SSLContext | None = None
        if cls_name == "SSLConnection":
            # redis-py's own reading of the ssl_* settings: the same CA, client
            # certificate and checks as the pool's connections (no connection is opened).
            conn = cast(SSLConnection, pool.connection_class(**kw))
            tls = conn.ssl_context.get()
        return cls(
            host=str(kw.get("host", "127.0.0.1")),
            port=int(kw.get("port", 6379)),
            path=kw.get("path") if cls_name == "UnixDomainSocketConnection" else None,
            db=int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            connect_timeout_s=float(kw.get("socket_connect_timeout") or 10.0),
            timeout_s=float(kw.get("socket_timeout") or 5.0),
            tls=tls,
        )

    def setup_commands(self) -> list[tuple[Arg, ...]]:
        """AUTH and SELECT, as needed, to send first on a new connection."""
        setup: list[tuple[Arg, ...]] = []
        if self.password:
            setup.append(("AUTH", *([self.username] if self.username else []), self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        return setup

    async def open(self, factory: Callable[[], P]) -> P:
        """A connected protocol from ``factory``; ConnectionError when it cannot connect."""
        loop = asyncio.get_running_loop()
        try:
            if self.path:
                coro = loop.create_unix_connection(factory, self.path)
            else:
                coro = loop.create_connection(
                    factory, self.host, self.port, ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                )
            _t, proto = await asyncio.wait_for(coro, self.connect_timeout_s)
        except (TimeoutError, OSError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from exc
        return proto


def check_setup(replies: Sequence[Any]) -> None:
    """Raise ConnectionError when Redis refused a set-up command (wrong password, db)."""
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(f"Redis refused the connection set-up: {reply}")


_SINGLE = 0  # a waiter's reply count for one command: the reply itself, not a list


class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, replies handed to waiters in order.

    A waiter is (future, n): n == 0 takes the next reply as is, n > 0 the next n replies
    as a list."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.reader = hiredis.Reader()
        self.waiters: deque[tuple[asyncio.Future[Any], int]] = deque()
        self.gathered: list[Any] = []  # replies of the batch at the head, so far
        self.out: list[bytes] = []  # commands of this loop turn, written by flush()
        self.flush_scheduled = False
        self.closed = False
        self.progress = 0  # replies received: the watchdog's sign of life
        # Kept: asyncio.get_running_loop() costs a getpid() system call per command.
        self.loop = asyncio.get_running_loop()  # protocols are made inside the loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        gets = reader.gets
        waiters = self.waiters
        while True:
            try:
                reply = gets()
            except hiredis.ProtocolError:
                self.transport.close()  # unreadable: connection_lost fails the waiters
                return
            if reply is False:
                return
            self.progress += 1
            if not waiters:
                continue
            waiter, n = waiters[0]
            if n == _SINGLE:
                waiters.popleft()
                if not waiter.done():  # a cancelled caller: its reply is dropped, in order
                    waiter.set_result(reply)
                continue
            gathered = self.gathered
            gathered.append(reply)
            if len(gathered) == n:
                waiters.popleft()
                self.gathered = []
                if not waiter.done():
                    waiter.set_result(gathered)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.out.clear()
        self.gathered = []
        while self.waiters:
            waiter, _n = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("Redis closed the connection"))

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.closed:
            data = b"".join(self.out)
            self.out.clear()
            self.transport.write(data)


class Link:
    """One connection to Redis, opened on first use and again after it breaks."""

    def __init__(self, target: RespTarget) -> None:
        self._target = target
        self._timeout = target.timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self.writes = 0  # for tests and benchmarks: how many writes carried the commands

    def __repr__(self) -> str:
        return f"Link({self._target!r})"

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (:meth:`send` needs one)."""
        proto = self._proto
        return proto is not None and not proto.closed

    async def call(self, args: Sequence[Arg]) -> Any:
        """Send one command (queued for this loop turn's write, with every other command
        queued meanwhile); its raw reply. Raises ConnectionError."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connection()
            if proto.closed:  # lost while the caller resumed: nothing would answer it
                raise ConnectionError("Redis closed the connection")
        loop = proto.loop
        waiter: asyncio.Future[Any] = loop.create_future()
        proto.waiters.append((waiter, _SINGLE))
        proto.out.append(pack(args))
        if not proto.flush_scheduled:
            proto.flush_scheduled = True
            self.writes += 1
            loop.call_soon(proto.flush)
        return await waiter

    def send(self, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]] | None:
        """Write ``commands`` now, in one write, when connected, and return the future
        of their replies (one per command; ConnectionError when the connection breaks);
        None when not connected (then use :meth:`call_many`). A plain function, no
        coroutine: for callers driven by loop callbacks."""
        proto = self._proto
        if proto is None or proto.closed:
            return None
        return self._send(proto, commands)

    async def call_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send ``commands`` in one write, connecting first if needed; one reply each.
        Raises ConnectionError."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connection()
            if proto.closed:
                raise ConnectionError("Redis closed the connection")
        return await self._send(proto, commands)

    def _send(self, proto: _Protocol, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        waiter: asyncio.Future[list[Any]] = proto.loop.create_future()
        if not commands:
            waiter.set_result([])
            return waiter
        proto.waiters.append((waiter, len(commands)))
        data = b"".join([pack(c) for c in commands])
        if proto.out:  # commands queued earlier this turn go first: replies come in order
            proto.out.append(data)
            data = b"".join(proto.out)
            proto.out.clear()
        proto.transport.write(data)
        self.writes += 1
        return waiter

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
        target = self._target
        proto = await target.open(_Protocol)
        setup = target.setup_commands()
        if setup:
            try:
                replies = await asyncio.wait_for(self._send(proto, setup), target.connect_timeout_s)
                check_setup(replies)
            except (TimeoutError, ConnectionError) as exc:
                proto.transport.close()
                raise ConnectionError(f"Redis connection set-up failed: {exc}") from exc
        self._proto = proto
        proto.loop.call_later(1.0, self._watch, proto, proto.progress, 0.0)
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
        proto.loop.call_later(1.0, self._watch, proto, proto.progress, stalled_s)

    def close(self) -> None:
        """Close the connection (commands in flight fail with ConnectionError); the
        next command opens a new one."""
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
