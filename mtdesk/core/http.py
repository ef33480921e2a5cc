"""What every HTTP route of MT Desk answers with: JSON, one error shape, bounded bodies.

Every error answer is ``{"error": {"field": <name or null>, "message": <text>}}`` — the
webhooks (Meta, Stripe, data deletion) and the admin API alike.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` may hold msgspec Structs."""
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _text(value: str) -> str:
    # A field name or message may quote caller input, lone surrogates included (which
    # JSON cannot carry): those become "?" rather than a failed answer.
    return value.encode("utf-8", "replace").decode("utf-8") if value else value


def error_response(status: int, field: str | None, message: str) -> web.Response:
    """The error shape; ``field`` and ``message`` may quote any caller input."""
    clean = None if field is None else _text(field)
    return json_response({"error": {"field": clean, "message": _text(message)}}, status)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it exceeds ``limit`` (read no further than that).
    Raises ``asyncio.IncompleteReadError`` when it ends before its Content-Length."""
    length = request.content_length
    if length is not None:
        if length > limit:
            return None
        if not length:
            return b""
        # Usually the whole body came with the headers: take it without a coroutine
        # round (readexactly costs ~5 µs per POST here); wait only for what is missing.
        content = request.content
        head = content.read_nowait(length)
        if len(head) == length:
            return head
        return head + await content.readexactly(length - len(head))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class RequestErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger for aiohttp's server (``web.AppRunner(app, logger=RequestErrorLog())``).

    A request aiohttp's parser refuses (a bad header, a malformed request line; it
    answers 400 itself) is logged as ONE line at INFO: the client address and the kind of
    error, never the raw header line (which may hold an ``Authorization`` value) and no
    traceback, so a flood of bad requests cannot flood the log with secrets or stacks.
    Anything else (a handler's unhandled exception) is logged as aiohttp would.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            remote = args[0] if args else "?"
            _REFUSED.info("refused a malformed HTTP request from %s: %s (%s)",
                          remote, type(exc).__name__, exc.code)
            return
        super().log(level, msg, *args, **kwargs)


_REFUSED = logging.getLogger("mtdesk.http")
