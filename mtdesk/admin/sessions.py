"""Sign-in sessions of the console: cookies, CSRF tokens, sign-in throttling.

What a caller may rely on:

- A session is a random 256-bit id in the ``mtdesk_session`` cookie (``HttpOnly``,
  ``SameSite=Lax``, ``Path=/admin``, ``Secure`` when the request came over https — the
  request's own scheme, or ``X-Forwarded-Proto`` only with
  ``MTDESK_TRUST_FORWARDED_PROTO=true``). Redis holds only its SHA-256, with the
  session's TTL (``MTDESK_SESSION_TTL_S``). Lax, not Strict: Meta's login dialog comes
  back to ``/admin/connect/…/callback`` as a cross-site navigation, which must carry it.
- Every session has a CSRF token, returned in the sign-in answer and in the readable
  ``mtdesk_csrf`` cookie; a state-changing request (anything but GET/HEAD/OPTIONS)
  authenticated by the cookie must send it as ``X-CSRF-Token``, compared in constant time
  with the one stored for that session (so a token from another session does not pass).
  Bearer-authenticated requests need none: browsers never add that header by themselves.
- Sign-in throttling: after ``MTDESK_LOGIN_ATTEMPTS`` failures for one e-mail, or ten
  times that from one client address, within ``MTDESK_LOGIN_WINDOW_S``, sign-in answers
  429 until the window passes (a success clears the e-mail's count).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec
from aiohttp import web

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.redis import Redis, as_hash
from mtdesk.core.settings import Settings

SESSION_COOKIE = "mtdesk_session"
CSRF_COOKIE = "mtdesk_csrf"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/admin"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A signed-in person. ``key`` is the SHA-256 of the cookie value."""

    key: str
    tenant_id: str
    user_id: str
    role: str
    csrf: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_https(request: web.Request, settings: Settings) -> bool:
    if settings.accounts.trust_forwarded_proto:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if forwarded:
            return forwarded == "https"
    return request.scheme == "https" or request.secure


class Sessions:
    def __init__(self, redis: Redis, clock: Clock, settings: Settings) -> None:
        self._redis = redis
        self._clock = clock
        self._ttl = settings.accounts.session_ttl_s

    async def start(self, tenant_id: str, user_id: str, role: str) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        sid = secrets.token_urlsafe(32)
        session = Session(key=_digest(sid), tenant_id=tenant_id, user_id=user_id, role=role,
                          csrf=secrets.token_urlsafe(32))
        # The user's list of sessions first, then the session: on a Redis Cluster the two
        # are in different slots and run one after the other, and a crash between them
        # must not leave a session that ending the user's sessions would not find.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.user_sessions(tenant_id, user_id), session.key)
            pipe.expire(keys.user_sessions(tenant_id, user_id), self._ttl)
            pipe.hset(keys.session(session.key), mapping={
                "tenant": tenant_id, "user": user_id, "role": role, "csrf": session.csrf,
                "created_ms": now_ms(self._clock),
            })
            pipe.expire(keys.session(session.key), self._ttl)
            await pipe.execute()
        return sid, session

    async def find(self, cookie: str) -> Session | None:
        if not cookie or len(cookie) > 200:
            return None
        key = _digest(cookie)
        raw = as_hash(await self._redis.hgetall(keys.session(key)))
        if not raw or b"tenant" not in raw or b"user" not in raw:
            return None
        return Session(key=key, tenant_id=raw[b"tenant"].decode(), user_id=raw[b"user"].decode(),
                       role=raw.get(b"role", b"agent").decode(),
                       csrf=raw.get(b"csrf", b"").decode())

    async def end(self, session: Session) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.session(session.key))
            pipe.srem(keys.user_sessions(session.tenant_id, session.user_id), session.key)
            await pipe.execute()


def csrf_ok(request: web.Request, session: Session) -> bool:
    """True for a safe method, or when the request carries this session's CSRF token."""
    if request.method in SAFE_METHODS:
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    return bool(session.csrf) and hmac.compare_digest(
        sent.encode("utf-8", "replace"), session.csrf.encode("utf-8"))


def set_cookies(response: web.StreamResponse, request: web.Request, settings: Settings,
                cookie: str, session: Session) -> None:
    secure = is_https(request, settings)
    ttl = settings.accounts.session_ttl_s
    response.set_cookie(SESSION_COOKIE, cookie, max_age=ttl, path=COOKIE_PATH, httponly=True,
                        samesite="Lax", secure=secure)
    # Readable by the console's script (double-submit); useless without the session.
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=ttl, path=COOKIE_PATH,
                        httponly=False, samesite="Lax", secure=secure)


def clear_cookies(response: web.StreamResponse) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.del_cookie(name, path=COOKIE_PATH)


def client_address(request: web.Request, settings: Settings) -> str:
    """The caller's address (the first X-Forwarded-For hop only behind a trusted proxy)."""
    if settings.accounts.trust_forwarded_proto:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.remote or "unknown"
