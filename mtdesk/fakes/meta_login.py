"""Meta's login flows, faked on the fake Graph API's server (:class:`FakeGraphAPI.login`).

What it serves, on the same host (so every ``*_BASE`` setting points at it):

- the dialogs: ``GET /{version}/dialog/oauth`` (Facebook Login for Business, WhatsApp
  Embedded Signup) and ``GET /oauth/authorize`` (Instagram Login). Each is an HTML page
  with a checkbox per asked permission and two buttons: **Allow** (redirects to
  ``redirect_uri?code=…&state=…`` with the ticked permissions granted) and **Cancel**
  (``?error=access_denied&error_reason=user_denied&state=…``), as Meta does.
- ``GET /{version}/oauth/access_token``: code → short-lived user token (or, for a code of
  the WhatsApp dialog, a business integration token that does not expire);
  ``grant_type=fb_exchange_token`` → a 60-day user token. A used code answers error 100
  subcode 36009, an expired one 36007, another redirect_uri 36008, a wrong secret code 1.
- ``GET /{version}/debug_token``: ``is_valid``, ``expires_at``, ``scopes``,
  ``granular_scopes`` (the WhatsApp Business Account ids the person shared).
- ``GET /{version}/me/accounts``: the Pages (never-expiring Page tokens) with their
  Instagram accounts; ``GET|POST|DELETE /{version}/{id}/subscribed_apps``;
  ``GET /{version}/{waba}/phone_numbers``.
- Instagram Login: ``POST /oauth/access_token`` (form), ``GET /access_token``
  (``ig_exchange_token``, 60 days), ``GET /refresh_access_token``, ``GET /{version}/me``.

Every token it issues for an account is registered with the Graph fake, so sends with
it work; :meth:`FakeMetaLogin.invalidate` kills a token (190 everywhere),
:meth:`FakeMetaLogin.drop_subscription` plays Meta silently dropping the app.
"""

from __future__ import annotations

import html
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

if TYPE_CHECKING:
    from mtdesk.fakes.graph import FakeGraphAPI

DAY_S = 86_400


@dataclass
class FakePage:
    id: str
    name: str
    instagram_id: str | None = None


@dataclass
class FakeBusinessAccount:
    """A WhatsApp Business Account and its phone numbers."""

    id: str
    name: str
    phone_ids: list[str]


@dataclass
class _Code:
    flow: str  # "facebook" | "whatsapp" | "instagram"
    redirect_uri: str
    scopes: list[str]
    issued: float
    used: bool = False


@dataclass
class _Token:
    kind: str  # user | page | business | ig
    subject: str  # user id, page id, business user, IG user id
    scopes: list[str]
    expires_at: int  # 0 = never
    valid: bool = True
    granular: list[dict[str, Any]] = field(default_factory=list)


class FakeMetaLogin:
    """State of the fake login flows: one person with Pages, a WhatsApp account, an
    Instagram professional account. Change the public attributes before a flow."""

    def __init__(self, graph: FakeGraphAPI, *, app_id: str = "4242", app_secret: str = "s") -> None:
        self.graph = graph
        self.app_id = app_id
        self.app_secret = app_secret
        self.user_id = "900100"
        self.pages = [FakePage("1010", "Harbor Café", instagram_id="17841400000000001")]
        self.business_accounts = [FakeBusinessAccount("2020", "Harbor WhatsApp", ["3030"])]
        self.instagram_user = ("17841400000000099", "harbor.ig")
        self.code_ttl_s = 600.0
        self.subscriptions: dict[str, list[str]] = {}  # object id -> subscribed fields
        self.dialogs: list[dict[str, str]] = []  # query of every dialog shown
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, _Token] = {}

    # --- knobs for tests ------------------------------------------------------------
    def expire_codes(self) -> None:
        """Every code issued so far is past its lifetime."""
        for code in self._codes.values():
            code.issued -= self.code_ttl_s + 1

    def invalidate(self, token: str) -> None:
        """The token is dead (the person changed the password, removed the app…)."""
        if token in self._tokens:
            self._tokens[token].valid = False
        for account in self.graph._accounts.values():
            account.tokens.discard(token)

    def set_expiry(self, token: str, expires_at: int) -> None:
        self._tokens[token].expires_at = expires_at

    def drop_subscription(self, object_id: str) -> None:
        self.subscriptions.pop(object_id, None)

    def grant(self, kind: str, subject: str, *, lifetime_s: int = 0,
              channel: str | None = None, scopes: list[str] | None = None) -> str:
        """A token as a finished flow leaves it (``kind``: page | business | ig | user),
        accepted for ``subject``'s sends when ``channel`` is given; lifetime 0 = never
        expires. A business token shares the business accounts of :attr:`business_accounts`."""
        granular = []
        if kind == "business":
            ids = [w.id for w in self.business_accounts]
            granular = [{"scope": "whatsapp_business_management", "target_ids": ids}]
        token = self._issue(kind, subject, scopes or ["pages_messaging"], lifetime_s, granular)
        if channel is not None:
            self.graph.register(subject, token, channel=channel)
        return token

    def tokens_of(self, subject: str) -> list[str]:
        return [t for t, info in self._tokens.items() if info.subject == subject and info.valid]

    # --- routes ---------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Before the Graph fake's catch-all ``/{version}/{media_id}``."""
        r = app.router
        r.add_get("/{version}/dialog/oauth", self._h_dialog)
        r.add_get("/oauth/authorize", self._h_dialog)
        r.add_post("/_fake/dialog", self._h_decide)
        r.add_get("/{version}/oauth/access_token", self._h_fb_token)
        r.add_get("/{version}/debug_token", self._h_debug)
        r.add_get("/{version}/me/accounts", self._h_accounts)
        r.add_get("/{version}/me", self._h_me)
        r.add_route("*", "/{version}/{object_id}/subscribed_apps", self._h_subscribed)
        r.add_get("/{version}/{waba_id}/phone_numbers", self._h_phones)
        r.add_post("/oauth/access_token", self._h_ig_code)
        r.add_get("/access_token", self._h_ig_long)
        r.add_get("/refresh_access_token", self._h_ig_refresh)

    def _err(self, code: int, message: str, subcode: int | None = None,
             status: int = 400) -> web.Response:
        from mtdesk.fakes.graph import graph_error_body

        return web.Response(status=status, body=graph_error_body(code, subcode, message),
                            content_type="application/json")

    def _issue(self, kind: str, subject: str, scopes: list[str], lifetime_s: int,
               granular: list[dict[str, Any]] | None = None) -> str:
        token = f"EAA{kind[:2].upper()}{secrets.token_hex(12)}"
        expires = int(time.time()) + lifetime_s if lifetime_s else 0
        self._tokens[token] = _Token(kind, subject, scopes, expires, granular=granular or [])
        return token

    def _token(self, request: web.Request) -> _Token | None:
        raw = self.graph._bearer(request)
        info = self._tokens.get(raw or "")
        if info is None or not info.valid:
            return None
        if info.expires_at and info.expires_at < time.time():
            return None
        return info

    async def _h_dialog(self, request: web.Request) -> web.Response:
        q = request.query
        self.dialogs.append(dict(q))
        if q.get("client_id") != self.app_id or not q.get("redirect_uri"):
            return web.Response(status=400, text="Invalid App ID or redirect_uri")
        flow = "instagram" if request.path.startswith("/oauth/") else (
            "whatsapp" if "whatsapp_business_management" in q.get("scope", "") else "facebook")
        boxes = "".join(
            f'<label><input type="checkbox" name="scope" value="{html.escape(s)}" checked> '
            f"{html.escape(s)}</label><br>"
            for s in q.get("scope", "").split(",") if s)
        hidden = "".join(
            f'<input type="hidden" name="{n}" value="{html.escape(v)}">'
            for n, v in (("redirect_uri", q["redirect_uri"]), ("state", q.get("state", "")),
                         ("flow", flow)))
        page = (f"<!doctype html><title>Log in with {flow}</title><h1>MT Desk wants to "
                f"connect your {flow} accounts</h1><form method=post action=/_fake/dialog>"
                f"{hidden}{boxes}<button name=decision value=allow>Allow</button> "
                "<button name=decision value=deny>Cancel</button></form>")
        return web.Response(text=page, content_type="text/html")

    async def _h_decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        target = str(form.get("redirect_uri", ""))
        state = str(form.get("state", ""))
        if form.get("decision") != "allow":
            query = {"error": "access_denied", "error_code": "200",
                     "error_description": "Permissions error", "error_reason": "user_denied",
                     "state": state}
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = _Code(str(form.get("flow", "facebook")), target,
                                      [str(s) for s in form.getall("scope", [])], time.time())
            query = {"code": code, "state": state}
        raise web.HTTPFound(f"{target}{'&' if '?' in target else '?'}{urlencode(query)}")

    def _take_code(self, code: str, redirect_uri: str, flow: str | None) -> _Code | web.Response:
        found = self._codes.get(code)
        if found is None or (flow is not None and found.flow != flow):
            return self._err(100, "Invalid verification code format.")
        if found.used:
            return self._err(100, "This authorization code has been used.", 36009)
        if time.time() - found.issued > self.code_ttl_s:
            return self._err(100, "This authorization code has expired.", 36007)
        if found.redirect_uri != redirect_uri:
            return self._err(100, "Error validating verification code. Please make sure your "
                                  "redirect_uri is identical to the one you used in the OAuth "
                                  "dialog request", 36008)
        found.used = True
        return found

    async def _h_fb_token(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.app_id or q.get("client_secret") != self.app_secret:
            return self._err(1, "Error validating client secret.")
        if q.get("grant_type") == "fb_exchange_token":
            short = self._tokens.get(q.get("fb_exchange_token", ""))
            if short is None or not short.valid or short.kind != "user":
                return self._err(190, "Invalid OAuth access token.")
            token = self._issue("user", short.subject, short.scopes, 60 * DAY_S)
            return web.json_response({"access_token": token, "token_type": "bearer",
                                      "expires_in": 60 * DAY_S})
        taken = self._take_code(q.get("code", ""), q.get("redirect_uri", ""), None)
        if isinstance(taken, web.Response):
            return taken
        if taken.flow == "whatsapp":
            granular = []
            if "whatsapp_business_management" in taken.scopes:
                ids = [w.id for w in self.business_accounts]
                granular = [{"scope": "whatsapp_business_management", "target_ids": ids},
                            {"scope": "whatsapp_business_messaging", "target_ids": ids}]
            token = self._issue("business", self.user_id, taken.scopes, 0, granular)
            for waba in self.business_accounts:
                for phone in waba.phone_ids:
                    self.graph.register(phone, token, channel="whatsapp")
            return web.json_response({"access_token": token, "token_type": "bearer"})
        token = self._issue("user", self.user_id, taken.scopes, 2 * 3600)
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": 2 * 3600})

    async def _h_debug(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") != f"{self.app_id}|{self.app_secret}":
            return self._err(190, "Invalid OAuth access token - Cannot parse access token")
        raw = request.query.get("input_token", "")
        info = self._tokens.get(raw)
        if info is None:
            return self._err(190, "Invalid OAuth access token - Cannot parse access token")
        expired = bool(info.expires_at and info.expires_at < time.time())
        data: dict[str, Any] = {
            "app_id": self.app_id, "application": "MT Desk",
            "type": {"user": "USER", "page": "PAGE", "business": "SYSTEM_USER"}.get(
                info.kind, "USER"),
            "expires_at": info.expires_at, "data_access_expires_at": 0,
            "is_valid": info.valid and not expired, "scopes": info.scopes,
            "granular_scopes": info.granular, "user_id": info.subject,
        }
        if info.kind == "page":
            data["profile_id"] = info.subject
        if not data["is_valid"]:
            data["error"] = {"code": 190, "subcode": 463 if expired else 460,
                             "message": "Error validating access token: Session has expired"
                             if expired else "The session has been invalidated because the "
                                             "user changed their password."}
        return web.json_response({"data": data})

    async def _h_accounts(self, request: web.Request) -> web.Response:
        info = self._token(request)
        if info is None or info.kind != "user":
            return self._err(190, "Invalid OAuth access token.", None, 401)
        out = []
        if "pages_show_list" in info.scopes:
            for page in self.pages:
                token = self._issue("page", page.id, info.scopes, 0)
                self.graph.register(page.id, token, channel="messenger")
                item: dict[str, Any] = {"id": page.id, "name": page.name, "access_token": token,
                                        "tasks": ["MESSAGING", "MODERATE", "MANAGE"]}
                if page.instagram_id and "instagram_manage_messages" in info.scopes:
                    item["instagram_business_account"] = {"id": page.instagram_id}
                    self.graph.register(page.instagram_id, token, channel="instagram")
                out.append(item)
        return web.json_response({"data": out, "paging": {"cursors": {"before": "", "after": ""}}})

    async def _h_me(self, request: web.Request) -> web.Response:
        info = self._token(request)
        if info is None:
            return self._err(190, "Invalid OAuth access token.", None, 401)
        if info.kind == "ig":
            return web.json_response({"user_id": info.subject, "id": info.subject,
                                      "username": self.instagram_user[1]})
        return web.json_response({"id": info.subject, "name": "Harbor Owner"})

    def _owns(self, info: _Token, object_id: str) -> bool:
        if info.kind in ("page", "ig"):
            return info.subject == object_id
        if info.kind == "business":
            return any(object_id in g["target_ids"] for g in info.granular)
        return False

    async def _h_subscribed(self, request: web.Request) -> web.Response:
        info = self._token(request)
        object_id = request.match_info["object_id"]
        if info is not None and object_id == "me" and info.kind == "ig":
            object_id = info.subject
        if info is None:
            return self._err(190, "Error validating access token: Session has expired",
                             463, 401)
        if not self._owns(info, object_id):
            return self._err(200, "(#200) Permissions error")
        if request.method == "POST":
            data = await request.post()
            fields = str(request.query.get("subscribed_fields")
                         or data.get("subscribed_fields", "messages"))
            self.subscriptions[object_id] = fields.split(",")
            return web.json_response({"success": True})
        if request.method == "DELETE":
            self.subscriptions.pop(object_id, None)
            return web.json_response({"success": True})
        subscribed = self.subscriptions.get(object_id)
        if subscribed is None:
            return web.json_response({"data": []})
        if info.kind == "business":
            return web.json_response({"data": [{"whatsapp_business_api_data": {
                "id": self.app_id, "name": "MT Desk", "link": "https://example.test"}}]})
        return web.json_response({"data": [{"id": self.app_id, "name": "MT Desk",
                                            "subscribed_fields": subscribed}]})

    async def _h_phones(self, request: web.Request) -> web.Response:
        info = self._token(request)
        waba_id = request.match_info["waba_id"]
        if info is None:
            return self._err(190, "Invalid OAuth access token.", None, 401)
        if not self._owns(info, waba_id):
            return self._err(200, "(#200) Permissions error")
        waba = next(w for w in self.business_accounts if w.id == waba_id)
        return web.json_response({"data": [
            {"id": p, "display_phone_number": f"+1 555 01{i:02d}", "verified_name": waba.name,
             "quality_rating": "GREEN"} for i, p in enumerate(waba.phone_ids)]})

    async def _h_ig_code(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.app_id or form.get("client_secret") != self.app_secret:
            return web.json_response({"error_type": "OAuthException", "code": 400,
                                      "error_message": "Invalid client_secret"}, status=400)
        taken = self._take_code(str(form.get("code", "")), str(form.get("redirect_uri", "")),
                                "instagram")
        if isinstance(taken, web.Response):
            return web.json_response({"error_type": "OAuthException", "code": 400,
                                      "error_message": "This authorization code has expired "
                                      "or has been used"}, status=400)
        token = self._issue("ig", self.instagram_user[0], taken.scopes, 3600)
        return web.json_response({"access_token": token, "user_id": self.instagram_user[0],
                                  "permissions": ",".join(taken.scopes)})

    async def _h_ig_long(self, request: web.Request) -> web.Response:
        q = request.query
        short = self._tokens.get(q.get("access_token", ""))
        if (q.get("grant_type") != "ig_exchange_token" or q.get("client_secret") != self.app_secret
                or short is None or not short.valid or short.kind != "ig"):
            return self._err(190, "Invalid OAuth access token.")
        token = self._issue("ig", short.subject, short.scopes, 60 * DAY_S)
        self.graph.register(short.subject, token, channel="instagram")
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": 60 * DAY_S})

    async def _h_ig_refresh(self, request: web.Request) -> web.Response:
        old = self._tokens.get(request.query.get("access_token", ""))
        if request.query.get("grant_type") != "ig_refresh_token" or old is None or not old.valid:
            return self._err(190, "Invalid OAuth access token.")
        token = self._issue("ig", old.subject, old.scopes, 60 * DAY_S)
        self.graph.register(old.subject, token, channel="instagram")
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": 60 * DAY_S})
