"""A lean Redis connection for the ingest hot path: RESP over one asyncio socket.

Why not the redis-py client here: one ``execute_command`` costs ~54 µs of CPU on this
project's machines (pool checkout, retry wrapper, argument encoding), a raw socket with
hiredis's parser ~14 µs, and the gateway's ack budget is ~1 ms plus one round trip.
Only the batcher uses it, one call in flight at a time, so there is no pool. The batcher
sends with :meth:`RespLink.send_now` (a plain call, no coroutine) when connected.

Callers may rely on: :meth:`RespLink.call` sends all commands in one write and returns
one reply per command (an error reply is returned as a :class:`hiredis.ReplyError`
value, not raised); an unreachable or broken connection raises ``ConnectionError``
and the next call reconnects. Plain TCP and unix sockets only (``rediss://`` goes
through redis-py, see :func:`link_for`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis

from mtdesk.core.redis import Redis
from mtdesk.core.resp import Arg, RespTarget, check_setup, pack


class _Expired(Exception):
    """Redis did not answer a round trip in time."""


def _expire(waiter: asyncio.Future[list[Any]]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.reader = hiredis.Reader()
        self.replies: list[Any] = []
        self.expected = 0
        self.waiter: asyncio.Future[list[Any]] | None = None
        self.closed = False
        self.loop = asyncio.get_running_loop()  # protocols are made inside the loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            self.replies.append(reply)
        if self.waiter is not None and len(self.replies) >= self.expected and not self.waiter.done():
            replies, self.replies = self.replies, []
            self.waiter.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("Redis closed the connection"))


class RespLink:
    """One connection to Redis, (re)connected on demand."""

    def __init__(self, target: RespTarget) -> None:
        self._target = target
        self._timeout = target.timeout_s
        self._proto: _Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def _connect(self) -> _Protocol:
        proto = await self._target.open(_Protocol)
        self._proto = proto
        setup = self._target.setup_commands()
        if setup:
            try:
                check_setup(await self._roundtrip(proto, setup))
            except ConnectionError:
                self.close()
                raise
        return proto

    async def _roundtrip(self, proto: _Protocol, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        waiter = self._write(proto, commands)
        try:
            await waiter
        except (_Expired, ConnectionError):
            pass  # settle() says it
        except asyncio.CancelledError:
            # Its reply may still come and must not be read as the next call's.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.close()
            raise
        return self.settle(waiter)

    def _write(self, proto: _Protocol, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        loop = proto.loop
        waiter = proto.waiter = loop.create_future()
        proto.expected = len(commands)
        proto.transport.write(b"".join([pack(c) for c in commands]))
        # A plain timer rather than asyncio.wait_for: that wraps the waiter in another
        # future and costs an extra loop iteration on every round trip (the hot path).
        self._timer = loop.call_later(self._timeout, _expire, waiter)
        return waiter

    def send_now(self, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]] | None:
        """Write ``commands`` now when connected and idle and return the future of their
        replies (pass it to :meth:`settle` once done); None otherwise (use :meth:`call`).
        For callers driven by callbacks: no task, no coroutine."""
        proto = self._proto
        if proto is None or proto.closed or proto.waiter is not None:
            return None
        return self._write(proto, commands)

    def settle(self, waiter: asyncio.Future[list[Any]]) -> list[Any]:
        """The replies of a round trip whose future is done; raises ConnectionError (and
        closes the connection: a late reply would be read as the next call's)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        proto = self._proto
        if proto is not None and proto.waiter is waiter:
            proto.waiter = None
        try:
            return waiter.result()
        except _Expired as exc:
            self.close()
            raise ConnectionError("Redis did not answer in time") from exc
        except ConnectionError:
            self.close()
            raise

    async def call(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send ``commands`` in one write; one reply each. Raises ConnectionError."""
        proto = self._proto
        fresh = proto is None or proto.closed
        if fresh:
            proto = await self._connect()
        assert proto is not None
        try:
            return await self._roundtrip(proto, commands)
        except ConnectionError:
            if fresh:
                raise
        # A connection that had been idle may have been closed under us: one retry on a new
        # one. Safe for the ingest script: a re-run finds its own markers (duplicates).
        return await self._roundtrip(await self._connect(), commands)

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


def link_for(redis: Redis) -> RespLink | None:
    """A lean link to the same server and database as ``redis``, or None when that
    client needs what this link does not do (TLS): the caller then uses ``redis``."""
    target = RespTarget.of(redis)
    return RespLink(target) if target is not None else None
