"""The fake Graph API's webhooks: what Meta posts back about the messages a Page sent.

Off until :meth:`MetaWebhooks.configure` names the product's webhook URL and the app
secret (``FakeGraphAPI(webhook_url=…, app_secret=…)``, ``POST /_fake/webhooks``, or the
process's ``--webhook-url`` / ``--app-secret``). Then, for every message send the fake
accepted (never a signal: read marks and typing are not echoed), after ``delay_s``:

- Messenger / Instagram: a ``message_echoes`` event (``object`` ``page`` /
  ``instagram``): ``sender`` the account, ``recipient`` the person, ``message``
  ``{"mid", "is_echo": true, "app_id", "metadata", "text"}`` with the send's own
  ``metadata``, as Meta echoes it;
- WhatsApp: a ``statuses`` item ``{"id": wamid, "status": "sent", "timestamp",
  "recipient_id", "biz_opaque_callback_data"}`` (the send's own callback data).

Events waiting together are posted in one body per ``object`` (at most 100 entries), as
Meta batches under load, serialized as Meta serializes (``meta_json``) and signed with
``X-Hub-Signature-256`` over those bytes. A body not answered 200 (the gateway down,
a 503 while its Redis is) is posted again with back-off, for up to ``retry_for_s``, as
Meta retries. ``stats()`` counts events posted, bodies, retries and events given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mtdesk.fakes.meta import meta_json, sign

MAX_ENTRIES = 100


@dataclass
class _Pending:
    due: float  # time.monotonic()
    obj: str  # the body's "object"
    entry: dict[str, Any]


@dataclass
class WebhookStats:
    events: int = 0  # events acknowledged 200 by the product
    bodies: int = 0
    retries: int = 0
    dropped: int = 0  # given up after retry_for_s
    by_object: dict[str, int] = field(default_factory=dict)


class MetaWebhooks:
    """Queues and posts the echoes / statuses of accepted sends (see the module)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._secret = ""
        self.delay_s = 0.05
        self.app_id = "1517776481860111"
        self.retry_for_s = 60.0
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._posting: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._stats = WebhookStats()

    def configure(self, url: str | None, app_secret: str = "", *, delay_s: float = 0.05,
                  app_id: str | None = None, retry_for_s: float = 60.0) -> None:
        """Post to ``url`` from now on (None: stop posting; what waits is dropped)."""
        self.url = url or None
        self._secret = app_secret
        self.delay_s = max(0.0, delay_s)
        self.retry_for_s = retry_for_s
        if app_id:
            self.app_id = app_id
        if self.url is None:
            self._pending.clear()

    @property
    def on(self) -> bool:
        return self.url is not None and bool(self._secret)

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {"on": self.on, "events": s.events, "bodies": s.bodies, "retries": s.retries,
                "dropped": s.dropped, "waiting": len(self._pending), "by_object": s.by_object}

    def sent(self, channel: str | None, account_id: str, body: dict[str, Any],
             message_id: str, recipient: str | None) -> None:
        """The fake accepted ``body`` for ``account_id`` as ``message_id``."""
        if not self.on or not message_id:
            return
        now = time.time()
        if body.get("messaging_product") == "whatsapp":
            obj, entry = "whatsapp_business_account", self._status(account_id, body, message_id, now)
        else:
            if not recipient:  # a private reply to a comment whose author is unknown
                return
            obj = "instagram" if channel == "instagram" else "page"
            entry = self._echo(account_id, body, message_id, recipient, now)
        self._pending.append(_Pending(time.monotonic() + self.delay_s, obj, entry))
        self._ensure_task()
        self._wake.set()

    def _echo(self, account_id: str, body: dict[str, Any], mid: str, recipient: str,
              now: float) -> dict[str, Any]:
        found = body.get("message")
        sent: dict[str, Any] = found if isinstance(found, dict) else {}
        message: dict[str, Any] = {"mid": mid, "is_echo": True, "app_id": int(self.app_id)}
        for name in ("metadata", "text", "attachment", "quick_replies"):
            if name in sent:
                message[name] = sent[name]
        ms = int(now * 1000)
        return {"id": account_id, "time": ms, "messaging": [{
            "sender": {"id": account_id}, "recipient": {"id": recipient}, "timestamp": ms,
            "message": message}]}

    @staticmethod
    def _status(account_id: str, body: dict[str, Any], wamid: str, now: float) -> dict[str, Any]:
        status: dict[str, Any] = {"id": wamid, "status": "sent", "timestamp": str(int(now))}
        if body.get("to"):
            status["recipient_id"] = body["to"]
        elif body.get("recipient"):
            status["recipient_user_id"] = body["recipient"]
        if body.get("biz_opaque_callback_data"):
            status["biz_opaque_callback_data"] = body["biz_opaque_callback_data"]
        return {"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": account_id},
            "statuses": [status]}}]}

    # --- posting ------------------------------------------------------------------------
    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fake-webhooks")

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._pending[0].due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            due = [p for p in self._pending if p.due <= now]
            self._pending = [p for p in self._pending if p.due > now]
            by_object: dict[str, list[dict[str, Any]]] = {}
            for p in due:
                by_object.setdefault(p.obj, []).append(p.entry)
            for obj, entries in by_object.items():
                for i in range(0, len(entries), MAX_ENTRIES):
                    task = asyncio.create_task(self._deliver(obj, entries[i:i + MAX_ENTRIES]))
                    self._posting.add(task)
                    task.add_done_callback(self._posting.discard)

    async def _deliver(self, obj: str, entries: list[dict[str, Any]]) -> None:
        """Post one body until the product answers 200 (or ``retry_for_s`` is over);
        the posting loop goes on meanwhile with what comes next."""
        raw = meta_json({"object": obj, "entry": entries})
        give_up = time.monotonic() + self.retry_for_s
        delay = 0.25
        while self.url is not None:
            if await self._post(raw):
                s = self._stats
                s.events += len(entries)
                s.bodies += 1
                s.by_object[obj] = s.by_object.get(obj, 0) + len(entries)
                return
            if time.monotonic() + delay > give_up:
                break
            self._stats.retries += 1
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        self._stats.dropped += len(entries)

    async def _post(self, raw: bytes) -> bool:
        url = self.url
        if url is None:
            return False
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        headers = {"Content-Type": "application/json",
                   "X-Hub-Signature-256": sign(raw, self._secret)}
        try:
            async with self._session.post(url, data=raw, headers=headers) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def aclose(self) -> None:
        for task in [t for t in (self._task, *self._posting) if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
