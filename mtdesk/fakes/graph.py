"""A fake Meta Graph API: a real aiohttp server speaking the Send API wire format.

What it answers (``{version}`` is any ``vNN.N``):

- ``POST /{version}/{account_id}/messages`` — Messenger / Instagram body
  (``recipient.id``, ``messaging_type``, ``message.text``, ``metadata``) answers
  ``{"recipient_id", "message_id"}``; a WhatsApp body (``messaging_product: "whatsapp"``,
  ``to`` or ``recipient``, ``type: "text"``, ``text.body``, ``context.message_id``) answers
  ``{"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid..."}]}``.
  Text over the channel's limit answers error 100, as Meta does; so do quick replies
  (at most 13, titles ≤ 20) and WhatsApp interactive messages (body ≤ 1,024, at most 3
  reply buttons with unique titles ≤ 20, or a list of ≤ 10 rows, titles ≤ 24,
  descriptions ≤ 72) that break Meta's limits. A private reply to a comment
  (Messenger / Instagram ``recipient: {"comment_id"}``) is accepted once per comment: a
  second one answers error 10 (Meta allows one); its answer's ``recipient_id`` is the
  commenter when :meth:`FakeGraphAPI.comment_by` named one.
  Signals on the same path — a Messenger/Instagram ``sender_action`` (``mark_seen``,
  ``typing_on``, ``typing_off``) answering ``{"recipient_id"}``, a WhatsApp
  ``{"status": "read", "message_id", "typing_indicator"?}`` answering
  ``{"success": true}`` — are kept apart in ``signals`` (never in ``sends`` or
  ``attempts``); :meth:`FakeGraphAPI.fail_next_signal` makes them fail.
- ``GET /{version}/{user_id}?fields=…`` — a person's profile added with
  :meth:`FakeGraphAPI.add_profile` (Messenger ``first_name``, ``last_name``,
  ``profile_pic``; Instagram ``name``, ``username``, ``profile_pic``), only the fields
  asked for; an unknown id answers error 100/33 as Meta does.
- ``GET /{version}/{waba_id}/message_templates`` — the templates added with
  :meth:`FakeGraphAPI.add_template`, as Meta's ``{"data": [{"name", "language",
  "status", "category", "components": [{"type": "BODY", "text"}]}], "paging"}``,
  filtered by ``?status=``.
- ``GET /{version}/{media_id}`` — media metadata ``{"url", "mime_type", "sha256",
  "file_size", "id", "messaging_product"}``; the URL downloads the bytes (Bearer needed).
- ``GET /_fake/cdn/{name}`` — a Messenger/Instagram attachment URL (Meta's CDN, no token,
  the address itself is the credential): :meth:`FakeGraphAPI.add_attachment` gives one
  with real bytes; past its ``expires_s`` it answers 403 ``URL signature expired``, as
  the CDN does.
- Bearer tokens: an account registered with :meth:`FakeGraphAPI.register` accepts only
  its tokens (anything else answers error 190); unregistered accounts accept any
  non-empty token unless ``strict=True``.
- Error injection: :meth:`FakeGraphAPI.fail_next` answers the real error JSON
  ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``;
  :meth:`FakeGraphAPI.storm` answers every message send with errors for a while.
- Latency: ``latency_s`` (settable at any time) delays every answer.
- Webhooks back to the product, as Meta posts them (off unless configured): the echo of
  every Messenger / Instagram message sent, a ``sent`` status of every WhatsApp one,
  signed with the app secret; see :mod:`mtdesk.fakes.graph_webhooks`.
- Meta's login flows (dialogs, code exchange, ``debug_token``, ``/me/accounts``,
  ``subscribed_apps``, Instagram Login): :attr:`FakeGraphAPI.login`, see
  :mod:`mtdesk.fakes.meta_login`.

Control endpoints for a fake running in another process (``python -m mtdesk.fakes.graph``):
``GET /_fake/sends`` (accepted sends), ``GET /_fake/signals`` (read marks and typing),
``GET /_fake/attempts`` (every call; these take
``?since=N`` to skip the first N),
``POST /_fake/accounts`` ``{"account_id", "token", "channel"?}``,
``POST /_fake/webhooks`` ``{"url", "app_secret", "delay_ms"?, "app_id"?}`` (``url`` null:
off) and ``GET /_fake/webhooks`` (what was posted), ``POST /_fake/fail``
(the arguments of ``fail_next``), ``POST /_fake/storm`` ``{"seconds", "errors": [{"code",
"subcode"?, "http_status"?}]}``, ``POST /_fake/latency`` ``{"ms"}``, ``POST /_fake/reset``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from mtdesk.fakes._server import FakeProcess, FakeServer, process_arguments, spawn_fake
from mtdesk.fakes.graph_webhooks import MetaWebhooks
from mtdesk.fakes.meta_login import FakeMetaLogin

DEFAULT_VERSION = "v25.0"

# The messages Meta gives for the codes tests most often inject (others get a generic one).
_ERROR_TEXT: dict[int, tuple[str, str]] = {
    1: ("An unknown error occurred", "OAuthException"),
    2: ("An unexpected error has occurred. Please retry your request later.", "OAuthException"),
    4: ("Application request limit reached", "OAuthException"),
    10: ("Application does not have permission for this action", "OAuthException"),
    17: ("User request limit reached", "OAuthException"),
    32: ("Page request limit reached", "OAuthException"),
    100: ("Invalid parameter", "OAuthException"),
    190: ("Error validating access token: Session has expired", "OAuthException"),
    200: ("Permissions error", "OAuthException"),
    551: ("This person isn't available right now.", "OAuthException"),
    613: ("Calls to this api have exceeded the rate limit.", "OAuthException"),
    1200: ("Temporary send message failure. Please try again later", "OAuthException"),
    130429: ("Rate limit hit", "OAuthException"),
    131026: ("Message undeliverable", "OAuthException"),
    131047: ("Re-engagement message", "OAuthException"),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", "OAuthException"),
}

# Meta's own limits on one text, per channel (Instagram counts UTF-8 bytes).
MESSENGER_MAX_CHARS = 1999
INSTAGRAM_MAX_BYTES = 1000
WHATSAPP_MAX_CHARS = 4096


# A mention read: mentioned_comment.comment_id(<id>){<fields>} / mentioned_media.media_id(…){…}
_MENTION_FIELDS = re.compile(
    r"(?P<edge>mentioned_comment|mentioned_media)\.(?:comment_id|media_id)"
    r"\((?P<id>[0-9A-Za-z_]+)\)\{(?P<fields>[^}]*(?:\{[^}]*\}[^}]*)*)\}")


@dataclass
class RecordedSend:
    """One call to ``POST /{account_id}/messages`` as the fake saw it."""

    account_id: str
    body: dict[str, Any]
    token: str | None
    time: float
    status: int
    message_id: str | None = None
    error_code: int | None = None

    @property
    def action(self) -> str | None:
        """A signal's kind: the ``sender_action``, or WhatsApp's ``read`` / ``read+typing``."""
        if self.body.get("messaging_product") == "whatsapp":
            if self.body.get("status") != "read":
                return None
            return "read+typing" if self.body.get("typing_indicator") else "read"
        action = self.body.get("sender_action")
        return action if isinstance(action, str) else None

    @property
    def text(self) -> str | None:
        """The text sent, whichever channel's shape the body had (an interactive
        message's body text too)."""
        if self.body.get("messaging_product") == "whatsapp":
            interactive = self.body.get("interactive")
            if isinstance(interactive, dict):
                inner = interactive.get("body")
                return inner.get("text") if isinstance(inner, dict) else None
            text = self.body.get("text")
            return text.get("body") if isinstance(text, dict) else None
        message = self.body.get("message")
        return message.get("text") if isinstance(message, dict) else None


@dataclass
class _Failure:
    code: int
    subcode: int | None
    http_status: int
    remaining: int
    message: str | None = None


@dataclass
class _Media:
    content: bytes
    mime_type: str
    account_id: str | None


@dataclass
class _Account:
    tokens: set[str] = field(default_factory=set)
    channel: str | None = None  # "messenger" | "instagram" | "whatsapp" (enables limit checks)


def graph_error_body(code: int, subcode: int | None = None, message: str | None = None) -> bytes:
    """The exact JSON the Graph API answers for an error."""
    text, kind = _ERROR_TEXT.get(code, ("An error occurred", "OAuthException"))
    error: dict[str, Any] = {
        "message": message or f"(#{code}) {text}",
        "type": kind,
        "code": code,
        "fbtrace_id": "A" + hashlib.sha1(f"{code}{time.time_ns()}".encode()).hexdigest()[:20],
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return json.dumps({"error": error}).encode()


class FakeGraphAPI(FakeServer):
    """The fake Graph API. ``sends`` holds accepted sends; ``attempts`` every call."""

    def __init__(
        self,
        *,
        version: str = DEFAULT_VERSION,
        latency_s: float = 0.0,
        strict: bool = False,
        on_send: Callable[[RecordedSend], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        app_secret: str = "",
        webhook_delay_s: float = 0.05,
    ) -> None:
        super().__init__(host=host, port=port, latency_s=latency_s)
        self.on_send = on_send  # called for every accepted send (the demo prints them)
        # Echoes / statuses of accepted sends posted to the product (off without a URL).
        self.webhooks = MetaWebhooks()
        self.webhooks.configure(webhook_url, app_secret, delay_s=webhook_delay_s)
        self.version = version
        self.strict = strict
        self.sends: list[RecordedSend] = []
        self.attempts: list[RecordedSend] = []
        self.signals: list[RecordedSend] = []  # accepted read marks / typing indicators
        self._signal_failures: dict[str, list[_Failure]] = {}
        self._accounts: dict[str, _Account] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._media: dict[str, _Media] = {}
        self._profiles: dict[str, dict[str, str]] = {}
        self._templates: dict[str, list[dict[str, Any]]] = {}
        self.profile_requests: list[str] = []  # user ids whose profile was asked for
        # (ig user id, fields) of each mention read; what add_mention registered.
        self.mention_requests: list[tuple[str, str]] = []
        self._mentions: dict[tuple[str, str, str], dict[str, object]] = {}
        self._cdn: dict[str, tuple[_Media, float | None]] = {}
        self._download_failures: list[int] = []
        self.downloads: list[str] = []  # media ids / CDN names of every download served
        self._ids = itertools.count(1)
        self._replied_comments: set[str] = set()  # comments that got their private reply
        self._comment_authors: dict[str, str] = {}
        self._storm_until = 0.0  # time.monotonic() the storm ends
        self._storm: list[_Failure] = []
        self._storm_turn = itertools.count()
        self.login = FakeMetaLogin(self)  # the login flows (dialogs, OAuth, subscriptions)

    @property
    def base_url(self) -> str:
        """What ``MTDESK_GRAPH_API_BASE`` should be: ``http://127.0.0.1:PORT/v25.0``."""
        return f"{self.root_url}/{self.version}"

    # --- configuration --------------------------------------------------------------
    def register(self, account_id: str, token: str, *, channel: str | None = None) -> None:
        """Accept ``token`` for ``account_id`` (an account may have several tokens)."""
        account = self._accounts.setdefault(account_id, _Account())
        account.tokens.add(token)
        if channel is not None:
            account.channel = channel

    def comment_by(self, comment_id: str, user_id: str) -> None:
        """``comment_id`` was written by ``user_id`` (answered as a private reply's
        ``recipient_id``, as Meta does)."""
        self._comment_authors[comment_id] = user_id

    def revoke(self, account_id: str) -> None:
        """Every token of the account answers 190 from now on."""
        self._accounts[account_id] = _Account(tokens=set(), channel=self._channel_of(account_id))

    def fail_next(
        self,
        account_id: str,
        code: int,
        subcode: int | None = None,
        http_status: int = 400,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """The next ``times`` calls for ``account_id`` (``"*"``: any) answer this error.

        ``code=0`` with a 5xx ``http_status`` answers a bare server error (no JSON).
        """
        self._failures.setdefault(account_id, []).append(
            _Failure(code, subcode, http_status, times, message)
        )

    def storm(self, seconds: float, errors: list[tuple[int, int, int | None]]) -> None:
        """For ``seconds`` from now every message send (any account; signals are not
        affected) answers one of ``errors`` — ``(http_status, code, subcode)``, taken in
        turn; code 0 is a bare server error — as an outage or a throttling storm would."""
        self._storm = [_Failure(code, subcode, status, 1) for status, code, subcode in errors]
        self._storm_until = time.monotonic() + seconds

    def fail_next_signal(self, account_id: str, code: int, *, times: int = 1,
                         http_status: int = 400) -> None:
        """The next ``times`` signals (read marks, typing) for ``account_id`` (``"*"``:
        any) answer this error; message sends are not affected."""
        self._signal_failures.setdefault(account_id, []).append(
            _Failure(code, None, http_status, times))

    def signals_to(self, account_id: str) -> list[RecordedSend]:
        return [s for s in self.signals if s.account_id == account_id]

    def add_media(
        self,
        media_id: str,
        content: bytes,
        mime_type: str = "image/jpeg",
        *,
        account_id: str | None = None,
    ) -> None:
        """Make ``GET /{media_id}`` answer; ``account_id`` restricts the accepted tokens."""
        self._media[media_id] = _Media(content, mime_type, account_id)

    def add_profile(self, user_id: str, **fields: str) -> None:
        """Make ``GET /{user_id}`` answer these profile fields (``first_name``,
        ``last_name``, ``name``, ``username``, ``profile_pic``)."""
        self._profiles[user_id] = dict(fields)

    def add_mention(self, account_id: str, *, comment_id: str | None = None,
                    media_id: str | None = None, **fields: object) -> None:
        """Make ``GET /{account_id}?fields=mentioned_comment.comment_id({comment_id}){…}``
        (or ``mentioned_media.media_id({media_id}){…}``) answer these fields of the IG
        Comment (``text``, ``timestamp``, ``like_count``, ``media``) or IG Media
        (``caption``, ``media_type``, ``media_url``, ``timestamp``, ``username``), as
        Instagram's Mentioned Comment / Mentioned Media references document them."""
        if comment_id is not None:
            self._mentions[(account_id, "mentioned_comment", comment_id)] = {
                "id": comment_id, **fields}
        elif media_id is not None:
            self._mentions[(account_id, "mentioned_media", media_id)] = {
                "id": media_id, **fields}

    def add_template(self, waba_id: str, name: str, language: str, body: str, *,
                     status: str = "APPROVED", category: str = "UTILITY") -> None:
        """A message template of the WhatsApp Business Account ``waba_id``."""
        self._templates.setdefault(waba_id, []).append({
            "name": name, "language": language, "status": status, "category": category,
            "id": str(next(self._ids)), "components": [{"type": "BODY", "text": body}]})

    def add_attachment(
        self, content: bytes, mime_type: str = "image/jpeg", *, expires_s: float | None = None,
    ) -> str:
        """A CDN URL serving ``content`` (Messenger/Instagram attachments), valid for
        ``expires_s`` seconds (None: forever). Downloads are counted in ``downloads``."""
        name = f"att{next(self._ids)}"
        expires = None if expires_s is None else time.time() + expires_s
        self._cdn[name] = (_Media(content, mime_type, None), expires)
        return f"{self.root_url}/_fake/cdn/{name}?oe={int(expires or 0):x}"

    def fail_next_download(self, times: int = 1, status: int = 500) -> None:
        """The next ``times`` media downloads (CDN or WhatsApp media URLs) answer ``status``."""
        self._download_failures.extend([status] * times)

    def reset(self) -> None:
        self._replied_comments.clear()
        self.sends.clear()
        self.attempts.clear()
        self._failures.clear()
        self.signals.clear()
        self._signal_failures.clear()
        self._storm_until = 0.0

    def sends_to(self, account_id: str) -> list[RecordedSend]:
        return [s for s in self.sends if s.account_id == account_id]

    # --- the app --------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/_fake/sends", self._h_sends)
        app.router.add_get("/_fake/attempts", self._h_attempts)
        app.router.add_get("/_fake/signals", self._h_signals)
        app.router.add_post("/_fake/accounts", self._h_register)
        app.router.add_post("/_fake/fail", self._h_fail)
        app.router.add_post("/_fake/storm", self._h_storm)
        app.router.add_post("/_fake/webhooks", self._h_webhooks)
        app.router.add_get("/_fake/webhooks", self._h_webhook_stats)
        self.add_control_routes(app)
        app.router.add_get("/_fake/media/{media_id}", self._h_download)
        app.router.add_get("/_fake/cdn/{name}", self._h_cdn)
        self.login.add_routes(app)
        app.router.add_post("/{version}/{account_id}/messages", self._h_messages)
        app.router.add_get("/{version}/{waba_id}/message_templates", self._h_templates)
        app.router.add_get("/{version}/{media_id}", self._h_media)
        return app

    def _channel_of(self, account_id: str) -> str | None:
        account = self._accounts.get(account_id)
        return account.channel if account else None

    def _token_ok(self, account_id: str | None, token: str | None) -> bool:
        if not token:
            return False
        account = self._accounts.get(account_id) if account_id is not None else None
        if account is None:
            if account_id is None:  # media with no owner: any registered token, or lenient
                known = [t for a in self._accounts.values() for t in a.tokens]
                return token in known or (not self.strict)
            return not self.strict
        return token in account.tokens

    def _take_failure(self, account_id: str, *, signal: bool = False) -> _Failure | None:
        failures = self._signal_failures if signal else self._failures
        for key in (account_id, "*"):
            queue = failures.get(key)
            while queue:
                failure = queue[0]
                if failure.remaining <= 0:
                    queue.pop(0)
                    continue
                failure.remaining -= 1
                if failure.remaining == 0:
                    queue.pop(0)
                return failure
        return None

    async def _delay(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[len("Bearer "):].strip() or None
        return request.query.get("access_token")

    def _error(self, code: int, subcode: int | None = None, status: int = 400,
               message: str | None = None) -> web.Response:
        return web.Response(
            status=status,
            body=graph_error_body(code, subcode, message),
            content_type="application/json",
            headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'}
            if code == 190 else None,
        )

    async def _h_messages(self, request: web.Request) -> web.Response:
        await self._delay()
        account_id = request.match_info["account_id"]
        token = self._bearer(request)
        raw = await request.read()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        record = RecordedSend(account_id=account_id, body=body, token=token,
                              time=time.time(), status=200)
        if record.action is not None or "sender_action" in body:
            return self._answer_signal(account_id, token, body, record)
        self.attempts.append(record)
        response = self._answer_send(account_id, token, body, record)
        record.status = response.status
        if response.status == 200:
            self.sends.append(record)
            if self.on_send is not None:
                self.on_send(record)
            recipient = body.get("recipient")
            if isinstance(recipient, dict):  # Messenger / Instagram: the person
                who = recipient.get("id") or self._comment_authors.get(
                    str(recipient.get("comment_id")))
            else:
                who = None
            self.webhooks.sent(self._channel_of(account_id), account_id, body,
                               record.message_id or "", who)
        return response

    def _answer_signal(self, account_id: str, token: str | None, body: dict[str, Any],
                       record: RecordedSend) -> web.Response:
        if not self._token_ok(account_id, token):
            return self._error(190, 460 if token else None, 401)
        failure = self._take_failure(account_id, signal=True)
        if failure is not None:
            record.error_code = failure.code
            return self._error(failure.code, failure.subcode, failure.http_status)
        if body.get("messaging_product") == "whatsapp":
            if not body.get("message_id"):
                return self._error(100, None, 400, "(#100) The parameter message_id is required.")
            self.signals.append(record)
            return web.json_response({"success": True})
        recipient = body.get("recipient")
        if not isinstance(recipient, dict) or not recipient.get("id"):
            return self._error(100, None, 400, "(#100) The parameter recipient is required.")
        if body.get("sender_action") not in ("mark_seen", "typing_on", "typing_off"):
            return self._error(100, None, 400, "(#100) Param sender_action must be one of "
                                               "{mark_seen, typing_on, typing_off}")
        self.signals.append(record)
        return web.json_response({"recipient_id": recipient["id"]})

    def _answer_send(self, account_id: str, token: str | None, body: dict[str, Any],
                     record: RecordedSend) -> web.Response:
        if not self._token_ok(account_id, token):
            record.error_code = 190
            return self._error(190, 460 if token else None, 401)
        failure = self._take_failure(account_id)
        if failure is None and self._storm and time.monotonic() < self._storm_until:
            failure = self._storm[next(self._storm_turn) % len(self._storm)]
        if failure is not None:
            record.error_code = failure.code
            if failure.code == 0:
                return web.Response(status=failure.http_status, text="Service Unavailable")
            return self._error(failure.code, failure.subcode, failure.http_status, failure.message)
        problem = self.refusal(account_id, body)
        if problem is not None:
            record.error_code = 100
            return self._error(100, None, 400, f"(#100) {problem}")
        recipient = body.get("recipient")
        comment = recipient.get("comment_id") if isinstance(recipient, dict) else None
        if comment and str(comment) in self._replied_comments:
            record.error_code = 10
            return self._error(10, None, 400, "(#10) Only one private reply can be sent to "
                                              "the author of this comment.")
        n = next(self._ids)
        if body.get("messaging_product") == "whatsapp":
            wamid = "wamid." + base64.b64encode(
                hashlib.sha256(f"{account_id}:{n}".encode()).digest()[:24]
            ).decode()
            record.message_id = wamid
            who = body.get("to") or body.get("recipient")
            contact = {"input": who, "wa_id": who} if body.get("to") else {
                "input": who, "user_id": who}
            return web.json_response({
                "messaging_product": "whatsapp",
                "contacts": [contact],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            })
        mid = f"m_fake{n:012d}" + hashlib.sha1(account_id.encode()).hexdigest()[:16]
        record.message_id = mid
        recipient = body.get("recipient") or {}
        comment = recipient.get("comment_id")
        if comment:
            self._replied_comments.add(str(comment))
            return web.json_response({"recipient_id": self._comment_authors.get(str(comment), ""),
                                      "message_id": mid})
        return web.json_response({"recipient_id": recipient.get("id"), "message_id": mid})

    def refusal(self, account_id: str, body: dict[str, Any]) -> str | None:
        """What Meta would refuse in this body, or None."""
        channel = self._channel_of(account_id)
        if body.get("messaging_product") == "whatsapp":
            if not (body.get("to") or body.get("recipient")):
                return "The parameter to is required."
            if body.get("type", "text") == "text":
                text = body.get("text")
                text_body = text.get("body") if isinstance(text, dict) else None
                if not isinstance(text_body, str) or not text_body:
                    return "The parameter text['body'] is required."
                if len(text_body) > WHATSAPP_MAX_CHARS:
                    return "Param text['body'] must be at most 4096 characters long."
            if body.get("type") == "interactive":
                return _invalid_interactive(body.get("interactive"))
            kind = body.get("type")
            if kind in ("image", "document", "audio", "video", "sticker"):
                media = body.get(kind)
                if not isinstance(media, dict) or not (media.get("link") or media.get("id")):
                    return f"The parameter {kind}['link'] or {kind}['id'] is required."
                link = media.get("link")
                if link is not None and not str(link).startswith(("https://", "http://")):
                    return f"Param {kind}['link'] must be a URL."
            return None
        if channel == "whatsapp":
            return "The parameter messaging_product is required."
        recipient = body.get("recipient")
        if not isinstance(recipient, dict) or not (recipient.get("id")
                                                   or recipient.get("comment_id")):
            return "The parameter recipient is required."
        message = body.get("message")
        if not isinstance(message, dict):
            return "The parameter message is required."
        text = message.get("text")
        attachment = message.get("attachment")
        if text is None and attachment is None:
            return "Message must have text or an attachment"
        if attachment is not None:
            payload = attachment.get("payload") if isinstance(attachment, dict) else None
            if (not isinstance(payload, dict) or attachment.get("type") not in (
                    "image", "file", "audio", "video", "template")
                    or not (payload.get("url") or payload.get("attachment_id")
                            or attachment.get("type") == "template")):
                return "param message[attachment] must have a type and a payload url"
        if text is not None:
            if not isinstance(text, str) or not text:
                return "Message text is empty"
            if channel == "instagram" and len(text.encode("utf-8")) > INSTAGRAM_MAX_BYTES:
                return "Length of param message[text] must be less than or equal to 1000"
            if len(text) > MESSENGER_MAX_CHARS:
                return "Length of param message[text] must be less than 2000 characters"
        metadata = message.get("metadata")
        if isinstance(metadata, str) and len(metadata) > 1000:
            return "Param message[metadata] must be at most 1000 characters long."
        quick = message.get("quick_replies")
        if quick is not None:
            if not isinstance(quick, list) or not 1 <= len(quick) <= 13:
                return "param message[quick_replies] must have between 1 and 13 items"
            for q in quick:
                if not isinstance(q, dict) or q.get("content_type") != "text":
                    return "param message[quick_replies][content_type] must be text"
                title, payload = q.get("title"), q.get("payload")
                if not isinstance(title, str) or not 0 < len(title) <= 20:
                    return "param title must be at most 20 characters"
                if not isinstance(payload, str) or not 0 < len(payload) <= 1000:
                    return "param payload must be at most 1000 characters"
        return None

    async def _h_media(self, request: web.Request) -> web.Response:
        await self._delay()
        media_id = request.match_info["media_id"]
        media = self._media.get(media_id)
        token = self._bearer(request)
        mention = _MENTION_FIELDS.fullmatch(request.query.get("fields", ""))
        if media is None and mention is not None:
            account = self._accounts.get(media_id)
            if account is None or token not in account.tokens:
                return self._error(190, None, 401)
            self.mention_requests.append((media_id, request.query["fields"]))
            edge, target = mention["edge"], mention["id"]
            wanted = mention["fields"].split(",")
            found = self._mentions.get((media_id, edge, target))
            if found is None:
                return self._error(100, None, 400, "Invalid parameter")
            names = {w.split("{", 1)[0] for w in wanted}
            return web.json_response({edge: {k: v for k, v in found.items()
                                             if k in names or k == "id"}, "id": media_id})
        if media is None and media_id in self._profiles:
            if not self._token_ok(None, token):
                return self._error(190, None, 401)
            self.profile_requests.append(media_id)
            profile = self._profiles[media_id]
            asked = request.query.get("fields", "").split(",")
            return web.json_response({"id": media_id, **{k: v for k, v in profile.items()
                                                          if k in asked}})
        if media is None:
            if not self._token_ok(None, token):
                return self._error(190, None, 401)
            return self._error(100, 33, 400, f"Unsupported get request. Object with ID "
                                              f"'{media_id}' does not exist")
        if not self._token_ok(media.account_id, token):
            return self._error(190, None, 401)
        return web.json_response({
            "messaging_product": "whatsapp",
            "url": f"{self.root_url}/_fake/media/{media_id}",
            "mime_type": media.mime_type,
            "sha256": hashlib.sha256(media.content).hexdigest(),
            "file_size": len(media.content),
            "id": media_id,
        })

    async def _h_templates(self, request: web.Request) -> web.Response:
        await self._delay()
        if not self._token_ok(None, self._bearer(request)):
            return self._error(190, None, 401)
        waba = request.match_info["waba_id"]
        status = request.query.get("status")
        data = [t for t in self._templates.get(waba, [])
                if status is None or t["status"] == status]
        return web.json_response({"data": data, "paging": {"cursors": {}}})

    async def _h_download(self, request: web.Request) -> web.Response:
        await self._delay()
        media = self._media.get(request.match_info["media_id"])
        if media is None:
            return web.Response(status=404)
        if not self._token_ok(media.account_id, self._bearer(request)):
            return web.Response(status=401)
        if self._download_failures:
            return web.Response(status=self._download_failures.pop(0))
        self.downloads.append(request.match_info["media_id"])
        return web.Response(body=media.content, content_type=media.mime_type)

    async def _h_cdn(self, request: web.Request) -> web.Response:
        await self._delay()
        found = self._cdn.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="Not Found")
        media, expires = found
        if expires is not None and time.time() > expires:
            return web.Response(status=403, text="URL signature expired")
        if self._download_failures:
            return web.Response(status=self._download_failures.pop(0))
        self.downloads.append(request.match_info["name"])
        return web.Response(body=media.content, content_type=media.mime_type)

    # --- control endpoints ----------------------------------------------------------
    async def _h_sends(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(s) for s in self.sends[_since(request):]])

    async def _h_signals(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(s) for s in self.signals[_since(request):]])

    async def _h_attempts(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(s) for s in self.attempts[_since(request):]])

    async def _h_register(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.register(str(data["account_id"]), str(data["token"]), channel=data.get("channel"))
        return web.json_response({"ok": True})

    async def _h_fail(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.fail_next(
            str(data["account_id"]), int(data["code"]), data.get("subcode"),
            int(data.get("http_status", 400)), int(data.get("times", 1)), data.get("message"),
        )
        return web.json_response({"ok": True})

    async def _h_webhooks(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.webhooks.configure(data.get("url"), str(data.get("app_secret") or ""),
                                delay_s=float(data.get("delay_ms", 50)) / 1000.0,
                                app_id=data.get("app_id"))
        return web.json_response({"ok": True})

    async def _h_webhook_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.webhooks.stats())

    async def stop(self) -> None:
        await self.webhooks.aclose()
        await super().stop()

    async def _h_storm(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.storm(float(data["seconds"]), [
            (int(e.get("http_status", 500 if int(e["code"]) == 0 else 400)), int(e["code"]),
             None if e.get("subcode") is None else int(e["subcode"]))
            for e in data["errors"]])
        return web.json_response({"ok": True})


def _invalid_interactive(interactive: object) -> str | None:
    """What the Cloud API refuses in an interactive reply-button or list message."""
    if not isinstance(interactive, dict):
        return "The parameter interactive is required."
    body = interactive.get("body")
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        return "The parameter interactive['body']['text'] is required."
    if len(text) > 1024:
        return "Param interactive['body']['text'] must be at most 1024 characters long."
    action = interactive.get("action")
    if not isinstance(action, dict):
        return "The parameter interactive['action'] is required."
    kind = interactive.get("type")
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return "Param interactive['action']['buttons'] must have 1 to 3 buttons."
        titles = []
        for b in buttons:
            reply = b.get("reply") if isinstance(b, dict) else None
            if not isinstance(reply, dict) or b.get("type") != "reply":
                return "Param interactive['action']['buttons'][]['reply'] is required."
            title, ident = reply.get("title"), reply.get("id")
            if not isinstance(title, str) or not 0 < len(title) <= 20:
                return "Param button title must be at most 20 characters long."
            if not isinstance(ident, str) or not 0 < len(ident) <= 256:
                return "Param button id must be at most 256 characters long."
            titles.append(title)
        if len(set(titles)) != len(titles):
            return "Button titles must be unique."
        return None
    if kind == "list":
        label = action.get("button")
        if not isinstance(label, str) or not 0 < len(label) <= 20:
            return "Param interactive['action']['button'] must be at most 20 characters."
        sections = action.get("sections")
        if not isinstance(sections, list) or not sections:
            return "Param interactive['action']['sections'] is required."
        rows = [r for sec in sections if isinstance(sec, dict)
                for r in (sec.get("rows") or [])]
        if not 1 <= len(rows) <= 10:
            return "A list message holds 1 to 10 rows."
        for r in rows:
            if not isinstance(r, dict):
                return "Param rows must be objects."
            title, ident, desc = r.get("title"), r.get("id"), r.get("description")
            if not isinstance(title, str) or not 0 < len(title) <= 24:
                return "Param row title must be at most 24 characters long."
            if not isinstance(ident, str) or not 0 < len(ident) <= 200:
                return "Param row id must be at most 200 characters long."
            if desc is not None and (not isinstance(desc, str) or len(desc) > 72):
                return "Param row description must be at most 72 characters long."
        return None
    return f"Interactive type {kind!r} is not supported here."


def _since(request: web.Request) -> int:
    """``?since=N``: skip the first N records (cheap polling by a benchmark or the demo)."""
    try:
        return max(0, int(request.query.get("since", "0")))
    except ValueError:
        return 0


def spawn_graph(*, latency_ms: float = 0.0, strict: bool = False,
                webhook_url: str | None = None, app_secret: str = "",
                webhook_delay_ms: float = 50.0) -> FakeProcess:
    """Run the fake Graph API in a child process; its base URL is ``root_url + '/v25.0'``.
    With ``webhook_url`` and ``app_secret`` it posts Meta's echoes / statuses there."""
    args = ["--latency-ms", str(latency_ms)]
    if strict:
        args.append("--strict")
    if webhook_url:
        args += ["--webhook-url", webhook_url, "--webhook-delay-ms", str(webhook_delay_ms)]
    if app_secret:  # passed in the environment, not on a command line others can read
        return spawn_fake("mtdesk.fakes.graph", *args,
                          env={_APP_SECRET_VARIABLE: app_secret})
    return spawn_fake("mtdesk.fakes.graph", *args)


_APP_SECRET_VARIABLE = "MTDESK_FAKE_GRAPH_APP_SECRET"


def main(argv: list[str] | None = None) -> None:
    import os

    parser = process_arguments("Fake Meta Graph API (records sends; error injection)")
    parser.add_argument("--strict", action="store_true", help="unregistered accounts answer 190")
    parser.add_argument("--webhook-url", default=None,
                        help="post Meta's echoes / statuses of accepted sends here")
    parser.add_argument("--webhook-delay-ms", type=float, default=50.0,
                        help="delay before each webhook (default 50)")
    args = parser.parse_args(argv)
    fake = FakeGraphAPI(latency_s=args.latency_ms / 1000.0, strict=args.strict,
                        host=args.host, port=args.port, webhook_url=args.webhook_url,
                        app_secret=os.environ.get(_APP_SECRET_VARIABLE, ""),
                        webhook_delay_s=args.webhook_delay_ms / 1000.0)
    asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
