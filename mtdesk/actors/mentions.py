"""What an Instagram @mention of the business says, fetched after it is recorded.

Meta's ``mentions`` webhook carries only ids (``media_id``, and ``comment_id`` for a
mention in a comment); reading the mention is a Graph call with the account's token
(Instagram Platform › IG User › *Mentioned Comment* and *Mentioned Media*):

- in a comment: ``GET /{ig-user-id}?fields=mentioned_comment.comment_id({comment-id})
  {id,text,timestamp,like_count,media{id,permalink}}``
- in a caption: ``GET /{ig-user-id}?fields=mentioned_media.media_id({media-id})
  {id,caption,media_type,media_url,timestamp,username}``

:class:`Mentions` (one per shard) makes that call in a task of its own once the shard
recorded the mention (never on the webhook path, never holding the conversation), and
stores what it says as one history entry of the account's mentions feed: kind
``mention_content``, ``reply_to`` = the mention's event id, ``text`` = the comment or
caption, ``user_name`` = the author's username (when Meta gives it), the media as an
attachment (its type and address). It is stored like a message, so sealed with the
tenant's data key, exported, retained and erased with the feed; once per mention (its
own event id, ``mentioned:{mention id}``, through the reply records). Best effort: a
failure (an error, comments disabled on the media, no token) is counted
(``mention_unread``) and leaves the mention recorded without its content.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from mtdesk.core.events import Attachment, Mention
from mtdesk.core.history import StoredMessage

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation

log = logging.getLogger(__name__)

CONTENT_KIND: Final = "mention_content"
COMMENT_FIELDS: Final = "id,text,timestamp,like_count,media{id,permalink}"
MEDIA_FIELDS: Final = "id,caption,media_type,media_url,timestamp,username"

# (account id, fields) → the Graph answer's JSON object, or None (best effort).
FetchMention = Callable[[str, str], Awaitable[dict[str, object] | None]]


def mention_fields(mention: Mention) -> tuple[str, str]:
    """(the answer's key, the ``fields`` parameter) reading ``mention``."""
    if mention.comment_id:
        return ("mentioned_comment",
                f"mentioned_comment.comment_id({mention.comment_id}){{{COMMENT_FIELDS}}}")
    return ("mentioned_media",
            f"mentioned_media.media_id({mention.media_id}){{{MEDIA_FIELDS}}}")


def _text(found: dict[str, object], name: str) -> str | None:
    value = found.get(name)
    return value if isinstance(value, str) and value else None


def _time_ms(found: dict[str, object], default: int) -> int:
    """Graph's ``timestamp`` ("2026-12-02T06:09:08+0000") in epoch ms; else ``default``."""
    raw = _text(found, "timestamp")
    if raw is None:
        return default
    try:
        return int(dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
    except ValueError:
        return default


def content_of(mention: Mention, answer: dict[str, object]) -> StoredMessage | None:
    """The history entry of what ``answer`` (the Graph call's JSON) says of ``mention``;
    None when it says nothing."""
    key, _fields = mention_fields(mention)
    found = answer.get(key)
    if not isinstance(found, dict):
        return None
    text = _text(found, "text") or _text(found, "caption")
    media = found.get("media")
    url = _text(found, "media_url") or (
        _text(media, "permalink") if isinstance(media, dict) else None)
    kind = (_text(found, "media_type") or "link").lower()
    attachments = (Attachment(type=kind, url=url),) if url else ()
    if text is None and not attachments:
        return None
    return StoredMessage(
        direction="in", message_id=f"mentioned:{mention.event_id}", kind=CONTENT_KIND,
        channel=mention.channel, account_id=mention.account_id, user_id=mention.user_id,
        timestamp_ms=_time_ms(found, mention.timestamp_ms), text=text,
        attachments=attachments, reply_to=mention.event_id, status="recorded",
        media_id=mention.media_id, comment_id=mention.comment_id,
        user_name=_text(found, "username"))


class Mentions:
    """One per shard: reads what each recorded mention says, off the conversation."""

    def __init__(self, fetch: FetchMention) -> None:
        self._fetch = fetch
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, conv: Conversation, mention: Mention) -> None:
        """``mention`` was recorded in ``conv`` (the account's mentions feed): read it (no
        wait)."""
        task = asyncio.create_task(self._read(conv, mention), name="mention")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, conv: Conversation, mention: Mention) -> None:
        s = conv.services
        try:
            _key, fields = mention_fields(mention)
            answer = await self._fetch(mention.account_id, fields)
            entry = content_of(mention, answer) if answer is not None else None
            if entry is None:
                s.metrics.outcome("mention_unread")
                return
            if conv.forgotten:  # erased meanwhile: nothing of it may be written again
                return
            await s.replies.store_inbound(conv.tenant_id, entry.message_id, entry,
                                          now_ms=conv.now_ms(), skip_reason=CONTENT_KIND)
            s.metrics.outcome("mention_read")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # best effort: the mention stays recorded without it
            s.metrics.outcome("mention_unread")
            log.info("mention not read error=%s", type(exc).__name__)

    async def wait(self) -> None:
        """Until every read under way is done (tests, a draining shard)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001,S110 - closing: cancelled or failed
                pass
