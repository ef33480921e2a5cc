"""Slow clients are dropped: the HTTP server's idle and body read limits.

A connection costs a socket and a little memory whatever it does; one that never
finishes its request holds them for ever, and enough of them lock Meta out. The runner
:func:`serving_runner` builds (what ``mtdesk serve`` and ``mtdesk demo`` run) closes:

- a connection that does not complete its request line and headers within
  ``http_idle_timeout_s`` (``MTDESK_HTTP_IDLE_TIMEOUT_S``, default 15 s), counted from
  when it opened or from the end of its previous response (aiohttp's keep-alive timer,
  which also ends idle keep-alive connections);
- a request whose body has not fully arrived ``http_body_timeout_s`` after its headers
  (``MTDESK_HTTP_BODY_TIMEOUT_S``, default 60 s): the middleware below aborts it.

Behind a reverse proxy that buffers requests (docs/security.md), the proxy meets the
slow clients and these limits only guard the proxy's side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from mtdesk.core.http import RequestErrorLog
from mtdesk.core.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body_deadline(timeout_s: float) -> Middleware:
    """Middleware: abort the connection of a request whose body is not complete in time."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists or request.content.is_eof():
            return await handler(request)

        expired = False

        def expire() -> None:
            nonlocal expired
            transport = request.transport
            if not request.content.is_eof() and transport is not None and not transport.is_closing():
                expired = True
                log.warning("http: request body not received within %.3g s; connection closed", timeout_s)
                transport.abort()

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            return await handler(request)
        except (ConnectionError, OSError):
            if not expired:
                raise
            # Nobody is left to answer; the 408 only ends the handler quietly.
            return web.Response(status=408, text="request body timeout\n")
        finally:
            timer.cancel()

    return middleware


def serving_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner for the product's server: the slow-client limits of ``settings``, no
    access log (it costs ~10% of throughput), and a malformed request logged as one line
    without header values (:class:`mtdesk.core.http.RequestErrorLog`). Call before the
    app is set up."""
    app.middlewares.insert(0, body_deadline(settings.http_body_timeout_s))
    return web.AppRunner(app, access_log=None, keepalive_timeout=settings.http_idle_timeout_s,
                         logger=RequestErrorLog())
