"""Who is calling the admin API: the operator, one tenant's API key, or a signed-in person.

``Authorization: Bearer <token>`` is either the operator token (``MTDESK_ADMIN_TOKEN``,
compared in constant time) or a tenant API key (looked up by its SHA-256). Without that
header, the console's session cookie (:mod:`mtdesk.admin.sessions`) signs a person in;
a state-changing request so authenticated needs the session's CSRF token (403 without).
Anything else under ``/admin/api/`` is a 401, except the handlers marked :func:`public`
(sign-up, sign-in, password reset). Route handlers read :func:`principal` and use
:func:`require_operator` or :func:`tenant_scope`, so a tenant only ever reaches its own id;
an ``agent`` is refused (403) what :data:`OWNER_ONLY` lists.
"""

from __future__ import annotations

import hmac
from typing import Literal, Protocol

import msgspec
from aiohttp import web

from mtdesk.admin.http import Forbidden, Handler, TooManyAttempts
from mtdesk.admin.sessions import SESSION_COOKIE, Sessions, client_address, csrf_ok
from mtdesk.admin.throttle import AuthThrottle
from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.errors import Unauthorized, ValidationError
from mtdesk.core.tenants import Tenants


class Principal(msgspec.Struct, frozen=True):
    kind: Literal["operator", "tenant"]
    tenant_id: str | None = None
    user_id: str | None = None  # a signed-in person (None: the operator or an API key)
    role: str = "owner"  # an API key acts with the owner's powers
    session_key: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"


PRINCIPAL = web.RequestKey("principal", Principal)
API_PREFIX = "/admin/api/"


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require_operator(request: web.Request) -> None:
    if not principal(request).is_operator:
        raise Forbidden("this needs the operator token")


class ForTenant(Protocol):
    """A request body that may name the tenant acted for."""

    @property
    def tenant_id(self) -> str | None: ...


def tenant_scope(request: web.Request, body: ForTenant | None = None) -> str:
    """The tenant a request acts for: a tenant key's own id; for the operator, the
    ``tenant_id`` of the body or the query (required)."""
    who = principal(request)
    asked = body.tenant_id if body is not None and body.tenant_id is not None else None
    if asked is None:
        asked = request.query.get("tenant_id")
    if not who.is_operator:
        assert who.tenant_id is not None
        if asked is not None and asked != who.tenant_id:
            raise Forbidden("a tenant key acts only for its own tenant")
        return who.tenant_id
    if not isinstance(asked, str) or not asked:
        raise ValidationError("tenant_id", "is required with the operator token")
    return asked


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <operator token or tenant API key>")
    token = token.strip()
    # Tokens and keys are printable ASCII; anything else (a non-UTF-8 byte arrives as a
    # surrogate escape) cannot match one, and must not reach an encoder.
    if not all("!" <= c <= "~" for c in token):
        raise Unauthorized("the bearer token must be printable ASCII")
    return token


# (method or "*", path prefix under /admin/api/v1): what an agent may not do.
OWNER_ONLY: tuple[tuple[str, str], ...] = (
    ("POST", "/admin/api/v1/channels"),
    ("DELETE", "/admin/api/v1/channels"),
    ("*", "/admin/api/v1/billing"),
    ("*", "/admin/api/v1/team"),
    ("*", "/admin/api/v1/keys"),
    ("DELETE", "/admin/api/v1/account"),
)


def public(handler: Handler) -> Handler:
    """Mark an API handler that needs no authentication (sign-up, sign-in, reset)."""
    handler.__mtdesk_public__ = True  # type: ignore[attr-defined]
    return handler


def require_owner(request: web.Request) -> None:
    if principal(request).role != "owner":
        raise Forbidden("this needs the owner role (agents cannot manage channels, billing, "
                        "team or API keys)")


async def _from_session(request: web.Request) -> None:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    cfg = request.config_dict
    session = await Sessions(cfg[REDIS], cfg[CLOCK], cfg[SETTINGS]).find(cookie)
    if session is None:
        raise Unauthorized("sign in, or send Authorization: Bearer <operator token or "
                           "tenant API key>")
    status = await cfg[REDIS].hget(keys.tenant(session.tenant_id), "status")
    if status != b"active":
        raise Unauthorized("this account is not active")
    if not csrf_ok(request, session):
        raise Forbidden("missing or wrong X-CSRF-Token (a signed-in change needs the token "
                        "the sign-in answer gave)")
    request[PRINCIPAL] = Principal("tenant", session.tenant_id, session.user_id, session.role,
                                   session.key)
    if session.role != "owner":
        for method, prefix in OWNER_ONLY:
            if (method in ("*", request.method)) and (
                    request.path == prefix or request.path.startswith(prefix + "/")):
                require_owner(request)


async def authenticate(request: web.Request) -> None:
    """Set the request's :class:`Principal` from its bearer token or session cookie, or
    raise Unauthorized. Only for paths under ``/admin/api/`` (the web page needs no token)."""
    if "Authorization" not in request.headers:
        await _from_session(request)
        return
    settings = request.config_dict[SETTINGS]
    throttle = AuthThrottle(request.config_dict[REDIS], limit=settings.auth_failures,
                            window_s=settings.auth_failure_window_s)
    address = client_address(request, settings)
    raw = request.headers.get("Authorization", "")
    wait = await throttle.blocked_for(address, raw.partition(" ")[2].strip())
    if wait:
        raise TooManyAttempts(wait, f"too many failed authentications; retry in {wait} s")
    try:
        request[PRINCIPAL] = await _from_bearer(request)
    except Unauthorized:
        await throttle.failed(address, raw.partition(" ")[2].strip())
        raise


async def _from_bearer(request: web.Request) -> Principal:
    token = _bearer(request)
    admin_token = request.config_dict[SETTINGS].admin_token
    if admin_token is not None and hmac.compare_digest(
        token.encode("ascii"), admin_token.reveal().encode("utf-8")
    ):
        return Principal("operator")
    tenants = Tenants(request.config_dict[REDIS], request.config_dict[CLOCK])
    tenant_id = await tenants.authenticate(token)
    if tenant_id is None:
        raise Unauthorized("the bearer token is not a valid operator token or API key")
    return Principal("tenant", tenant_id)
