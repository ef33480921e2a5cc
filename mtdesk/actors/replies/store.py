"""The reply records in Redis: every step of the state machine is one Lua script.

One hash per inbound event at ``keys.reply(tenant, event_id)`` (TTL: the de-duplication
window, ``settings.dedup_ttl_s``), fields:

``stored``      history entry id of the inbound message (stored exactly once)
``state``       see :mod:`mtdesk.core.replystate` (the table of states and steps)
``answered_by`` burst members: the event id whose reply answered them all
``members``     burst head: the other event ids it answers (space-separated)
``text``, ``provider``, ``model``   the generated reply, stored BEFORE the first send
``suggest``     the suggested replies offered under its last part (a JSON list, sealed
                like the text), stored with the text: a resumed send still offers them
``parts_sent``  how many parts of the split reply Meta accepted (and we recorded)
``mids``        their Graph message ids (space-separated)
``reason``      why skipped/failed (or how a sent reply was made); ``updated_ms``

Callers speak intents — :meth:`ReplyStore.admit` (or :meth:`~ReplyStore.store_inbound`
for an event recorded, not answered), :meth:`~ReplyStore.claim` a burst,
:meth:`~ReplyStore.begin` a reply (:class:`~mtdesk.actors.replies.run.ReplyRun`: record
its parts, end it) — and the store folds what it can into one round trip: the admission
with the claim of a burst of one, the stored text with the first send's rate-limit
permit, the last part with the reply's end and the conversation's context. Every part is
recorded (reply hash + history + outbound hash) in ONE script, so "Meta accepted part i
and we know it" is a single step. Between Meta's answer and that script the run keeps
the part in this store's memory (:meth:`ReplyStore.sending`), and after a crash a
resume learns it from Meta's confirmation (:attr:`ReplyStore.confirmations`;
docs/shards.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from mtdesk.actors.ratelimit import ACQUIRE_LUA_FUNCTION, SendRateLimiter
from mtdesk.actors.replies.confirm import SendConfirmations
from mtdesk.actors.replies.run import (
    Context,
    ContextWrite,
    OutgoingReply,
    PartitionLost,
    ReplyRun,
)
from mtdesk.actors.watchers import QUIET, always
from mtdesk.core import keys
from mtdesk.core.clock import Clock, SystemClock, now_ms
from mtdesk.core.history import (
    HISTORY_APPEND_LUA,
    StoredMessage,
    card_fields,
    conversation_of,
    encode_message,
)
from mtdesk.core.redis import Redis, as_bytes, is_cluster
from mtdesk.core.replystate import RESUMABLE, TERMINAL, ReplyState, lua_prelude
from mtdesk.core.scripts import LuaScript, lua_source
from mtdesk.core.sealing import TenantCipher, TenantKey, is_sealed
from mtdesk.policy.quotas import CONSUME_LUA_FUNCTION, ConsumeCall


class ReplyRecord(msgspec.Struct, kw_only=True):
    state: str = ""
    stored: str = ""
    answered_by: str = ""
    members: tuple[str, ...] = ()
    text: str = ""
    provider: str = ""
    model: str = ""
    parts_sent: int = 0
    mids: tuple[str, ...] = ()
    reason: str = ""
    suggestions: tuple[str, ...] = ()

    @property
    def phase(self) -> ReplyState:
        """The state as the state machine's value (an unknown one reads as none)."""
        try:
            return ReplyState(self.state)
        except ValueError:
            return ReplyState.NONE

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    @property
    def resumable(self) -> bool:
        return self.phase in RESUMABLE


_FIELDS = ("state", "stored", "answered_by", "members", "text", "provider", "model",
           "parts_sent", "mids", "reason", "suggest")  # "suggest" last: bytes, read apart
_TEXT = _FIELDS.index("text")
_SUGGEST = _FIELDS.index("suggest")
REPLY_FAMILY = "reply"  # the generated text on a reply record, sealed (id: the event id)
_suggestions = msgspec.json.Decoder(tuple[str, ...])


def _suggest_id(event_id: str) -> str:
    """The sealing id of a reply's suggestions (its text's is the event id)."""
    return f"{event_id}\x00suggest"


def _script(*names: str, functions: str = "") -> str:
    """A reply script: the state sets, the shared functions, then ``names``."""
    return (lua_prelude() + HISTORY_APPEND_LUA + functions
            + lua_source("mtdesk.actors.replies", *(f"lua/{n}.lua" for n in names)))


def _lua(name: str, *names: str, functions: str = "") -> LuaScript:
    return LuaScript(_script(*names, functions=functions), name=f"reply_{name}")


# One script per step; the ones shared (finish, record_part, store_once) are functions.
_STORE_INBOUND = _lua("store_inbound", "store_once", "store_inbound")
_ADMIT = _lua("admit", "store_once", "admit", functions=CONSUME_LUA_FUNCTION)
_CLAIM = _lua("claim", "claim")
_BEGIN = _lua("begin", "begin", functions=ACQUIRE_LUA_FUNCTION)
_PART_SENT = _lua("part_sent", "record_part", "part_sent")
_END = _lua("end", "finish", "end")


def _s(raw: bytes | None) -> str:
    return raw.decode() if raw else ""


class ReplyStore:
    """The reply state machine over Redis. All writes are single Lua scripts.

    ``limiter`` (the shard's shared send rate limiter) lets :meth:`begin` take the first
    send's permit with the stored text; the reply's further sends take theirs from it
    (the :class:`ReplyRun` is the sender's permit source)."""

    def __init__(self, redis: Redis, *, ttl_s: int, history_ttl_s: int,
                 limiter: SendRateLimiter | None = None, clock: Clock | None = None,
                 cipher: TenantCipher | None = None,
                 watched: Callable[[str], bool] | None = None) -> None:
        self._redis = redis
        # Whether the tenant's inbox is open (mtdesk/actors/watchers.py): the messages
        # stored are told on its live channel only then. None: always told.
        self._watched = watched or always
        # Inbound messages, reply parts and the generated text are sealed with the
        # tenant's data key (in the process after its first use: no extra round trip).
        self._cipher = cipher or TenantCipher.disabled()
        self._clock = clock or SystemClock()
        self._ttl_s = ttl_s
        self._history_ttl_s = history_ttl_s
        self._limiter = limiter
        self._cluster = is_cluster(redis)
        self._store_inbound = _STORE_INBOUND.bind(redis)
        self._admit = _ADMIT.bind(redis)
        self._claim = _CLAIM.bind(redis)
        self._begin = _BEGIN.bind(redis)
        self._part_sent = _PART_SENT.bind(redis)
        self._end = _END.bind(redis)
        # The replies this process is sending (begun or resumed, end not recorded yet),
        # each with the parts Meta accepted that are not recorded yet; bounded.
        self._sending: dict[tuple[str, str], dict[int, str]] = {}
        # Meta's confirmations of our sends, noted by the shard as it reads them.
        self.confirmations = SendConfirmations()

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    # --- reading ----------------------------------------------------------------------
    async def load_many(self, tenant_id: str, event_ids: Sequence[str]) -> list[ReplyRecord]:
        pipe = self._redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hmget(keys.reply(tenant_id, event_id), *_FIELDS)
        rows = await pipe.execute()
        key = await self._key(tenant_id)
        return [self._record(row, key, event_id) for row, event_id in zip(rows, event_ids, strict=True)]

    async def load(self, tenant_id: str, event_id: str) -> ReplyRecord:
        return (await self.load_many(tenant_id, [event_id]))[0]

    async def _key(self, tenant_id: str) -> TenantKey:
        return self._cipher.cached(tenant_id) or await self._cipher.key(tenant_id)

    @staticmethod
    def _record(row: Sequence[bytes | None], key: TenantKey, event_id: str) -> ReplyRecord:
        sealed = row[_TEXT]
        if sealed is not None and is_sealed(sealed):
            row = [*row[:_TEXT], key.open(REPLY_FAMILY, event_id, sealed), *row[_TEXT + 1:]]
        offered = row[_SUGGEST]
        if offered is not None and is_sealed(offered):
            offered = key.open(REPLY_FAMILY, _suggest_id(event_id), offered)
        v = dict(zip(_FIELDS[:_SUGGEST], (_s(x) for x in row[:_SUGGEST]), strict=True))
        return ReplyRecord(
            state=v["state"], stored=v["stored"], answered_by=v["answered_by"],
            members=tuple(v["members"].split()), text=v["text"], provider=v["provider"],
            model=v["model"], parts_sent=int(v["parts_sent"] or 0),
            mids=tuple(v["mids"].split()), reason=v["reason"],
            suggestions=_suggestions.decode(offered) if offered else (),
        )

    def _card(self, tenant_id: str, message: StoredMessage, key: TenantKey,
              name: str | None = None) -> bytes:
        card = card_fields(message, key, name=name)
        return card if self._watched(tenant_id) else QUIET + card

    # --- admission --------------------------------------------------------------------
    async def store_inbound(
        self, tenant_id: str, event_id: str, message: StoredMessage, *, now_ms: int,
        skip_reason: str = "", name: str | None = None,
    ) -> ReplyRecord:
        """Append the inbound message to history once per event id (a redelivery keeps
        the first entry). With ``skip_reason`` the event is also marked ``skipped``; with
        ``name`` the inbox card takes the person's name with the message.
        Returns the event's reply record as it is now (one round trip)."""
        conv = conversation_of(message)
        key = await self._key(tenant_id)
        row = await self._store_inbound(
            keys=[keys.reply(tenant_id, event_id), keys.history(tenant_id, conv),
                  keys.conversations(tenant_id)],
            args=[encode_message(message, key), conv, now_ms, self._ttl_s, skip_reason,
                  self._card(tenant_id, message, key, name), self._history_ttl_s, *_FIELDS],
        )
        return self._record(row, key, event_id)

    async def admit(
        self, tenant_id: str, event_id: str, message: StoredMessage, *, now_ms: int,
        member: str, paused_key: str, reason: str, quota: ConsumeCall, claim: bool,
        name: str | None = None,
    ) -> tuple[str, ReplyRecord | None, bool]:
        """The skip checks, the plan's allowance, :meth:`store_inbound` and (with
        ``claim``) :meth:`claim` with no members, as ONE step. Checks, in order:
        ``member`` in the tenant's restricted set, ``paused_key`` present, ``reason``
        (one the caller found, e.g. ``bot disabled``), then ``quota`` (counted only when
        nothing else skips). Returns ``(skip reason, None, False)`` when skipped —
        nothing was stored or counted; the caller records it with :meth:`store_inbound`
        — else ``('', the record as it is now, whether this call claimed it)``. ``name``:
        as for :meth:`store_inbound`."""
        conv = conversation_of(message)
        key = await self._key(tenant_id)
        reply = await self._admit(
            keys=[keys.reply(tenant_id, event_id), keys.history(tenant_id, conv),
                  keys.conversations(tenant_id), keys.restricted(tenant_id), paused_key,
                  *quota.keys],
            args=[encode_message(message, key), conv, now_ms, self._ttl_s, member, reason,
                  *quota.args, "1" if claim else "0", self._card(tenant_id, message, key, name),
                  self._history_ttl_s, *_FIELDS],
        )
        skip = _s(reply[0])
        if skip:
            return skip, None, False
        return "", self._record(reply[2], key, event_id), bool(reply[1])

    async def claim(
        self, tenant_id: str, head: str, members: Sequence[str], *, now_ms: int
    ) -> list[str] | None:
        """Start answering ``head`` (state ``generating``) and mark every member not yet
        answered as answered by it, atomically. Returns the members claimed, or None when
        ``head`` already has a state (someone else is answering it)."""
        result = await self._claim(
            keys=[keys.reply(tenant_id, head), *(keys.reply(tenant_id, m) for m in members)],
            args=[now_ms, self._ttl_s, head, *members],
        )
        if result == -1:
            return None
        return [_s(x) for x in result]

    # --- the reply --------------------------------------------------------------------
    async def begin(self, reply: OutgoingReply, *, now_ms: int, context: Context,
                    fence: tuple[str, str] | None = None) -> ReplyRun:
        """Store the generated text (only from ``generating``; it is what a resumed send
        continues) and, with a limiter, take the first send's permit in the same round
        trip; a bot's reply also checks there that no person has taken the conversation
        over (the run then refuses every permit: nothing is sent). With ``fence`` (the
        partition's owner key and the epoch the shard holds it at) on one Redis server,
        a partition handed over meanwhile stores nothing and raises
        :class:`~mtdesk.actors.replies.run.PartitionLost`. Returns the run that sends it: pass
        it to the sender as its permits."""
        # The reply and the pause marker share the tenant's slot.
        names = [keys.reply(reply.tenant_id, reply.event_id),
                 keys.paused(reply.tenant_id, reply.conversation)]
        key = await self._key(reply.tenant_id)
        limit = 0
        # The permit rides along where the account's rate window shares a server with
        # the reply; on a cluster it is another slot, so the sender takes it itself.
        if self._limiter is not None and not self._cluster:
            window, limit = self._limiter.window(reply.channel, reply.account_id)
            names.append(window)
        args: list[str | int | bytes] = [
            key.seal_text(REPLY_FAMILY, reply.event_id, reply.text) if key.enabled
            else reply.text, reply.provider, reply.model, now_ms, limit,
            "1" if reply.silenced_by_person else "0"]
        epoch = ""
        if fence is not None and not self._cluster:  # the owner key: another slot on a cluster
            names.append(fence[0])
            epoch = fence[1]
        offered = msgspec.json.encode(reply.suggestions) if reply.suggestions else b""
        if offered and key.enabled:
            offered = key.seal(REPLY_FAMILY, _suggest_id(reply.event_id), offered)
        args += [epoch, offered]
        result = int(await self._begin(keys=names, args=args))
        if result == -2:
            raise PartitionLost(reply.event_id)
        return ReplyRun(self, reply, context, prepaid=1 if result == 2 else 0,
                        taken_over=result == -1, fence=fence)

    async def paused(self, tenant_id: str, conversation: str) -> bool:
        """Whether a person has the conversation now (its pause marker is present)."""
        return bool(await self._redis.exists(keys.paused(tenant_id, conversation)))

    async def holds(self, fence: tuple[str, str]) -> bool:
        """Whether the partition's owner key (``fence``: key, epoch) still names this
        epoch (an absent key fences nothing, as in the begin script)."""
        held = await self._redis.get(fence[0])
        return held is None or as_bytes(held).decode() == fence[1]

    def resume(self, reply: OutgoingReply, *, context: Context,
               fence: tuple[str, str] | None = None) -> ReplyRun:
        """The run of a reply whose text is already stored (no round trip); it knows the
        parts this process sent and could not record (:meth:`ReplyRun.recover`). Its
        permits are checked against ``fence`` (see :class:`ReplyRun`)."""
        known = self._sending.get((reply.tenant_id, reply.event_id))
        return ReplyRun(self, reply, context, prepaid=0,
                        unrecorded=dict(known) if known is not None else None, fence=fence)

    # The replies :meth:`sending` remembers at most (the oldest are forgotten first;
    # a forgotten one resumes as after a crash, from Meta's confirmations).
    SENDING_CAPACITY = 20_000

    def sending(self, reply: OutgoingReply) -> dict[int, str]:
        """This process sends ``reply``: its parts accepted and not recorded yet."""
        key = (reply.tenant_id, reply.event_id)
        parts = self._sending.get(key)
        if parts is None:
            parts = self._sending[key] = {}
            while len(self._sending) > self.SENDING_CAPACITY:
                del self._sending[next(iter(self._sending))]
        return parts

    def settled(self, reply: OutgoingReply) -> None:
        """The reply's end is recorded: nothing of it is left to remember."""
        self._sending.pop((reply.tenant_id, reply.event_id), None)

    async def generated(
        self, tenant_id: str, event_id: str, text: str, provider: str, model: str, *,
        now_ms: int,
    ) -> bool:
        """The ``generated`` step alone (no permit): True when it applied."""
        key = await self._key(tenant_id)
        stored: str | bytes = key.seal_text(REPLY_FAMILY, event_id, text) if key.enabled else text
        return bool(await self._begin(
            keys=[keys.reply(tenant_id, event_id)], args=[stored, provider, model, now_ms]))

    async def finish(
        self, tenant_id: str, event_id: str, state: str, *, now_ms: int, reason: str = ""
    ) -> bool:
        """Move to a terminal state (sent | skipped | failed); never out of one."""
        return bool(await self._end(
            keys=[keys.reply(tenant_id, event_id)], args=[state, reason, now_ms, self._ttl_s]))

    # --- used by ReplyRun -------------------------------------------------------------
    @property
    def limiter(self) -> SendRateLimiter | None:
        return self._limiter

    def now_ms(self) -> int:
        return now_ms(self._clock)

    async def record_part(
        self, reply: OutgoingReply, index: int, message: StoredMessage, *, now_ms: int,
        end: tuple[str, str] | None, context: ContextWrite | None,
    ) -> bool:
        """Part ``index`` recorded; with ``end`` (state, reason) also the reply's end and
        with ``context`` the context write, in one round trip."""
        conv = conversation_of(message)
        names = [keys.reply(reply.tenant_id, reply.event_id),
                 keys.history(reply.tenant_id, conv), keys.conversations(reply.tenant_id),
                 keys.outbound(reply.tenant_id, message.message_id)]
        state, reason = end or ("", "")
        key = await self._key(reply.tenant_id)
        args: list[str | int | bytes] = [index, message.message_id, encode_message(message, key),
                                         conv, now_ms, self._history_ttl_s, state, reason,
                                         self._ttl_s,
                                         self._card(reply.tenant_id, message, key)]
        if context is not None:
            names.append(context.key)
            args += [context.value, context.ttl_s]
        return bool(await self._part_sent(keys=names, args=args))

    async def end(
        self, reply: OutgoingReply, state: str, reason: str, *, now_ms: int,
        context: ContextWrite | None,
    ) -> bool:
        """The reply's end and, with ``context``, the context write (done
        whatever the state), in one round trip. True when the state moved."""
        names = [keys.reply(reply.tenant_id, reply.event_id)]
        args: list[str | int | bytes] = [state, reason, now_ms, self._ttl_s]
        if context is not None:
            names.append(context.key)
            args += [context.value, context.ttl_s]
        return bool(await self._end(keys=names, args=args))
