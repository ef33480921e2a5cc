"""Connect with Meta: a signed-in owner connects Pages, Instagram and WhatsApp accounts
through Meta's own dialogs instead of pasting tokens.

Routes (browser navigations, the session cookie signs them in):

- ``GET /admin/connect/{facebook|instagram|whatsapp}`` → 302 to Meta's dialog
  (``MTDESK_META_DIALOG_BASE`` for Facebook Login for Business and WhatsApp Embedded
  Signup, with ``MTDESK_META_LOGIN_CONFIG_ID`` as ``config_id``;
  ``MTDESK_INSTAGRAM_DIALOG_BASE`` for Instagram Login) with a random ``state`` stored for
  ten minutes and bound to this session and flow.
- ``GET /admin/connect/{…}/callback?code&state`` (where Meta sends the person back): the
  state must be the one issued to this same session for this flow, and is used up.
  Then, per flow:

  - facebook: code → user token → 60-day token → ``debug_token`` (the messaging
    permissions must be granted) → ``/me/accounts`` Page tokens → per Page
    ``POST /{page}/subscribed_apps`` with the messaging fields → a Messenger channel, and
    an Instagram channel for the Page's Instagram account (same Page token);
  - instagram (Instagram Login, accounts without a Page): code → token → 60-day token →
    ``/me`` → ``POST /me/subscribed_apps`` → an Instagram channel;
  - whatsapp (Embedded Signup): code → business token → ``debug_token``'s granular
    scopes name the shared WhatsApp Business Accounts → ``POST /{waba}/subscribed_apps``
    → ``/{waba}/phone_numbers`` → a WhatsApp channel per number.

  An account is connected only after its subscription succeeded; each channel records
  ``token_source`` (facebook_login | instagram_login | embedded_signup), the subscribed
  object and, when known, the token's expiry. The person lands back on the console with
  the outcome in the URL fragment: ``/admin/#connect=<flow>&connected=<n>`` and, for what
  failed, ``&problem=<text>`` (a refused dialog, an expired code, a forged state, missing
  permissions: nothing is connected then).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from mtdesk.admin.app import admin_routes, vault_of
from mtdesk.admin.sessions import SESSION_COOKIE, Session, Sessions
from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import now_ms
from mtdesk.core.errors import ConfigError, Conflict, GraphError, ValidationError
from mtdesk.core.redis import as_hash
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels
from mtdesk.core.users import token_hash
from mtdesk.policy.meta_accounts import MetaAccounts

log = logging.getLogger(__name__)

FLOWS = ("facebook", "instagram", "whatsapp")
STATE_TTL_S = 600
SOURCES = {"facebook": "facebook_login", "instagram": "instagram_login",
           "whatsapp": "embedded_signup"}
SCOPES = {
    "facebook": ("pages_show_list", "pages_messaging", "pages_manage_metadata",
                 "business_management", "instagram_basic", "instagram_manage_messages"),
    "instagram": ("instagram_business_basic", "instagram_business_manage_messages"),
    "whatsapp": ("whatsapp_business_management", "whatsapp_business_messaging",
                 "business_management"),
}
REQUIRED = {
    "facebook": ("pages_show_list", "pages_messaging", "pages_manage_metadata"),
    "instagram": ("instagram_business_basic", "instagram_business_manage_messages"),
    "whatsapp": ("whatsapp_business_management", "whatsapp_business_messaging"),
}


class ConnectFailed(Exception):
    """The flow stops; ``str`` is what the person is told (no token in it)."""


@dataclass
class Outcome:
    connected: list[str] = field(default_factory=list)  # "messenger 1010", …
    problems: list[str] = field(default_factory=list)


def redirect_uri(settings: Settings, flow: str) -> str:
    return f"{settings.base_url}/admin/connect/{flow}/callback"


def _back(flow: str, outcome: Outcome | None = None, problem: str | None = None) -> web.Response:
    query: dict[str, str] = {"connect": flow}
    if outcome is not None:
        query["connected"] = str(len(outcome.connected))
        if outcome.connected:
            query["accounts"] = ", ".join(outcome.connected)
        if outcome.problems:
            query["problem"] = "; ".join(outcome.problems)[:600]
    if problem is not None:
        query["connected"] = "0"
        query["problem"] = problem[:600]
    response = web.Response(status=303, headers={"Location": "/admin/#" + urlencode(query)})
    response.headers["Cache-Control"] = "no-store"
    return response


async def _session(request: web.Request) -> Session | None:
    cfg = request.config_dict
    return await Sessions(cfg[REDIS], cfg[CLOCK], cfg[SETTINGS]).find(
        request.cookies.get(SESSION_COOKIE, ""))


def _flow(request: web.Request) -> str:
    flow = request.match_info["flow"]
    if flow not in FLOWS:
        raise web.HTTPNotFound(reason=f"unknown flow; one of {', '.join(FLOWS)}")
    return flow


def dialog_url(settings: Settings, flow: str, state: str) -> str:
    app_id = settings.meta_app_id or ""
    if flow == "instagram":
        query = {"client_id": app_id, "redirect_uri": redirect_uri(settings, flow),
                 "response_type": "code", "scope": ",".join(SCOPES[flow]), "state": state}
        return f"{settings.accounts.instagram_dialog_base}/oauth/authorize?{urlencode(query)}"
    version = settings.graph_api_base.rpartition("/")[2]
    query = {"client_id": app_id, "redirect_uri": redirect_uri(settings, flow),
             "response_type": "code", "state": state, "scope": ",".join(SCOPES[flow])}
    if settings.accounts.meta_login_config_id:
        query["config_id"] = settings.accounts.meta_login_config_id
        query["override_default_response_type"] = "true"
    return f"{settings.accounts.meta_dialog_base}/{version}/dialog/oauth?{urlencode(query)}"


async def start(request: web.Request) -> web.StreamResponse:
    flow = _flow(request)
    session = await _session(request)
    if session is None:
        return _back(flow, problem="sign in first, then connect")
    if session.role != "owner":
        return _back(flow, problem="only an owner can connect accounts")
    settings: Settings = request.config_dict[SETTINGS]
    try:
        if not settings.meta_app_id:
            raise ConfigError("MTDESK_META_APP_ID", "is required to connect with Meta")
        if not settings.meta_app_secrets:
            raise ConfigError("MTDESK_META_APP_SECRET", "is required to connect with Meta")
        vault_of(request)
    except ConfigError as exc:
        return _back(flow, problem=f"the server is not set up for this: {exc.variable} "
                                   f"{exc.problem}")
    state = secrets.token_urlsafe(24)
    redis = request.config_dict[REDIS]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.connect_state(token_hash(state)), mapping={
            "session": session.key, "tenant": session.tenant_id, "user": session.user_id,
            "flow": flow})
        pipe.expire(keys.connect_state(token_hash(state)), STATE_TTL_S)
        await pipe.execute()
    response = web.Response(status=302, headers={"Location": dialog_url(settings, flow, state)})
    response.headers["Cache-Control"] = "no-store"
    return response


async def _take_state(request: web.Request, state: str) -> dict[bytes, bytes]:
    if not state or len(state) > 200:
        return {}
    key = keys.connect_state(token_hash(state))
    async with request.config_dict[REDIS].pipeline(transaction=True) as pipe:
        pipe.hgetall(key)
        pipe.delete(key)
        raw, _ = await pipe.execute()
    return as_hash(raw)


async def callback(request: web.Request) -> web.StreamResponse:
    flow = _flow(request)
    q = request.query
    session = await _session(request)
    stored = await _take_state(request, q.get("state", ""))
    if (session is None or not stored or stored.get(b"session") != session.key.encode()
            or stored.get(b"flow") != flow.encode()):
        log.warning("connect %s: a callback with a state this session was not given", flow)
        return _back(flow, problem="this sign-in with Meta did not start here or took too "
                                   "long (state does not match); start again from the console")
    if "error" in q:
        reason = q.get("error_reason") or q.get("error")
        return _back(flow, problem=f"Meta's dialog was cancelled or permissions were refused "
                                   f"({reason}); nothing was connected")
    code = q.get("code", "")
    if not code or len(code) > 2048:
        return _back(flow, problem="Meta sent no code back; start again")
    settings: Settings = request.config_dict[SETTINGS]
    try:
        async with aiohttp.ClientSession() as http:
            meta = MetaAccounts.from_settings(http, settings)
            runner = _Flow(request, meta, session.tenant_id, redirect_uri(settings, flow))
            outcome = await {"facebook": runner.facebook, "instagram": runner.instagram,
                             "whatsapp": runner.whatsapp}[flow](code)
    except ConnectFailed as exc:
        return _back(flow, problem=str(exc))
    except ConfigError as exc:
        return _back(flow, problem=f"the server is not set up for this: {exc.variable} "
                                   f"{exc.problem}")
    log.info("connect %s: tenant %s connected %d accounts (%d problems)", flow,
             session.tenant_id, len(outcome.connected), len(outcome.problems))
    return _back(flow, outcome)


def _code_problem(exc: GraphError) -> ConnectFailed:
    if exc.subcode == 36007:
        return ConnectFailed("Meta's code expired before it was used; connect again")
    if exc.subcode == 36009:
        return ConnectFailed("Meta's code was already used; connect again")
    return ConnectFailed(f"Meta refused the code (error {exc.code}); connect again")


class _Flow:
    def __init__(self, request: web.Request, meta: MetaAccounts, tenant_id: str,
                 redirect: str) -> None:
        cfg = request.config_dict
        self.meta = meta
        self.tenant_id = tenant_id
        self.redirect = redirect
        self.clock = cfg[CLOCK]
        self.channels = Channels(cfg[REDIS], cfg[CLOCK], vault_of(request).encrypt)

    def _missing(self, flow: str, granted: list[str]) -> None:
        missing = [s for s in REQUIRED[flow] if s not in granted]
        if missing:
            raise ConnectFailed(f"Meta did not grant {', '.join(missing)}; connect again and "
                                "allow every permission asked")

    async def _connect(self, outcome: Outcome, channel: str, account_id: str, token: Secret,
                       source: str, subscription: str, expires_ms: int | None) -> None:
        try:
            record = await self.channels.connect(self.tenant_id, channel, account_id, token)
        except (Conflict, ValidationError) as exc:
            outcome.problems.append(f"{channel} {account_id}: {exc.problem}")
            return
        fields: dict[str, str | int] = {"token_source": source, "subscription_id": subscription,
                                        "health": "ok", "checked_ms": now_ms(self.clock)}
        if expires_ms:
            fields["token_expires_ms"] = expires_ms
        await self.channels.set_connection(self.tenant_id, record.id, fields)
        outcome.connected.append(f"{channel} {account_id}")

    async def facebook(self, code: str) -> Outcome:
        try:
            short = await self.meta.exchange_code(code, self.redirect)
        except GraphError as exc:
            raise _code_problem(exc) from None
        try:
            user = await self.meta.long_lived(short.token)
            info = await self.meta.debug_token(user.token)
            self._missing("facebook", info.scopes)
            pages = await self.meta.pages(user.token)
        except GraphError as exc:
            raise ConnectFailed(f"Meta answered error {exc.code} while listing Pages; "
                                "connect again") from None
        if not pages:
            raise ConnectFailed("no Page was shared in Meta's dialog; connect again and "
                                "choose the Pages to answer")
        outcome = Outcome()
        for page in pages:
            try:
                await self.meta.subscribe(page.id, page.access_token)
            except GraphError as exc:
                outcome.problems.append(f"Page {page.name or page.id}: webhook subscription "
                                        f"refused (error {exc.code})")
                continue
            await self._connect(outcome, "messenger", page.id, page.access_token,
                                SOURCES["facebook"], page.id, None)
            if page.instagram_id and "instagram_manage_messages" in info.scopes:
                await self._connect(outcome, "instagram", page.instagram_id, page.access_token,
                                    SOURCES["facebook"], page.id, None)
        return outcome

    async def instagram(self, code: str) -> Outcome:
        try:
            short = await self.meta.instagram_code(code, self.redirect)
        except GraphError as exc:
            raise _code_problem(exc) from None
        self._missing("instagram", short.permissions)
        try:
            long = await self.meta.instagram_long_lived(short.token)
            account_id = await self.meta.instagram_me(long.token)
            await self.meta.instagram_subscribe(long.token)
        except GraphError as exc:
            raise ConnectFailed(f"Instagram answered error {exc.code}; connect again") from None
        expires = now_ms(self.clock) + long.expires_in * 1000 if long.expires_in else None
        outcome = Outcome()
        await self._connect(outcome, "instagram", account_id, long.token,
                            SOURCES["instagram"], account_id, expires)
        return outcome

    async def whatsapp(self, code: str) -> Outcome:
        try:
            issued = await self.meta.exchange_code(code, self.redirect)
        except GraphError as exc:
            raise _code_problem(exc) from None
        try:
            info = await self.meta.debug_token(issued.token)
        except GraphError as exc:
            raise ConnectFailed(f"Meta answered error {exc.code}; connect again") from None
        self._missing("whatsapp", info.scopes)
        wabas = info.targets("whatsapp_business_management")
        if not wabas:
            raise ConnectFailed("no WhatsApp Business Account was shared in Meta's dialog")
        expires = info.expires_at * 1000 if info.expires_at else None
        outcome = Outcome()
        for waba in wabas:
            try:
                await self.meta.subscribe(waba, issued.token, fields=None)
                phones = await self.meta.phone_numbers(waba, issued.token)
            except GraphError as exc:
                outcome.problems.append(f"WhatsApp Business Account {waba}: error {exc.code}")
                continue
            if not phones:
                outcome.problems.append(f"WhatsApp Business Account {waba} has no number yet")
            for phone in phones:
                await self._connect(outcome, "whatsapp", phone, issued.token,
                                    SOURCES["whatsapp"], waba, expires)
        return outcome


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get("/connect/{flow}", start)
    r.add_get("/connect/{flow}/callback", callback)
