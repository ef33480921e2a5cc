"""A minimal keep-alive HTTP/1.1 client for the load generators: one request in flight per
connection, the status code back. aiohttp's client costs more CPU per request than the
servers being measured; this costs almost none, so the generator is not the bottleneck."""

from __future__ import annotations

import asyncio
from typing import Any


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buf[:end]).lower()
        i = head.find(b"content-length:")
        length = 0
        if i >= 0:
            j = head.find(b"\r\n", i)
            length = int(head[i + 15: j if j > 0 else None])
        if len(self._buf) < end + 4 + length:
            return
        status = int(self._buf[9:12])
        del self._buf[: end + 4 + length]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("closed"))

    async def request(self, raw: bytes) -> int:
        """Write one raw request; the response's status code. ConnectionError when the
        connection is (or gets) closed: the server went away."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(raw)
        except RuntimeError as exc:  # uvloop: the handle closed under us
            raise ConnectionError("closed") from exc
        return await self._waiter
