"""The message store: every inbound and outbound message of a tenant, for history,
analytics, retention, deletion and export.

Layout (all under ``mt:t:{tenant}:``, names from :mod:`mtdesk.core.keys`):

``keys.history(tid, conv)`` — a Redis **stream**, one entry per stored message, oldest
first. Entry ids are auto ids, so the id's millisecond part is the time the message was
*stored*: retention trims with ``XTRIM key MINID <cutoff_ms>`` and deletion of a
conversation is ``DEL``. Each entry has one field ``m``: a msgpack :class:`StoredMessage`.
Entries are never rewritten; an outbound message's *current* delivery status lives in
the outbound hash below (joined by :meth:`MessageStore.read`).

``keys.imported(tid, conv)`` — a **sorted set** of the conversation's imported messages
(WhatsApp Business app history, kind ``imported``): entry id → the time the message was
written. Their entry ids are import times, months after some were written; retention
removes them by this time (:meth:`MessageStore.expire_imported`), so "kept at most 12
months" counts from when each was written.

``keys.conversations(tid)`` — a **sorted set**: conversation key → last activity (ms).
Conversation keys are ``"{channel}:{account_id}:{user_id}"``
(:func:`mtdesk.core.events.conversation_key`). Retention/deletion should ``ZREM`` a
conversation whose stream is gone.

``keys.outbound(tid, graph_message_id)`` — a **hash** per message we (or a human agent)
sent: ``conv`` (conversation key), ``entry`` (its history entry id; may be empty when a
status arrived before our own record of the send), ``status`` (``sent`` < ``delivered`` <
``read``; ``failed`` is terminal; absent until Meta reports one: the stored message's
own status stands), ``reason`` (e.g. ``"outside the 24 h window"`` for WhatsApp error
131047), ``updated_ms``. Status only moves forward (a Lua script). Storing a message
writes only the link and its time (one ``HSET``); the retention sweep removes the hash
by its last update (``keys.OUTBOUND``, by record age), like the history entry it names,
and a status sets the retention period as its TTL.

Inbound messages of end users who restricted processing are stored like any other (the
restriction forbids processing, not keeping); the privacy module's export/erasure reads
them with :meth:`MessageStore.iter_conversations` and :meth:`MessageStore.read`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal

import msgspec
from redis.exceptions import ResponseError

from mtdesk.core import keys
from mtdesk.core.errors import ValidationError
from mtdesk.core.events import Attachment, Comment, Event, Postback, Reaction, Receipt, Status
from mtdesk.core.media import MediaRecord
from mtdesk.core.redis import Redis, as_entries, as_hash, as_scored
from mtdesk.core.scripts import LuaScript, lua_source
from mtdesk.core.sealing import TenantCipher, TenantKey

Direction = Literal["in", "out"]

# Outbound status order; failed is terminal and outranks everything.
STATUS_RANK: dict[str, int] = {"sent": 1, "delivered": 2, "read": 3, "failed": 9}
OUTSIDE_WINDOW = "outside the 24 h window"
# The entry recording what was fetched of an inbound message's attachments (and a voice
# note's transcript): ``reply_to`` is the message, ``media`` the references.
MEDIA_KIND = "media"


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One stored message.

    ``message_id`` is the inbound event id (``mid``/``wamid``, an Instagram comment's
    id) or the Graph message id of an outbound one. ``kind``: ``message``, ``postback``,
    ``reaction``, ``unsend``, ``edit``, ``comment`` (``reply_to``: the comment it
    answers, if any), ``mention``, ``unsupported`` (inbound); ``reply`` (the bot),
    ``agent`` (a human agent from the inbox, or from our console with its ``author``),
    ``echo`` (our own send seen only through
    its echo); ``media`` (inbound: what was fetched of the attachments of the message
    ``reply_to`` names, ``media`` holding the references and ``text`` a voice note's
    transcript). ``status`` for inbound is
    ``received`` (to be answered) or ``skipped`` with ``reason``; for outbound it is the
    status at the time of storing — :meth:`MessageStore.read` joins the current one.
    """

    direction: Direction
    message_id: str
    kind: str
    channel: str
    account_id: str
    user_id: str
    timestamp_ms: int
    text: str | None = None
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None  # outbound: the inbound event id answered
    provider: str | None = None
    model: str | None = None
    status: str = "received"
    reason: str | None = None
    part: int = 0  # outbound: index of this part of a split reply
    # Instagram comments and mentions: the media commented on (or mentioning the
    # business), the commenter's username, and the comment a mention is in.
    media_id: str | None = None
    user_name: str | None = None
    comment_id: str | None = None
    author: str | None = None  # kind ``agent`` sent from the console: the team member
    media: tuple[MediaRecord, ...] = ()  # kind "media": the attachments' references
    entry: str = ""  # the stream entry id; filled in when read, empty when stored
    # ``text``, ``attachments``, ``media`` (captions, file names, transcripts) and
    # ``user_name`` (a commenter's username) sealed with the tenant's data key (family
    # "message", id ``message_id``); all are empty in the stored form then. None: stored in the
    # clear (written before sealing, or by a process without MTDESK_ENCRYPTION_KEYS).
    sealed: bytes | None = None


class ConversationSummary(msgspec.Struct, frozen=True, kw_only=True):
    conversation: str
    last_activity_ms: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StoredMessage)
SEALED_FAMILY = "message"


class _Private(msgspec.Struct, frozen=True, array_like=True):
    """What of a message is sealed, as one msgpack array (older sealed forms have no
    ``user_name``: it reads as None)."""

    text: str | None
    attachments: tuple[Attachment, ...]
    media: tuple[MediaRecord, ...]
    user_name: str | None = None


_private_decoder = msgspec.msgpack.Decoder(_Private)


def encode_message(message: StoredMessage, key: TenantKey | None = None) -> bytes:
    """The stored form; with an enabled ``key`` the text, attachments, media references
    and a commenter's username are sealed."""
    if key is not None and key.enabled and (
            message.text is not None or message.attachments or message.media
            or message.user_name is not None):
        private = _encoder.encode(_Private(message.text, message.attachments, message.media,
                                           message.user_name))
        message = msgspec.structs.replace(
            message, text=None, attachments=(), media=(), user_name=None,
            sealed=key.seal(SEALED_FAMILY, message.message_id, private))
    return _encoder.encode(message)


CARD_FAMILY = "inbox_card"  # a card's last line, sealed (id: the conversation key)
PROFILE_FAMILY = "inbox_profile"  # a card's name and picture, sealed (id: the same)
CARD_LINE_CHARS = 280


def card_fields(message: StoredMessage, key: TenantKey | None = None, *,
                name: str | None = None) -> bytes:
    """What the history append keeps on the conversation's inbox card from ``message``
    (see core/lua/history_append.lua): its direction, kind, part, time, channel and its
    line (a cut of the text, or its first attachment's type), the line sealed with an
    enabled ``key`` like the message's text (opened by :class:`~mtdesk.core.inbox.Inbox`).
    With ``name`` (a customer's message: the person's name as the message gave it,
    WhatsApp's profile name) the card takes it too, sealed like
    :meth:`~mtdesk.core.inbox.Inbox.set_profile` seals it, in the same write."""
    if message.text is not None:
        line = message.text[:CARD_LINE_CHARS]
    elif message.attachments:
        line = f"[{message.attachments[0].type}]"
    else:
        line = ""
    conv = conversation_of(message)
    sealed = (key.seal_text(CARD_FAMILY, conv, line) if key is not None and key.enabled
              else line.encode())
    head = "\0".join((message.direction, message.kind, str(message.part),
                       str(message.timestamp_ms), message.channel,
                       "1" if message.text is not None else "0"))
    fields = head.encode() + b"\0" + sealed
    if not name:
        return fields
    cut = name[:200]
    blob = (key.seal_text(PROFILE_FAMILY, conv, cut) if key is not None and key.enabled
            else cut.encode())
    return b"\x02" + str(len(blob)).encode() + b"\0" + blob + fields


def decode_message(data: bytes, entry: str = "", key: TenantKey | None = None) -> StoredMessage:
    """A stored message. Sealed text is opened with ``key``; without one it reads as no
    text (ids, kinds, times and statuses are in the clear: enough for retention and
    erasure). Raises DecryptionError when ``key`` cannot open it."""
    message = _decoder.decode(data)
    if message.sealed is not None and key is not None:
        message = open_message(message, key)
    return msgspec.structs.replace(message, entry=entry) if entry else message


def open_message(message: StoredMessage, key: TenantKey) -> StoredMessage:
    """``message`` with its sealed text and attachments opened (as it is when not sealed)."""
    if message.sealed is None:
        return message
    private = _private_decoder.decode(
        key.open(SEALED_FAMILY, message.message_id, message.sealed))
    return msgspec.structs.replace(
        message, text=private.text, attachments=private.attachments, media=private.media,
        user_name=private.user_name if private.user_name is not None else message.user_name,
        sealed=None)


# KEYS: outbound hash; ARGV: status, reason, ttl_s, now_ms, conv.
# Moves status forward only; creates the hash when the status arrives before our record;
# tells the tenant's live channel (keys.live) 's <conv> <entry> <status>'.
UPDATE_STATUS_LUA = """
local rank = {sent=1, delivered=2, read=3, failed=9}
local cur = redis.call('HGET', KEYS[1], 'status')
local new = rank[ARGV[1]]
if new == nil then return 0 end
if cur and (cur == 'failed' or (rank[cur] or 0) >= new) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_ms', ARGV[4])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[2]) end
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[1], 'conv', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local prefix = string.match(KEYS[1], '^([^:]+:t:[^:]+:)out:')
local conv = redis.call('HGET', KEYS[1], 'conv')
if prefix and conv then
  redis.call('PUBLISH', prefix .. 'live', 's ' .. conv .. ' ' ..
    (redis.call('HGET', KEYS[1], 'entry') or '') .. ' ' .. ARGV[1])
end
return 1
"""

# The history append, shared with the reply scripts (mtdesk.actors.replies), which append
# inbound messages and reply parts in the same step as their reply state.
HISTORY_APPEND_LUA = lua_source("mtdesk.core", "lua/history_append.lua")
APPEND_LUA = HISTORY_APPEND_LUA + lua_source("mtdesk.core", "lua/append.lua")
MOVE_LUA = lua_source("mtdesk.core", "lua/history_move.lua")


# KEYS: an inbox card; ARGV: entry ids removed. The card's line goes when it is one of them.
FORGET_LINE_LUA = """
local last = redis.call('HGET', KEYS[1], 'last_entry')
if not last then return 0 end
for i = 1, #ARGV do
  if ARGV[i] == last then return redis.call('HDEL', KEYS[1], 'last_text') end
end
return 0
"""


def inbound_message(
    event: Event, *, status: str = "received", reason: str | None = None
) -> StoredMessage:
    """The stored form of an inbound event (text of a postback is its title or payload,
    of a reaction its emoji; ``reply_to`` is the message replied to, reacted to or
    unsent, or the comment a comment answers)."""
    text: str | None = getattr(event, "text", None)
    if isinstance(event, Postback):
        text = event.title or event.payload
    elif isinstance(event, Reaction):
        text = event.emoji
    reply_to = (getattr(event, "reply_to", None) or getattr(event, "target_id", None)
                or getattr(event, "parent_id", None))
    return StoredMessage(
        direction="in", message_id=event.event_id, kind=str(event.__struct_config__.tag),
        channel=event.channel, account_id=event.account_id, user_id=event.user_id,
        timestamp_ms=event.timestamp_ms, text=text,
        attachments=getattr(event, "attachments", ()), reply_to=reply_to,
        status=status, reason=reason, media_id=getattr(event, "media_id", None),
        user_name=event.user_name if isinstance(event, Comment) else None,
        comment_id=getattr(event, "comment_id", None),
    )


def conversation_of(message: StoredMessage) -> str:
    return f"{message.channel}:{message.account_id}:{message.user_id}"


class MessageStore:
    """Reads and writes the layout above. Cheap to build; holds only the client."""

    def __init__(
        self, redis: Redis, *, retention_days: int = 365, cipher: TenantCipher | None = None,
    ) -> None:
        self._redis = redis
        self._cipher = cipher or TenantCipher.disabled()
        self._ttl_s = retention_days * 86400
        self._append = LuaScript(APPEND_LUA, name="history_append").bind(redis)
        self._status = LuaScript(UPDATE_STATUS_LUA, name="history_status").bind(redis)
        self._move = LuaScript(MOVE_LUA, name="history_move").bind(redis)
        self._forget_line = LuaScript(FORGET_LINE_LUA, name="card_forget_line").bind(redis)

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    # --- writing ----------------------------------------------------------------------
    async def append(
        self, tenant_id: str, message: StoredMessage, *, now_ms: int, at_ms: int | None = None
    ) -> str:
        """Store one message; returns its entry id. Outbound ones get their status hash.

        The entry id's time is Redis's clock by default; ``at_ms`` sets it explicitly
        (entry id ``"{at_ms}-*"``: imports, tests with a fake clock). Ids only grow, so
        an ``at_ms`` older than the conversation's newest entry raises ``ValidationError``
        (field ``at_ms``) and stores nothing.
        """
        if at_ms is not None and at_ms < 0:
            raise ValidationError("at_ms", "must be milliseconds since the epoch, not negative")
        conv = conversation_of(message)
        outbound = message.direction == "out"
        names = [keys.history(tenant_id, conv), keys.conversations(tenant_id)]
        if outbound:
            names.append(keys.outbound(tenant_id, message.message_id))
        key = await self._cipher.key(tenant_id)
        try:
            entry = await self._append(
                keys=names,
                args=[encode_message(message, key), conv, now_ms, self._ttl_s,
                      "*" if at_ms is None else f"{at_ms}-*", card_fields(message, key)],
            )
        except ResponseError as exc:
            if at_ms is not None and "equal or smaller" in str(exc):
                raise ValidationError("at_ms", "older than the conversation's newest entry") from exc
            raise
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def update_status(
        self, tenant_id: str, graph_message_id: str, status: str, *, now_ms: int,
        reason: str = "", conversation: str = "",
    ) -> bool:
        """Move an outbound message's status forward; False when it would go backwards
        (or is unknown). ``failed`` is terminal."""
        if status not in STATUS_RANK:
            return False
        done = await self._status(
            keys=[keys.outbound(tenant_id, graph_message_id)],
            args=[status, reason, self._ttl_s, now_ms, conversation],
        )
        return bool(done)

    async def status_of(self, tenant_id: str, graph_message_id: str) -> dict[str, str]:
        raw = as_hash(await self._redis.hgetall(keys.outbound(tenant_id, graph_message_id)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def mark_read_up_to(
        self, tenant_id: str, conversation: str, status: str, watermark_ms: int, *,
        now_ms: int, scan: int = 50,
    ) -> int:
        """A Messenger/Instagram watermark receipt: every outbound message of the
        conversation sent at or before ``watermark_ms`` (among the last ``scan`` stored
        messages) moves forward to ``status``. Returns how many moved."""
        entries = as_entries(
            await self._redis.xrevrange(keys.history(tenant_id, conversation), count=scan)
        )
        moved = 0
        for entry_id, fields in entries:
            message = decode_message(fields[b"m"])
            if message.direction != "out" or message.timestamp_ms > watermark_ms:
                continue
            _ = entry_id
            if await self.update_status(tenant_id, message.message_id, status, now_ms=now_ms):
                moved += 1
        return moved

    async def apply_receipt(
        self, tenant_id: str, conversation: str, receipt: Receipt, *, now_ms: int
    ) -> None:
        """A Messenger/Instagram delivery/read receipt: the named mids, and every outbound
        message up to the watermark, move forward."""
        for mid in receipt.message_ids:
            await self.update_status(tenant_id, mid, receipt.receipt, now_ms=now_ms,
                                     conversation=conversation)
        if receipt.watermark_ms:
            await self.mark_read_up_to(tenant_id, conversation, receipt.receipt,
                                       receipt.watermark_ms, now_ms=now_ms)

    async def apply_status(
        self, tenant_id: str, conversation: str, status: Status, *, now_ms: int
    ) -> bool:
        """A WhatsApp status (``played`` counts as ``read``; ``deleted``/``warning`` change
        nothing). A failure records its reason: 131047 → :data:`OUTSIDE_WINDOW`."""
        state = {"played": "read"}.get(status.status, status.status)
        reason = ""
        if state == "failed":
            codes = [e.code for e in status.errors]
            if 131047 in codes:
                reason = OUTSIDE_WINDOW
            elif codes:
                reason = f"error {codes[0]}: {status.errors[0].title or ''}".strip()
            else:
                reason = "failed"
        return await self.update_status(tenant_id, status.message_id, state, now_ms=now_ms,
                                        reason=reason, conversation=conversation)

    async def unsend(
        self, tenant_id: str, conversation: str, message_id: str, *, scan: int = 1000,
        direction: Direction = "in",
    ) -> list[StoredMessage]:
        """The person unsent ``message_id``: its inbound entry and every stored version of
        it (edits, ``kind == "edit"`` replying to it) and the record of its media leave
        the history, so neither the
        inbox nor an export shows them again. With ``direction="out"`` it is one of the
        business's own messages (and its edits) that goes. Looks at the last ``scan``
        entries (an unsend comes soon after the message: Meta allows it for a limited
        time). Returns what was removed, oldest first."""
        entries = as_entries(
            await self._redis.xrevrange(keys.history(tenant_id, conversation), count=scan)
        )
        gone: list[StoredMessage] = []
        ids: list[bytes] = []
        for entry_id, fields in entries:
            message = decode_message(fields[b"m"])
            if message.direction != direction:
                continue
            if message.message_id == message_id or (
                message.kind in ("edit", MEDIA_KIND) and message.reply_to == message_id
            ):
                ids.append(entry_id)
                gone.append(message)
        if ids:
            await self._redis.xdel(keys.history(tenant_id, conversation), *ids)
            # The inbox card's line, when it is one of them, goes too.
            await self._forget_line(keys=[keys.inbox_card(tenant_id, conversation)], args=ids)
        return await self.opened(tenant_id, gone[::-1])

    async def find(
        self, tenant_id: str, conversation: str, message_id: str, *,
        direction: Direction, scan: int = 1000,
    ) -> StoredMessage | None:
        """The latest stored version of ``message_id`` (its latest edit's text, else its
        own) among the last ``scan`` entries of ``conversation``, opened; None if absent."""
        entries = as_entries(
            await self._redis.xrevrange(keys.history(tenant_id, conversation), count=scan)
        )
        for _entry_id, fields in entries:
            message = decode_message(fields[b"m"])
            if message.direction == direction and (
                    message.message_id == message_id
                    or (message.kind == "edit" and message.reply_to == message_id)):
                return (await self.opened(tenant_id, [message]))[0]
        return None

    async def note_imported(self, tenant_id: str, conversation: str, entry: str,
                            written_ms: int) -> None:
        """Entry ``entry`` of ``conversation`` is an imported message written at
        ``written_ms``: retention counts from then, not from the import."""
        if entry:
            await self._redis.zadd(keys.imported(tenant_id, conversation),
                                   {entry: max(0, written_ms)})

    async def expire_imported(self, tenant_id: str, conversation: str, cutoff_ms: int) -> int:
        """Remove the imported messages of ``conversation`` written before ``cutoff_ms``
        (whenever they were imported); returns how many history entries went."""
        index = keys.imported(tenant_id, conversation)
        old = await self._redis.zrangebyscore(index, "-inf", f"({cutoff_ms}")
        removed = 0
        if old:
            removed = int(await self._redis.xdel(keys.history(tenant_id, conversation), *old))
            await self._redis.zrem(index, *old)
        return removed

    async def move(self, tenant_id: str, old: str, new: str) -> int:
        """The person's id changed: conversation ``old``'s history becomes ``new``'s (or
        joins it in time order, when ``new`` has some already) and its place in the
        conversation list moves too. The entries keep their ids (their times) and their
        contents; its inbox card and its imported messages' times move too. Returns how many entries moved."""
        if old == new:
            return 0
        return int(await self._move(
            keys=[keys.history(tenant_id, old), keys.history(tenant_id, new),
                  keys.conversations(tenant_id), keys.inbox_card(tenant_id, old),
                  keys.inbox_card(tenant_id, new), keys.imported(tenant_id, old),
                  keys.imported(tenant_id, new)],
            args=[old, new],
        ))

    # --- reading ----------------------------------------------------------------------
    async def conversations(
        self, tenant_id: str, *, offset: int = 0, limit: int = 50
    ) -> list[ConversationSummary]:
        """Most recently active first."""
        rows = as_scored(await self._redis.zrevrange(
            keys.conversations(tenant_id), offset, offset + limit - 1, withscores=True
        ))
        return [ConversationSummary(conversation=c.decode(), last_activity_ms=int(s))
                for c, s in rows]

    async def read(
        self, tenant_id: str, conversation: str, *, start: str = "-", end: str = "+",
        count: int | None = None, join_status: bool = True,
    ) -> list[StoredMessage]:
        """Messages oldest first, with ``entry`` set and outbound ``status``/``reason``
        replaced by the current ones from the outbound hash."""
        entries = as_entries(await self._redis.xrange(
            keys.history(tenant_id, conversation), start, end, count=count
        ))
        messages = await self.opened(tenant_id, [
            decode_message(fields[b"m"], entry_id.decode()) for entry_id, fields in entries])
        if join_status:
            messages = await self._join(tenant_id, messages)
        return messages

    async def opened(self, tenant_id: str, messages: list[StoredMessage]) -> list[StoredMessage]:
        """``messages`` with sealed text opened by the tenant's key (read only when one
        is sealed; DecryptionError when the tenant has none: its data was shredded)."""
        if not any(m.sealed is not None for m in messages):
            return messages
        key = await self._cipher.key(tenant_id, create=False)
        return [open_message(m, key) for m in messages]

    async def iter_conversations(self, tenant_id: str, *, batch: int = 200) -> AsyncIterator[str]:
        """Every conversation key of the tenant (for export, retention, deletion)."""
        cursor = 0
        while True:
            cursor, rows = await self._redis.zscan(
                keys.conversations(tenant_id), cursor, count=batch
            )
            for conv, _score in as_scored(rows):
                yield conv.decode()
            if cursor == 0:
                return

    async def iter_messages(
        self, tenant_id: str, conversation: str, *, batch: int = 500
    ) -> AsyncIterator[StoredMessage]:
        """Every stored message of a conversation, oldest first, in pages."""
        start = "-"
        while True:
            page = await self.read(tenant_id, conversation, start=start, count=batch)
            for message in page:
                yield message
            if len(page) < batch:
                return
            start = "(" + page[-1].entry

    async def _join(
        self, tenant_id: str, messages: Sequence[StoredMessage]
    ) -> list[StoredMessage]:
        outs = [i for i, m in enumerate(messages) if m.direction == "out"]
        if not outs:
            return list(messages)
        pipe = self._redis.pipeline(transaction=False)
        for i in outs:
            pipe.hmget(keys.outbound(tenant_id, messages[i].message_id), "status", "reason")
        rows = await pipe.execute()
        joined = list(messages)
        for i, (status, reason) in zip(outs, rows, strict=True):
            if status is not None:
                joined[i] = msgspec.structs.replace(
                    joined[i], status=status.decode(),
                    reason=reason.decode() if reason else joined[i].reason,
                )
        return joined
