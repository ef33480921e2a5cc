"""Instagram messaging (``object: "instagram"``), comments and mentions.

Instagram sends the Messenger Platform's ``messaging`` items (same wire shape): text,
attachments (image, video, audio, file, ``share``, ``story_mention``, ``ig_reel``),
story replies (``reply_to.story``), reactions, postbacks, echoes, ``read`` (seen, with
the message id), ``message_edit`` and deleted messages (``message.is_deleted``). So
this adapter is the Messenger translation under the ``instagram`` channel name; what
differs is documented here and covered by the Instagram tests.

Comments and mentions come as ``changes`` (:func:`change_events`):

- ``comments`` / ``live_comments``: ``{"id", "from": {"id", "username"}, "text",
  "media": {"id", "media_product_type", "ad_id"?}, "parent_id"?}`` → a
  :class:`~mtdesk.core.events.Comment` (its author's conversation); a comment whose
  author is the account itself is the business's own (``by_business``).
- ``mentions``: ``{"media_id", "comment_id"?}`` → a :class:`~mtdesk.core.events.Mention`
  in the account's mentions feed (event id ``mention:{account}:{comment or media id}``).

The change carries no time of its own: the entry's ``time`` (when Meta sent it, epoch
seconds) stands for it.
"""

from __future__ import annotations

from typing import Final

import msgspec

from mtdesk.channels.messenger.inbound import MessagingItem, messaging_events
from mtdesk.core.events import MENTIONS_USER, Comment, Event, Mention

OBJECT = "instagram"
COMMENT_FIELDS: Final = frozenset({"comments", "live_comments"})
MENTION_FIELD: Final = "mentions"
CHANGE_FIELDS: Final = COMMENT_FIELDS | {MENTION_FIELD}

Id = str | int


class _Author(msgspec.Struct, frozen=True, gc=False):
    id: Id | None = None
    username: str | None = None


class _Media(msgspec.Struct, frozen=True, gc=False):
    id: Id | None = None
    media_product_type: str | None = None
    ad_id: Id | None = None


class CommentValue(msgspec.Struct, frozen=True, gc=False):
    """The value of a ``comments`` / ``live_comments`` change (only the fields used)."""

    id: Id | None = None
    author: _Author | None = msgspec.field(default=None, name="from")
    text: str | None = None
    media: _Media | None = None
    parent_id: Id | None = None


class MentionValue(msgspec.Struct, frozen=True, gc=False):
    """The value of a ``mentions`` change."""

    media_id: Id | None = None
    comment_id: Id | None = None


_comment_decoder = msgspec.json.Decoder(CommentValue)
_mention_decoder = msgspec.json.Decoder(MentionValue)


def instagram_events(entry_id: str, item: MessagingItem, unknown: list[str]) -> list[Event]:
    """Normalized events of one Instagram ``messaging`` item."""
    return messaging_events("instagram", entry_id, item, unknown)


def entry_time_ms(time: int | float | str | None) -> int:
    """An entry's ``time`` (epoch seconds; milliseconds are read as such) in milliseconds."""
    try:
        value = int(float(time or 0))
    except (TypeError, ValueError):
        return 0
    if value <= 0:
        return 0
    return value * 1000 if value < 100_000_000_000 else value


def _id(value: Id | None) -> str:
    return "" if value is None else str(value)


def change_events(field: str, entry_id: str, entry_ms: int, raw: bytes,
                  unknown: list[str]) -> list[Event]:
    """The events of one ``comments``, ``live_comments`` or ``mentions`` change value.
    Raises ``msgspec.DecodeError`` / ``ValidationError`` for a value of another shape; a
    value without the ids an event needs is counted in ``unknown`` instead."""
    if field == MENTION_FIELD:
        mention = _mention_decoder.decode(raw)
        media_id, comment_id = _id(mention.media_id), _id(mention.comment_id)
        if not media_id and not comment_id:
            unknown.append("instagram:mentions:empty")
            return []
        return [Mention(
            event_id=f"mention:{entry_id}:{comment_id or media_id}", channel="instagram",
            account_id=entry_id, user_id=MENTIONS_USER, timestamp_ms=entry_ms,
            media_id=media_id, comment_id=comment_id or None)]
    comment = _comment_decoder.decode(raw)
    comment_id = _id(comment.id)
    author = _id(comment.author.id) if comment.author is not None else ""
    if not comment_id or not author:
        unknown.append(f"instagram:{field}:incomplete")
        return []
    media = comment.media or _Media()
    return [Comment(
        event_id=comment_id, channel="instagram", account_id=entry_id, user_id=author,
        timestamp_ms=entry_ms,
        user_name=comment.author.username if comment.author is not None else None,
        text=comment.text, media_id=_id(media.id) or None,
        media_type=media.media_product_type, parent_id=_id(comment.parent_id) or None,
        live=field == "live_comments", ad_id=_id(media.ad_id) or None,
        by_business=author == entry_id)]
