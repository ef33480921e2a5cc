"""The inbox's view of a tenant's conversations: cards, filters, and a person taking over.

Each conversation has a card (``keys.inbox_card``) kept by the history append itself
(``core/lua/history_append.lua``): the last message's line, direction and time, the
person's last message time and unread count; a customer's message reopens a closed
conversation. The shards add the person's name and picture (:meth:`Inbox.set_profile`);
this module adds what people do from the console: assign, close, reopen, read, hand
back, and :meth:`Inbox.queue_reply`, a person's reply.

A card's ``status``: ``closed`` when closed, else ``human`` while the conversation's pause
marker (``keys.paused``) exists (a person replied from the console or from Meta's own
inbox) or another app owns the Messenger/Instagram thread (the handover protocol: the
context's ``thread_owner``, ``thread_owner`` on the card), else ``bot``.

Listing (:meth:`Inbox.page`) walks the conversation index (``keys.conversations``, by
last activity) newest first and reads cards in pipelined batches; filters and the
search look at the cards only, never at the history, and one page looks at no more than
``scan`` conversations (``next`` then continues from where it stopped).

Every change a person makes is told on the tenant's live channel (``keys.live``) as
``c <conversation>``, next to what the history append tells (``m``, ``s``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

import msgspec
from redis.asyncio.client import Pipeline

from mtdesk.core import analytics, keys
from mtdesk.core.errors import DecryptionError
from mtdesk.core.events import (
    AgentReply,
    TemplateSend,
    conversation_key,
    encode_event,
    partition_of,
)
from mtdesk.core.history import CARD_FAMILY, PROFILE_FAMILY
from mtdesk.core.redis import Redis, as_hash, as_scored
from mtdesk.core.scripts import LuaScript
from mtdesk.core.sealing import TenantCipher, is_sealed

# The person's name and picture on a card, sealed with the tenant's key (id: the
# conversation key) like the card's last line.
_SEALED_CARD_FIELDS: Final = {b"last_text": CARD_FAMILY, b"name": PROFILE_FAMILY,
                              b"picture": PROFILE_FAMILY}

Status = Literal["bot", "human", "closed"]
STATUSES: Final = ("bot", "human", "closed")
# A console reply pauses the bot this long when MTDESK_HANDOFF_PAUSE_S is 0 (echo
# hand-offs off): a person who answers from the console always has the conversation.
CONSOLE_PAUSE_S: Final = 24 * 3600


class Card(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation as the inbox lists it."""

    conversation: str
    channel: str
    account_id: str
    user_id: str
    last_activity_ms: int
    name: str | None = None
    picture: str | None = None
    picture_ref: str | None = None  # the picture kept with the conversation's media
    last_text: str | None = None
    last_direction: str | None = None
    last_kind: str | None = None
    last_ms: int = 0
    last_in_ms: int = 0  # the person's last message (Meta's windows count from it)
    unread: int = 0
    status: Status = "bot"
    assignee: str | None = None
    thread_owner: str | None = None  # another app owning the thread (handover protocol)

    def matches(self, query: str) -> bool:
        """Whether ``query`` (case-folded) is in the name, the person's id or the last
        message's line."""
        return any(query in (v or "").casefold()
                   for v in (self.name, self.user_id, self.last_text))


def split_key(conversation: str) -> tuple[str, str, str] | None:
    """(channel, account id, user id) of a conversation key; None if it is not one."""
    parts = conversation.split(":", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _str(raw: Mapping[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return None if value is None else value.decode("utf-8", "ignore")


def _int(raw: Mapping[bytes, bytes], name: str) -> int:
    try:
        return int(raw.get(name.encode(), b"0"))
    except ValueError:
        return 0


class _Thread(msgspec.Struct, kw_only=True):
    """The one field of a conversation's context the inbox reads (the rest is ignored)."""

    thread_owner: str = ""


_thread_decoder = msgspec.msgpack.Decoder(_Thread)


def thread_owner(context: bytes | None) -> str | None:
    """The app owning the thread per a stored context; None: ours (or nobody said)."""
    if not context:
        return None
    try:
        return _thread_decoder.decode(context).thread_owner or None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def card_of(conversation: str, score: float, raw: Mapping[bytes, bytes], paused: bool,
            owner: str | None = None) -> Card:
    channel, account, user = split_key(conversation) or ("", "", conversation)
    status: Status = ("closed" if raw.get(b"closed") else "human" if paused or owner
                      else "bot")
    return Card(
        conversation=conversation, channel=_str(raw, "channel") or channel, account_id=account,
        user_id=user, last_activity_ms=int(score), name=_str(raw, "name"),
        picture=_str(raw, "picture"), picture_ref=_str(raw, "picture_ref"), last_text=_str(raw, "last_text"),
        last_direction=_str(raw, "last_dir"), last_kind=_str(raw, "last_kind"),
        last_ms=_int(raw, "last_ms"), last_in_ms=_int(raw, "last_in_ms"),
        unread=max(0, _int(raw, "unread")), status=status, assignee=_str(raw, "assignee"),
        thread_owner=owner,
    )


# KEYS: conversations index, inbox card; ARGV: conversation, live line, live channel
# ('' = not told), field, value, … . The fields set only while the conversation is in
# the index.
_SET_PROFILE = LuaScript("""
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
return 1
""", name="inbox_set_profile")


class Inbox:
    """The inbox over Redis; cheap to build (holds the client and the cipher). A card's
    last line, and the person's name and picture, are sealed at rest like the message's
    text: ``cipher`` seals and opens them (without one, or when the tenant's key is gone,
    a sealed field reads as none)."""

    def __init__(self, redis: Redis, cipher: TenantCipher | None = None) -> None:
        self._redis = redis
        self._cipher = cipher
        self._set_profile = _SET_PROFILE.bind(redis)

    # --- reading ----------------------------------------------------------------------
    async def cards(self, tenant_id: str, rows: Sequence[tuple[str, float]]) -> list[Card]:
        """The cards of ``rows`` (conversation, last activity), in one round trip."""
        if not rows:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for conv, _ in rows:
            pipe.hgetall(keys.inbox_card(tenant_id, conv))
            pipe.exists(keys.paused(tenant_id, conv))
            pipe.get(keys.context(tenant_id, conv))
        answers = await pipe.execute()
        hashes = [await self._opened(tenant_id, conv, as_hash(answers[3 * i]))
                  for i, (conv, _) in enumerate(rows)]
        return [card_of(conv, score, hashes[i], bool(answers[3 * i + 1]),
                        thread_owner(answers[3 * i + 2]))
                for i, (conv, score) in enumerate(rows)]

    async def _opened(self, tenant_id: str, conversation: str,
                      raw: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """``raw`` with its sealed last line, name and picture opened (each dropped when
        it cannot be)."""
        sealed = {f: raw[f] for f in _SEALED_CARD_FIELDS if f in raw and is_sealed(raw[f])}
        if not sealed:
            return raw
        opened = {f: v for f, v in raw.items() if f not in sealed}
        if self._cipher is not None:
            try:
                key = await self._cipher.key(tenant_id, create=False)
            except (DecryptionError, ValueError):
                return opened
            for field, value in sealed.items():
                try:
                    opened[field] = key.open(_SEALED_CARD_FIELDS[field], conversation, value)
                except (DecryptionError, ValueError):
                    pass
        return opened

    async def card(self, tenant_id: str, conversation: str) -> Card | None:
        """The conversation's card; None when the tenant has no such conversation."""
        score = await self._redis.zscore(keys.conversations(tenant_id), conversation)
        if score is None:
            return None
        return (await self.cards(tenant_id, [(conversation, float(score))]))[0]

    async def page(
        self, tenant_id: str, *, limit: int, before: int | None = None,
        status: str | None = None, channel: str | None = None, query: str | None = None,
        scan: int = 2000, batch: int = 100,
    ) -> tuple[list[Card], int | None]:
        """Up to ``limit`` cards matching the filters, most recently active first, older
        than ``before`` (a ``last_activity_ms``), and the ``before`` of the next page
        (None: nothing older). At most ``scan`` conversations are looked at."""
        high = "+inf" if before is None else f"({before}"
        folded = query.casefold() if query else None
        found: list[Card] = []
        looked = 0
        while len(found) < limit and looked < scan:
            rows = [(m.decode(), s) for m, s in as_scored(await self._redis.zrevrangebyscore(
                keys.conversations(tenant_id), high, "-inf", start=0, num=batch,
                withscores=True))]
            if not rows:
                return found, None
            for card in await self.cards(tenant_id, rows):
                looked += 1
                high = f"({card.last_activity_ms}"
                if ((status is None or card.status == status)
                        and (channel is None or card.channel == channel)
                        and (folded is None or card.matches(folded))):
                    found.append(card)
                    if len(found) == limit:
                        return found, card.last_activity_ms
                if looked >= scan:
                    break
            if len(rows) < batch:
                return found, None
        return found, int(high[1:]) if high != "+inf" else None

    # --- a person's actions -----------------------------------------------------------
    async def queue_reply(
        self, tenant_id: str, reply: AgentReply, *, pause_s: int, partitions: int,
        now_ms: int, handoff: bool = False,
    ) -> None:
        """Silence the bot in the conversation (its pause marker, ``pause_s``; answers
        under way are dropped at their next send permit) and queue ``reply`` on the
        conversation's partition stream, where its shard sends it, and count it in the
        day's analytics (``handoff``: the bot had the conversation until now): one
        transaction."""
        conv = reply.conversation
        pipe = self._redis.pipeline(transaction=True)
        analytics.count_human_reply(pipe, tenant_id, reply.channel, analytics.day_of(now_ms),
                                    conv, handoff=handoff)
        pipe.set(keys.paused(tenant_id, conv), b"1", ex=pause_s or CONSOLE_PAUSE_S)
        pipe.hdel(keys.inbox_card(tenant_id, conv), "closed")
        pipe.xadd(keys.inbound(partition_of(conv, partitions)),
                  {b"e": encode_event(reply), b"t": tenant_id.encode(),
                   b"r": str(now_ms).encode()})
        pipe.publish(keys.live(tenant_id), f"c {conv}")
        await pipe.execute()

    async def hand_back(self, tenant_id: str, conversation: str) -> None:
        """The bot answers again from the next message on."""
        await self._change(tenant_id, conversation, lambda p: p.delete(
            keys.paused(tenant_id, conversation)))

    async def assign(self, tenant_id: str, conversation: str, user_id: str | None) -> None:
        card = keys.inbox_card(tenant_id, conversation)
        await self._change(tenant_id, conversation, (lambda p: p.hset(card, "assignee", user_id))
                           if user_id else (lambda p: p.hdel(card, "assignee")))

    async def close(self, tenant_id: str, conversation: str) -> None:
        """Closed (until the person writes again, or a reopen); a person's hold ends, so
        the bot answers the next message."""
        def change(p: Pipeline) -> None:
            p.hset(keys.inbox_card(tenant_id, conversation), "closed", "1")
            p.delete(keys.paused(tenant_id, conversation))
        await self._change(tenant_id, conversation, change)

    async def reopen(self, tenant_id: str, conversation: str) -> None:
        await self._change(tenant_id, conversation, lambda p: p.hdel(
            keys.inbox_card(tenant_id, conversation), "closed"))

    async def mark_read(self, tenant_id: str, conversation: str) -> None:
        await self._change(tenant_id, conversation, lambda p: p.hset(
            keys.inbox_card(tenant_id, conversation), "unread", 0))

    async def set_profile(self, tenant_id: str, conversation: str, *, name: str | None,
                          picture: str | None, now_ms: int,
                          picture_ref: str | None = None, told: bool = True) -> bool:
        """The person's name and picture as Meta gave them (``profile_ms``: when asked),
        only while the conversation exists (a late answer never brings an erased one
        back). True when stored. ``told=False``: not published on the live channel (no
        inbox listens: mtdesk/actors/watchers.py)."""
        fields: list[str | int | bytes] = ["profile_ms", now_ms]
        key = (await self._cipher.key(tenant_id)
               if self._cipher is not None and self._cipher.enabled and (name or picture)
               else None)

        def sealed(text: str) -> str | bytes:
            return key.seal_text(PROFILE_FAMILY, conversation, text) if key else text

        if name:
            fields += ["name", sealed(name[:200])]
        if picture:
            fields += ["picture", sealed(picture[:2000])]
        if picture_ref:
            fields += ["picture_ref", picture_ref]
        done = await self._set_profile(
            keys=[keys.conversations(tenant_id), keys.inbox_card(tenant_id, conversation)],
            args=[conversation, f"c {conversation}", keys.live(tenant_id) if told else "",
                  *fields])
        return bool(done)

    async def picture_ref(self, tenant_id: str, conversation: str) -> str | None:
        raw = await self._redis.hget(keys.inbox_card(tenant_id, conversation), "picture_ref")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def profile_asked_ms(self, tenant_id: str, conversation: str) -> int:
        raw = await self._redis.hget(keys.inbox_card(tenant_id, conversation), "profile_ms")
        try:
            return int(raw or 0)
        except ValueError:
            return 0

    async def _change(self, tenant_id: str, conversation: str,
                      change: Callable[[Pipeline], object]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        change(pipe)
        pipe.publish(keys.live(tenant_id), f"c {conversation}")
        await pipe.execute()


def new_reply_id() -> str:
    """The event id of a person's reply (its reply record's key, and the metadata its
    echo comes back with)."""
    return f"agent.{uuid.uuid4().hex}"


def agent_reply(conversation: str, *, text: str | None, author: str, tag: str | None,
                template: TemplateSend | None = None) -> AgentReply:
    parts = split_key(conversation)
    assert parts is not None
    channel, account, user = parts
    assert conversation_key(channel, account, user) == conversation
    return AgentReply(
        event_id=new_reply_id(), channel=channel,  # type: ignore[arg-type]
        account_id=account, user_id=user, timestamp_ms=int(time.time() * 1000), text=text,
        author=author, tag=tag, template=template,
    )
