"""A TCP link to the test Redis that a test can cut and restore: a real network failure
between one process's clients and Redis (the test's own client keeps talking to Redis
directly). While cut, every connection through the link is closed and new ones are
closed at once; restored, connections go through again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit


class RedisLink:
    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._db = parts.path.lstrip("/") or "0"
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.up = True
        self.url = ""
        self._cut_after: bytes | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/{self._db}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Close every connection through the link and refuse new ones."""
        self.up = False
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def restore(self) -> None:
        self.up = True

    def cut_after_reply_with(self, marker: bytes) -> None:
        """Cut the link right after the next reply from Redis that holds ``marker`` has
        reached the client: the client has what it read, and its next command fails."""
        self._cut_after = marker

    def _passed(self, data: bytes) -> None:
        if self._cut_after is not None and self._cut_after in data:
            self._cut_after = None
            self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer, self._passed))
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()
            if task is not None:
                self._tasks.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                passed: Callable[[bytes], None] | None = None) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            if passed is not None:
                passed(data)
    writer.transport.abort()
