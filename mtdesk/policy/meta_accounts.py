"""The Graph API calls that connect accounts and keep them connected (not the Send API).

What a caller may rely on:

- One :class:`MetaAccounts` per use, over an ``aiohttp.ClientSession`` passed in; the
  app id and secret come from settings (``MTDESK_META_APP_ID``, the first
  ``MTDESK_META_APP_SECRET``); :meth:`MetaAccounts.from_settings` raises ConfigError
  naming the missing one.
- Every Graph error answer raises :class:`GraphError` with Meta's code and subcode (190 =
  the token is dead); a network failure or a non-JSON answer raises ``GraphError(code=0,
  retriable=True)``. Tokens travel as parameters of the request only; nothing is logged.
- :data:`MESSAGING_FIELDS` are the webhook fields a Page (Messenger and Instagram) is
  subscribed to; a WhatsApp Business Account is subscribed without fields (its
  ``messages`` come from the app's WhatsApp webhook configuration).
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import msgspec

from mtdesk.core.errors import ConfigError, GraphError
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings

MESSAGING_FIELDS = ("messages", "messaging_postbacks", "message_echoes", "message_deliveries",
                    "message_reads", "message_reactions")
INSTAGRAM_FIELDS = ("messages", "messaging_postbacks", "message_reactions", "messaging_seen")
TIMEOUT = aiohttp.ClientTimeout(total=20)


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``debug_token`` says of a token."""

    is_valid: bool
    expires_at: int = 0  # seconds since the epoch; 0 = does not expire
    scopes: list[str] = msgspec.field(default_factory=list)
    granular_scopes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    error_code: int | None = None
    error_message: str | None = None

    def targets(self, scope: str) -> list[str]:
        for entry in self.granular_scopes:
            if entry.get("scope") == scope:
                return [str(t) for t in entry.get("target_ids") or []]
        return []


class Page(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    access_token: Secret
    instagram_id: str | None = None


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    token: Secret
    expires_in: int | None = None  # seconds; None = does not expire
    user_id: str | None = None
    permissions: list[str] = msgspec.field(default_factory=list)


def _root(base: str) -> str:
    """``https://graph.instagram.com/v25.0`` → ``https://graph.instagram.com``."""
    head, _, last = base.rpartition("/")
    return head if last[:1] == "v" and last[1:2].isdigit() else base


async def graph_call(http: aiohttp.ClientSession, method: str, url: str, *,
                     params: dict[str, str] | None = None, form: dict[str, str] | None = None,
                     token: Secret | None = None) -> Any:
    """One Graph call's JSON answer (``token``: sent as the Bearer header); every error
    as :class:`GraphError` (see the module's contract)."""
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else None
    try:
        async with http.request(method, url, params=params, data=form, headers=headers,
                                timeout=TIMEOUT) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GraphError(0, f"network: {type(exc).__name__}", retriable=True) from None
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise GraphError(0, f"HTTP {status}, not JSON", http_status=status,
                         retriable=status >= 500) from None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        raise GraphError(int(err.get("code") or 0), str(err.get("message") or "")[:300],
                         subcode=err.get("error_subcode"), http_status=status,
                         retriable=bool(err.get("is_transient")))
    if isinstance(body, dict) and "error_message" in body:  # Instagram's OAuth shape
        raise GraphError(int(body.get("code") or 400), str(body["error_message"])[:300],
                         http_status=status)
    if status >= 400:
        raise GraphError(0, f"HTTP {status}", http_status=status, retriable=status >= 500)
    return body


class MessageTemplate(msgspec.Struct, frozen=True, kw_only=True):
    """An approved WhatsApp message template as the inbox offers it: its body text and
    how many ``{{n}}`` parameters the body takes."""

    name: str
    language: str
    category: str | None = None
    body: str = ""
    parameters: int = 0


_PLACEHOLDER = re.compile(r"\{\{\s*([0-9]+)\s*\}\}")


async def approved_templates(http: aiohttp.ClientSession, settings: Settings, waba_id: str,
                             token: Secret, *, most: int = 250) -> list[MessageTemplate]:
    """The WhatsApp Business Account's approved templates (``GET /{waba-id}/
    message_templates?status=APPROVED``), at most ``most``."""
    body = await graph_call(http, "GET", f"{settings.graph_api_base}/{waba_id}/message_templates",
                            params={"status": "APPROVED", "limit": "100",
                                    "fields": "name,language,status,category,components"},
                            token=token)
    out: list[MessageTemplate] = []
    for item in (body.get("data") or [])[:most] if isinstance(body, dict) else []:
        if not isinstance(item, dict) or item.get("status", "APPROVED") != "APPROVED":
            continue
        text = next((str(c.get("text") or "") for c in item.get("components") or []
                     if isinstance(c, dict) and str(c.get("type", "")).upper() == "BODY"), "")
        numbers = {int(n) for n in _PLACEHOLDER.findall(text)}
        out.append(MessageTemplate(name=str(item.get("name") or ""),
                                   language=str(item.get("language") or ""),
                                   category=item.get("category"), body=text,
                                   parameters=max(numbers, default=0)))
    return out


class MetaAccounts:
    def __init__(self, http: aiohttp.ClientSession, settings: Settings, app_id: str,
                 app_secret: Secret) -> None:
        self._http = http
        self._graph = settings.graph_api_base
        self._ig_api = settings.accounts.instagram_api_base
        self._ig_graph = settings.accounts.instagram_graph_base
        self.app_id = app_id
        self._secret = app_secret

    @classmethod
    def from_settings(cls, http: aiohttp.ClientSession, settings: Settings) -> MetaAccounts:
        if not settings.meta_app_id:
            raise ConfigError("MTDESK_META_APP_ID", "is required to connect accounts with Meta")
        if not settings.meta_app_secrets:
            raise ConfigError("MTDESK_META_APP_SECRET",
                              "is required to connect accounts with Meta")
        return cls(http, settings, settings.meta_app_id, settings.meta_app_secrets[0])

    @property
    def version(self) -> str:
        return self._graph.rpartition("/")[2]

    async def _call(self, method: str, url: str, *, params: dict[str, str] | None = None,
                    form: dict[str, str] | None = None) -> Any:
        return await graph_call(self._http, method, url, params=params, form=form)

    # --- Facebook Login for Business / Embedded Signup --------------------------------
    async def exchange_code(self, code: str, redirect_uri: str) -> IssuedToken:
        body = await self._call("GET", f"{self._graph}/oauth/access_token", params={
            "client_id": self.app_id, "client_secret": self._secret.reveal(),
            "redirect_uri": redirect_uri, "code": code})
        return IssuedToken(token=Secret(str(body["access_token"])),
                           expires_in=body.get("expires_in"))

    async def long_lived(self, user_token: Secret) -> IssuedToken:
        body = await self._call("GET", f"{self._graph}/oauth/access_token", params={
            "grant_type": "fb_exchange_token", "client_id": self.app_id,
            "client_secret": self._secret.reveal(), "fb_exchange_token": user_token.reveal()})
        return IssuedToken(token=Secret(str(body["access_token"])),
                           expires_in=body.get("expires_in"))

    async def debug_token(self, token: Secret) -> TokenInfo:
        body = await self._call("GET", f"{self._graph}/debug_token", params={
            "input_token": token.reveal(),
            "access_token": f"{self.app_id}|{self._secret.reveal()}"})
        data = body.get("data") or {}
        error = data.get("error") or {}
        return TokenInfo(
            is_valid=bool(data.get("is_valid")), expires_at=int(data.get("expires_at") or 0),
            scopes=[str(s) for s in data.get("scopes") or []],
            granular_scopes=list(data.get("granular_scopes") or []),
            error_code=error.get("code"), error_message=error.get("message"))

    async def pages(self, user_token: Secret) -> list[Page]:
        body = await self._call("GET", f"{self._graph}/me/accounts", params={
            "fields": "id,name,access_token,instagram_business_account",
            "access_token": user_token.reveal(), "limit": "100"})
        out = []
        for item in body.get("data") or []:
            ig = item.get("instagram_business_account") or {}
            out.append(Page(id=str(item["id"]), name=str(item.get("name") or ""),
                            access_token=Secret(str(item["access_token"])),
                            instagram_id=str(ig["id"]) if ig.get("id") else None))
        return out

    async def subscribe(self, object_id: str, token: Secret,
                        fields: tuple[str, ...] | None = MESSAGING_FIELDS) -> None:
        params = {"access_token": token.reveal()}
        if fields:
            params["subscribed_fields"] = ",".join(fields)
        await self._call("POST", f"{self._graph}/{object_id}/subscribed_apps", params=params)

    async def subscribed(self, object_id: str, token: Secret) -> bool:
        """True while our app is subscribed to the object's webhooks."""
        body = await self._call("GET", f"{self._graph}/{object_id}/subscribed_apps",
                                params={"access_token": token.reveal()})
        for item in body.get("data") or []:
            app = item.get("whatsapp_business_api_data") or item
            if str(app.get("id")) == self.app_id:
                return True
        return False

    async def phone_numbers(self, waba_id: str, token: Secret) -> list[str]:
        body = await self._call("GET", f"{self._graph}/{waba_id}/phone_numbers",
                                params={"access_token": token.reveal()})
        return [str(p["id"]) for p in body.get("data") or []]

    # --- Instagram Login ----------------------------------------------------------------
    async def instagram_code(self, code: str, redirect_uri: str) -> IssuedToken:
        body = await self._call("POST", f"{self._ig_api}/oauth/access_token", form={
            "client_id": self.app_id, "client_secret": self._secret.reveal(),
            "grant_type": "authorization_code", "redirect_uri": redirect_uri, "code": code})
        if isinstance(body.get("data"), list) and body["data"]:  # the newer wrapped shape
            body = body["data"][0]
        permissions = body.get("permissions") or []
        if isinstance(permissions, str):
            permissions = permissions.split(",")
        return IssuedToken(token=Secret(str(body["access_token"])),
                           user_id=str(body.get("user_id") or ""),
                           permissions=[str(p) for p in permissions])

    async def instagram_long_lived(self, token: Secret) -> IssuedToken:
        body = await self._call("GET", f"{_root(self._ig_graph)}/access_token", params={
            "grant_type": "ig_exchange_token", "client_secret": self._secret.reveal(),
            "access_token": token.reveal()})
        return IssuedToken(token=Secret(str(body["access_token"])),
                           expires_in=body.get("expires_in"))

    async def instagram_refresh(self, token: Secret) -> IssuedToken:
        body = await self._call("GET", f"{_root(self._ig_graph)}/refresh_access_token", params={
            "grant_type": "ig_refresh_token", "access_token": token.reveal()})
        return IssuedToken(token=Secret(str(body["access_token"])),
                           expires_in=body.get("expires_in"))

    async def instagram_me(self, token: Secret) -> str:
        body = await self._call("GET", f"{self._ig_graph}/me", params={
            "fields": "user_id,username", "access_token": token.reveal()})
        return str(body.get("user_id") or body.get("id") or "")

    async def instagram_subscribe(self, token: Secret) -> None:
        await self._call("POST", f"{self._ig_graph}/me/subscribed_apps", params={
            "subscribed_fields": ",".join(INSTAGRAM_FIELDS), "access_token": token.reveal()})

    async def instagram_subscribed(self, token: Secret) -> bool:
        body = await self._call("GET", f"{self._ig_graph}/me/subscribed_apps",
                                params={"access_token": token.reveal()})
        return bool(body.get("data"))
