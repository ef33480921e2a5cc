"""Who the person is, for the inbox: their name (and picture where Meta gives one).

WhatsApp puts the contact's profile name on every message (``contacts[].profile.name``,
our ``user_name``): it goes on the card in the same script that stores the message
(:meth:`Profiles.with_message`, called by admission; no command of its own). Messenger
and Instagram need a Graph call, ``GET /{user-id}`` with
``first_name,last_name,profile_pic`` (Messenger) or ``name,username,profile_pic``
(Instagram), made with the channel's token. Either way the result goes on the
conversation's inbox card (:meth:`mtdesk.core.inbox.Inbox.set_profile`: only while the
conversation exists, so an erasure is never undone by a late answer), at most once a
day per conversation and shard process (kept in memory: no Redis read per message; a
profile Meta does not give writes nothing), off the answer's path (a task of its own:
the reply never waits for it), best effort: a failure is logged by type, never raised.
Names and pictures never reach the logs.

The picture itself (Meta's profile_pic address expires within days, and the console
loads nothing from another host) is kept with the conversation's media
(:class:`~mtdesk.core.media.MediaStore`, sealed like a customer's file, message id
:data:`PICTURE_ID`) when :class:`Pictures` are given: the card names it (``picture_ref``),
the console shows it through ``…/media/{ref}``, and it goes with the conversation's
media: trimmed by retention, erased with the person. Only while the conversation exists
(the bytes stored after the erasure are removed again), the day's previous copy dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from mtdesk.actors.watchers import always
from mtdesk.core.events import Message, Postback
from mtdesk.core.inbox import Inbox
from mtdesk.core.media import MediaStore

log = logging.getLogger(__name__)

REFRESH_MS: Final = 24 * 3600 * 1000
_WAIT_TRIES: Final = 20
_WAIT_S: Final = 0.5
_FIELDS: Final = {"messenger": "first_name,last_name,profile_pic",
                  "instagram": "name,username,profile_pic"}

PICTURE_ID: Final = "profile-picture"
PICTURE_MAX_BYTES: Final = 1024 * 1024
PICTURE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# (channel, account id, user id, fields) → the profile's JSON object, or None.
FetchProfile = Callable[[str, str, str, str], Awaitable[dict[str, object] | None]]
# (credentials, url=, max_bytes=) → the bytes and MIME type (GraphSender.download).
Download = Callable[..., Awaitable[tuple[bytes, str | None]]]


def name_of(channel: str, profile: dict[str, object]) -> str | None:
    """The name to show from a Graph profile answer."""
    def text(key: str) -> str:
        value = profile.get(key)
        return value.strip() if isinstance(value, str) else ""
    if channel == "instagram":
        return text("name") or (("@" + text("username")) if text("username") else None)
    full = " ".join(p for p in (text("first_name"), text("last_name")) if p)
    return full or text("name") or None


def picture_of(profile: dict[str, object]) -> str | None:
    value = profile.get("profile_pic")
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


class Pictures:
    """People's pictures kept with their conversation's media."""

    def __init__(self, download: Download, store: MediaStore, now_ms: Callable[[], int]) -> None:
        self._download = download
        self._store = store
        self._now_ms = now_ms

    async def keep(self, tenant_id: str, conversation: str, url: str) -> str | None:
        """The picture at Meta's ``url`` stored; its ref (None: not a picture)."""
        content, mime = await self._download(None, url=url, max_bytes=PICTURE_MAX_BYTES)
        kind = (mime or "").split(";")[0].strip().lower()
        if kind not in PICTURE_TYPES:
            return None
        stored = await self._store.put(tenant_id, conversation, PICTURE_ID, 0, content, kind,
                                       now_ms=self._now_ms())
        return stored.ref

    async def drop(self, tenant_id: str, conversation: str, ref: str) -> None:
        await self._store.drop(tenant_id, conversation, ref)


class Profiles:
    """One per shard: keeps the inbox cards' names and pictures current."""

    def __init__(self, inbox: Inbox, fetch: FetchProfile, now_ms: Callable[[], int], *,
                 pictures: Pictures | None = None,
                 watched: Callable[[str], bool] | None = None) -> None:
        self._inbox = inbox
        self._watched = watched or always  # an inbox listens on the tenant's live channel
        self._fetch = fetch
        self._pictures = pictures
        self._now_ms = now_ms
        self._tasks: set[asyncio.Task[None]] = set()
        self._asked: dict[str, int] = {}  # "tenant|conversation" -> when looked at (ms)

    def note(self, tenant_id: str, event: Message | Postback) -> None:
        """A message of the person came in: look their profile up when due (no wait).
        WhatsApp's name comes with the message: :meth:`with_message` gives it to the
        message's own store instead."""
        if event.channel == "whatsapp" or not self._due(tenant_id, event):
            return
        task = asyncio.create_task(self._update(tenant_id, event), name="profile")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def with_message(self, tenant_id: str, event: Message | Postback) -> str | None:
        """The name to put on the inbox card in the same write as the message (WhatsApp:
        ``contacts[].profile.name``), when due (once a day per conversation, as a
        lookup); None otherwise. No command, no round trip of its own. Noted as written
        by :meth:`written` once the message is stored (a store that failed and is
        retried takes the name again)."""
        if event.channel != "whatsapp" or not event.user_name:
            return None
        return event.user_name if self._is_due(tenant_id, event) else None

    def written(self, tenant_id: str, event: Message | Postback) -> None:
        """The name :meth:`with_message` gave went on the card with the message."""
        self._due(tenant_id, event)

    def _is_due(self, tenant_id: str, event: Message | Postback) -> bool:
        last = self._asked.get(f"{tenant_id}|{event.conversation}", 0)
        return self._now_ms() - last >= REFRESH_MS

    def _due(self, tenant_id: str, event: Message | Postback) -> bool:
        """Whether the person's profile is due now; noted as looked at if so."""
        if not self._is_due(tenant_id, event):
            return False
        if len(self._asked) > 100_000:  # bounded: forget the oldest half
            for old in sorted(self._asked, key=self._asked.__getitem__)[:50_000]:
                del self._asked[old]
        self._asked[f"{tenant_id}|{event.conversation}"] = self._now_ms()
        return True

    async def _update(self, tenant_id: str, event: Message | Postback) -> None:
        conv = event.conversation
        try:
            now = self._now_ms()
            profile = await self._fetch(event.channel, event.account_id, event.user_id,
                                        _FIELDS[event.channel])
            name = name_of(event.channel, profile) if profile else None
            picture = picture_of(profile) if profile else None
            if not name and not picture:
                return  # nothing to show: nothing written (looked at again tomorrow)
            # The message this came with may not be stored yet (a new conversation is
            # indexed by its admission, in the same moment): wait for it a little.
            for _ in range(_WAIT_TRIES):
                if await self._inbox.set_profile(tenant_id, conv, name=name, picture=picture,
                                                 now_ms=now, told=self._watched(tenant_id)):
                    break
                await asyncio.sleep(_WAIT_S)
            else:
                return
            if self._pictures is not None and picture:
                await self._keep(self._pictures, tenant_id, conv, picture, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # best effort: the inbox shows the id instead
            log.info("profile not updated channel=%s error=%s", event.channel,
                     type(exc).__name__)

    async def _keep(self, pictures: Pictures, tenant_id: str, conv: str, url: str,
                    now: int) -> None:
        """The picture stored and named on the card; the day's previous copy dropped, or
        this one when the conversation was erased meanwhile."""
        before = await self._inbox.picture_ref(tenant_id, conv)
        try:
            ref = await pictures.keep(tenant_id, conv, url)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the name still shows; the picture waits for tomorrow
            log.info("profile picture not kept error=%s", type(exc).__name__)
            return
        if ref is None:
            return
        if not await self._inbox.set_profile(tenant_id, conv, name=None, picture=None,
                                             now_ms=now, picture_ref=ref,
                                             told=self._watched(tenant_id)):
            await pictures.drop(tenant_id, conv, ref)  # erased meanwhile
        elif before and before != ref:
            await pictures.drop(tenant_id, conv, before)

    async def settled(self) -> None:
        """Wait for the look-ups under way to end."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled or failed: nothing to keep
                pass
