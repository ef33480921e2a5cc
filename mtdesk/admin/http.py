"""JSON in and out for the admin API, and the one place its errors become HTTP answers
(``json_response`` and ``error_response`` come from :mod:`mtdesk.core.http`, shared with
the webhooks).

Every error answer is ``{"error": {"field": <name or null>, "message": <text>}}``:
InvalidBody (a body field of the wrong type, unknown, missing or out of bounds; see
:mod:`mtdesk.admin.decode`) → 422, other ValidationError → 400, Unauthorized → 401, Forbidden → 403, NotFound → 404,
Conflict → 409, TooManyAttempts → 429 (with Retry-After), ConfigError → 503 (names the variable), Redis unreachable → 503.
Route modules raise those errors; they never build error responses themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from mtdesk.admin.decode import InvalidBody
from mtdesk.core.errors import (
    ConfigError,
    Conflict,
    MTDeskError,
    NotFound,
    StoreUnavailable,
    Unauthorized,
    ValidationError,
)
from mtdesk.core.http import error_response
from mtdesk.core.redis import UNAVAILABLE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Forbidden(MTDeskError):
    """Authenticated, but not allowed (a tenant key on an operator route) → 403."""


class TooManyAttempts(MTDeskError):
    """Too many failed attempts from this caller → 429 with ``Retry-After``."""

    def __init__(self, retry_after_s: int, problem: str) -> None:
        super().__init__(problem)
        self.retry_after_s = retry_after_s


async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ``handler``; the errors it raises become JSON error answers."""
    try:
        return await handler(request)
    except InvalidBody as exc:
        return error_response(422, exc.field, exc.problem)
    except ValidationError as exc:
        return error_response(400, exc.field, exc.problem)
    except Unauthorized as exc:
        return error_response(401, "Authorization", str(exc) or "a valid bearer token is required")
    except Forbidden as exc:
        return error_response(403, "Authorization", str(exc))
    except TooManyAttempts as exc:
        answer = error_response(429, "Authorization", str(exc))
        answer.headers["Retry-After"] = str(exc.retry_after_s)
        return answer
    except NotFound as exc:
        return error_response(404, None, str(exc) or "not found")
    except Conflict as exc:
        return error_response(409, exc.field, exc.problem)
    except ConfigError as exc:
        return error_response(503, exc.variable, exc.problem)
    except StoreUnavailable as exc:
        return error_response(503, None, str(exc) or "the store is unavailable, retry")
    except UNAVAILABLE:
        return error_response(503, None, "the store is unavailable, retry")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = error_response(exc.status, None, exc.reason)
        for name in ("Allow", "Retry-After"):  # 405: the methods the path takes; 429: when
            if name in exc.headers:
                answer.headers[name] = exc.headers[name]
        return answer
    except MTDeskError as exc:
        log.warning("admin request failed: %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_response(500, None, type(exc).__name__)
    except Exception:
        log.exception("admin request crashed: %s %s", request.method, request.path)
        return error_response(500, None, "internal error")
