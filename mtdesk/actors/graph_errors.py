"""The one table of Graph API error codes: what is worth retrying, and what is not.

Callers rely on:

- :func:`classify` — ``(code, http_status) → ErrorPolicy``; retry with backoff + jitter
  when ``policy.retriable``; mark the channel disconnected when ``policy.disconnect``.
- :func:`graph_error_from_response` — any error answer (Meta's JSON, HTML from a proxy,
  an empty body) becomes a :class:`~mtdesk.core.errors.GraphError` whose ``retriable``
  comes from this table. It never raises.

Code 0 means "no Graph error code in the answer" (a bare 5xx, a proxy page): only the
HTTP status decides then. For a code the table does not know, Meta's ``is_transient: true``
also makes it retriable.
"""

from __future__ import annotations

from typing import Final

import msgspec

from mtdesk.core.errors import GraphError


class ErrorPolicy(msgspec.Struct, frozen=True):
    retriable: bool
    reason: str  # a short label for metrics and the reply's failure record
    disconnect: bool = False  # the token is dead: mark the channel disconnected


_TRANSIENT = ErrorPolicy(True, "transient")
_THROTTLED = ErrorPolicy(True, "rate_limited")
_PERMISSION = ErrorPolicy(False, "permission")

# code → policy. Anything not here: retriable only when HTTP says 5xx or 429.
TABLE: Final[dict[int, ErrorPolicy]] = {
    1: _TRANSIENT,  # unknown error
    2: _TRANSIENT,  # service temporarily unavailable
    4: _THROTTLED,  # application request limit
    17: _THROTTLED,  # user request limit
    32: _THROTTLED,  # page request limit
    613: _THROTTLED,  # calls exceeded the rate limit
    1200: _TRANSIENT,  # temporary send message failure
    130429: _THROTTLED,  # WhatsApp: throughput limit
    131056: _THROTTLED,  # WhatsApp: pair rate limit (same business ↔ same user)
    190: ErrorPolicy(False, "token_invalid", disconnect=True),
    10: _PERMISSION,
    100: ErrorPolicy(False, "invalid_parameter"),
    551: ErrorPolicy(False, "user_unavailable"),
    131047: ErrorPolicy(False, "outside_24h_window"),
    131049: ErrorPolicy(False, "ecosystem_limit"),  # Meta holds marketing to this person
    131026: ErrorPolicy(False, "undeliverable"),
}
PERMISSION_CODES: Final = range(200, 300)  # 200-299: permission errors, never retried

_SERVER_ERROR = ErrorPolicy(True, "server_error")
_HTTP_THROTTLED = ErrorPolicy(True, "rate_limited")
_UNKNOWN = ErrorPolicy(False, "unknown")


def classify(code: int, http_status: int = 0) -> ErrorPolicy:
    """The policy for a Graph error ``code`` answered with ``http_status``.

    A known code decides by itself (a 190 answered as 500 is still a dead token); an
    unknown code is retried only for HTTP 5xx and 429.
    """
    policy = TABLE.get(code)
    if policy is not None:
        return policy
    if code in PERMISSION_CODES:
        return _PERMISSION
    if http_status >= 500:
        return _SERVER_ERROR
    if http_status == 429:
        return _HTTP_THROTTLED
    return _UNKNOWN


class _ErrorBody(msgspec.Struct):
    message: str = ""
    type: str = ""
    code: int = 0
    error_subcode: int | None = None
    fbtrace_id: str | None = None
    is_transient: bool = False


class _Envelope(msgspec.Struct):
    error: _ErrorBody


_decoder = msgspec.json.Decoder(_Envelope)


def graph_error_from_response(status: int, body: bytes) -> GraphError:
    """Map an error answer to a GraphError; tolerant of any body."""
    try:
        parsed = _decoder.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        snippet = body[:200].decode("utf-8", "replace").strip()
        policy = classify(0, status)
        return GraphError(
            0, f"HTTP {status}" + (f": {snippet}" if snippet else ""),
            http_status=status, retriable=policy.retriable,
        )
    policy = classify(parsed.code, status)
    # Meta's own hint counts only for codes the table does not know.
    retriable = policy.retriable or (parsed.is_transient and parsed.code not in TABLE
                                     and parsed.code not in PERMISSION_CODES)
    return GraphError(
        parsed.code,
        parsed.message,
        subcode=parsed.error_subcode,
        http_status=status,
        retriable=retriable,
        fbtrace_id=parsed.fbtrace_id,
    )
