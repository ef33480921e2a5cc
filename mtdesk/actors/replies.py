"""Exactly-once reply state, keyed by the inbound event a reply answers.

One hash per inbound event at ``keys.reply(tenant, event_id)`` (TTL: the de-duplication
window, ``settings.dedup_ttl_s``), fields:

``stored``      history entry id of the inbound message (stored exactly once)
``state``       ``generating`` → ``generated`` → ``sending`` → ``sent``, or ``skipped`` /
                ``failed``; ``answered`` for a message answered as part of a burst
``answered_by`` burst members: the event id whose reply answered them all
``members``     burst head: the other event ids it answers (space-separated)
``text``, ``provider``, ``model``   the generated reply, stored BEFORE the first send
``parts_sent``  how many parts of the split reply Meta accepted (and we recorded)
``mids``        their Graph message ids (space-separated)
``reason``      why skipped/failed; ``updated_ms``

What a caller may rely on: a redelivery or a restart looks the hash up first. A terminal
state (``sent``, ``skipped``, ``failed``, ``answered``) means done: ack, don't answer.
``generating`` means the model was called but nothing was sent: generate again.
``generated``/``sending`` means resume the send from ``parts_sent`` with the stored text,
so the reply the user sees is the same one. Every part is recorded (reply hash +
history + outbound hash) in ONE Lua script, so "Meta accepted part i and we know it" is a
single step; the only window is a crash between Meta's answer and that script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

from mtdesk.actors.ratelimit import ACQUIRE_LUA_FUNCTION, SendRateLimiter
from mtdesk.core import keys
from mtdesk.core.history import StoredMessage, conversation_of, encode_message
from mtdesk.core.ports import OutboundMessage, SendResult
from mtdesk.core.redis import Redis
from mtdesk.policy.quotas import CONSUME_LUA_FUNCTION, ConsumeCall

TERMINAL = frozenset({"sent", "skipped", "failed", "answered"})
RESUMABLE = frozenset({"generated", "sending"})


class ResumableSender(Protocol):
    """The Sender port plus resume support (GraphSender implements it)."""

    async def send(
        self,
        message: OutboundMessage,
        *,
        already_sent: int = 0,
        on_part_sent: Callable[[int, str], Awaitable[None]] | None = None,
        prepaid: bool = False,
    ) -> SendResult: ...

    @property
    def limiter(self) -> SendRateLimiter | None: ...


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

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def resumable(self) -> bool:
        return self.state in RESUMABLE


# Leaves a non-terminal state for ``state`` (reason, time, ttl); 0 when it was terminal.
_FINISH_FUNCTION = """
local function finish(state, reason, now_ms, ttl)
  local cur = redis.call('HGET', KEYS[1], 'state')
  if cur == 'sent' or cur == 'skipped' or cur == 'failed' or cur == 'answered' then return 0 end
  redis.call('HSET', KEYS[1], 'state', state, 'reason', reason, 'updated_ms', now_ms)
  redis.call('EXPIRE', KEYS[1], tonumber(ttl))
  return 1
end
"""

# Stores the inbound message once (history entry, conversation index, ``stored``).
_STORE_FUNCTION = """
local function store(msg, conv, now_ms, ttl)
  if redis.call('HGET', KEYS[1], 'stored') then return false end
  local entry = redis.call('XADD', KEYS[2], '*', 'm', msg)
  redis.call('ZADD', KEYS[3], now_ms, conv)
  redis.call('HSET', KEYS[1], 'stored', entry, 'updated_ms', now_ms)
  redis.call('EXPIRE', KEYS[1], tonumber(ttl))
  return true
end
"""

# KEYS: reply, history, convs; ARGV: msg, conv, now_ms, ttl, skip_reason ('' = to answer),
# then the field names to return. Returns the record's fields after storing.
_STORE_INBOUND = _STORE_FUNCTION + """
if store(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
    and ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[1], 'state') == 0 then
  redis.call('HSET', KEYS[1], 'state', 'skipped', 'reason', ARGV[5])
end
return redis.call('HMGET', KEYS[1], unpack(ARGV, 6))
"""

# KEYS: head reply, member replies...; ARGV: now_ms, ttl, head_id, member ids...
# Returns the member ids claimed (those not already answered/claimed), or -1 when the
# head itself was already claimed by someone.
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], 'state') == 1 then return -1 end
local claimed = {}
for i = 2, #KEYS do
  if KEYS[i] ~= KEYS[1] and redis.call('HEXISTS', KEYS[i], 'state') == 0 then
    redis.call('HSET', KEYS[i], 'state', 'answered', 'answered_by', ARGV[3], 'updated_ms', ARGV[1])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
    claimed[#claimed + 1] = ARGV[i + 2]
  end
end
redis.call('HSET', KEYS[1], 'state', 'generating', 'members', table.concat(claimed, ' '),
  'updated_ms', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return claimed
"""

# KEYS: reply; ARGV: text, provider, model, now_ms. Only from generating.
_GENERATED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'generating' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'generated', 'text', ARGV[1], 'provider', ARGV[2],
  'model', ARGV[3], 'parts_sent', 0, 'updated_ms', ARGV[4])
return 1
"""

# _GENERATED and the first send's rate-limit permit in one round trip. KEYS: reply,
# rate window counter; ARGV: text, provider, model, now_ms, limit. Returns 0 (not
# generating: nothing done), 1 (generated, no permit: the window is full) or 2 (both).
_GENERATED_WITH_PERMIT = ACQUIRE_LUA_FUNCTION + """
if redis.call('HGET', KEYS[1], 'state') ~= 'generating' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'generated', 'text', ARGV[1], 'provider', ARGV[2],
  'model', ARGV[3], 'parts_sent', 0, 'updated_ms', ARGV[4])
return 1 + mt_acquire(KEYS[2], tonumber(ARGV[5]))
"""

# Records part ARGV[1] (Graph id ARGV[2]) once: progress, the history entry (ARGV[3]) and
# the outbound status hash. KEYS: reply, history, convs, outbound; ARGV: index, mid, msg,
# conv, now_ms, ttl_out. Shared by _PART_SENT and _LAST_PART_SENT.
_RECORD_PART = """
local function record_part()
  local sent = tonumber(redis.call('HGET', KEYS[1], 'parts_sent') or '0')
  local index = tonumber(ARGV[1])
  if sent > index then return 0 end
  local mids = redis.call('HGET', KEYS[1], 'mids')
  if mids and mids ~= '' then mids = mids .. ' ' .. ARGV[2] else mids = ARGV[2] end
  redis.call('HSET', KEYS[1], 'state', 'sending', 'parts_sent', index + 1, 'mids', mids,
    'updated_ms', ARGV[5])
  local entry = redis.call('XADD', KEYS[2], '*', 'm', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('HSET', KEYS[4], 'conv', ARGV[4], 'entry', entry)
  redis.call('HSETNX', KEYS[4], 'status', 'sent')
  redis.call('HSETNX', KEYS[4], 'updated_ms', ARGV[5])
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
  return 1
end
"""

# KEYS: reply, history, convs, outbound; ARGV: index, mid, msg, conv, now_ms, ttl_out
_PART_SENT = _RECORD_PART + """
return record_part()
"""

# KEYS: reply; ARGV: state, reason, now_ms, ttl. Never leaves a terminal state.
_FINISH = _FINISH_FUNCTION + """
return finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

# The whole admission of a message to be answered, in ONE round trip (it saves three:
# the skip checks, store_inbound and claim). KEYS: reply, history, convs, restricted,
# paused, billing, usage; ARGV: msg, conv, now_ms, ttl, member ('channel:user_id'),
# reason found by the caller ('' = none), quota n, quota ttl, enforce, default
# allowance, claim ('1' = also claim the reply when it has no state), then the field
# names to return. Checks in the shards' order: restricted, paused, the caller's
# reason, the plan's allowance (counted only when nothing else skips the message).
# A skip returns {reason} and changes nothing; else the inbound is stored once (as
# _STORE_INBOUND does) and, when asked, claimed with no members (as _CLAIM does):
# {'', claimed 1|0, fields}.
_ADMIT = CONSUME_LUA_FUNCTION + _STORE_FUNCTION + """
if redis.call('SISMEMBER', KEYS[4], ARGV[5]) == 1 then return {'restricted'} end
if redis.call('EXISTS', KEYS[5]) == 1 then return {'paused: human agent'} end
if ARGV[6] ~= '' then return {ARGV[6]} end
local q = mt_consume(KEYS[6], KEYS[7], tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10])
if q[1] == 0 then return {'quota exceeded'} end
store(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local claimed = 0
if ARGV[11] == '1' and redis.call('HEXISTS', KEYS[1], 'state') == 0 then
  redis.call('HSET', KEYS[1], 'state', 'generating', 'members', '', 'updated_ms', ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  claimed = 1
end
return {'', claimed, redis.call('HMGET', KEYS[1], unpack(ARGV, 12))}
"""

# _FINISH and the conversation's context write in one round trip. KEYS: reply, context;
# ARGV: state, reason, now_ms, ttl, context (msgpack), context ttl. The context is
# written whatever the reply's state (as the separate SET was).
_FINISH_WITH_CONTEXT = _FINISH_FUNCTION + """
redis.call('SET', KEYS[2], ARGV[5], 'EX', tonumber(ARGV[6]))
return finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

# The LAST part of a reply: _PART_SENT, then _FINISH and the context write, in one
# round trip. KEYS: reply, history, convs, outbound, context; ARGV: index, mid, msg,
# conv, now_ms, ttl_out, state, reason, context (msgpack), context ttl, reply ttl.
# Idempotent like its parts: a part already recorded is not recorded again; a terminal
# state is never left; the context is written either way.
_LAST_PART_SENT = _RECORD_PART + _FINISH_FUNCTION + """
record_part()
redis.call('SET', KEYS[5], ARGV[9], 'EX', tonumber(ARGV[10]))
return finish(ARGV[7], ARGV[8], ARGV[5], ARGV[11])
"""

_FIELDS = ("state", "stored", "answered_by", "members", "text", "provider", "model",
           "parts_sent", "mids", "reason")


def _s(raw: bytes | None) -> str:
    return raw.decode() if raw else ""


class ReplyStore:
    """The reply state machine over Redis. All writes are single Lua scripts."""

    def __init__(self, redis: Redis, *, ttl_s: int, history_ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._history_ttl_s = history_ttl_s
        self._store_inbound = redis.register_script(_STORE_INBOUND)
        self._claim = redis.register_script(_CLAIM)
        self._generated = redis.register_script(_GENERATED)
        self._part_sent = redis.register_script(_PART_SENT)
        self._finish = redis.register_script(_FINISH)
        self._admit = redis.register_script(_ADMIT)
        self._finish_ctx = redis.register_script(_FINISH_WITH_CONTEXT)
        self._last_part_sent = redis.register_script(_LAST_PART_SENT)
        self._generated_permit = redis.register_script(_GENERATED_WITH_PERMIT)

    async def load_many(self, tenant_id: str, event_ids: Sequence[str]) -> list[ReplyRecord]:
        pipe = self._redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hmget(keys.reply(tenant_id, event_id), *_FIELDS)
        rows = await pipe.execute()
        return [self._record(row) for row in rows]

    async def load(self, tenant_id: str, event_id: str) -> ReplyRecord:
        return (await self.load_many(tenant_id, [event_id]))[0]

    @staticmethod
    def _record(row: Sequence[bytes | None]) -> ReplyRecord:
        v = dict(zip(_FIELDS, (_s(x) for x in row), strict=True))
        return ReplyRecord(
            state=v["state"], stored=v["stored"], answered_by=v["answered_by"],
            members=tuple(v["members"].split()), text=v["text"], provider=v["provider"],
            model=v["model"], parts_sent=int(v["parts_sent"] or 0),
            mids=tuple(v["mids"].split()), reason=v["reason"],
        )

    async def store_inbound(
        self, tenant_id: str, event_id: str, message: StoredMessage, *, now_ms: int,
        skip_reason: str = "",
    ) -> ReplyRecord:
        """Append the inbound message to history once per event id (a redelivery keeps
        the first entry). With ``skip_reason`` the event is also marked ``skipped``.
        Returns the event's reply record as it is now (one round trip)."""
        conv = conversation_of(message)
        row = await self._store_inbound(
            keys=[keys.reply(tenant_id, event_id), keys.history(tenant_id, conv),
                  keys.conversations(tenant_id)],
            args=[encode_message(message), conv, now_ms, self._ttl_s, skip_reason, *_FIELDS],
        )
        return self._record(row)

    async def admit(
        self, tenant_id: str, event_id: str, message: StoredMessage, *, now_ms: int,
        member: str, paused_key: str, reason: str, quota: ConsumeCall, claim: bool,
    ) -> tuple[str, ReplyRecord | None, bool]:
        """The skip checks, the plan's allowance, :meth:`store_inbound` and (with
        ``claim``) :meth:`claim` with no members, as ONE step. Checks, in order:
        ``member`` in the tenant's restricted set, ``paused_key`` present, ``reason``
        (one the caller found, e.g. ``bot disabled``), then ``quota`` (counted only when
        nothing else skips). Returns ``(skip reason, None, False)`` when skipped —
        nothing was stored or counted; the caller records it with :meth:`store_inbound`
        — else ``('', the record as it is now, whether this call claimed it)``."""
        conv = conversation_of(message)
        reply = await self._admit(
            keys=[keys.reply(tenant_id, event_id), keys.history(tenant_id, conv),
                  keys.conversations(tenant_id), keys.restricted(tenant_id), paused_key,
                  *quota.keys],
            args=[encode_message(message), conv, now_ms, self._ttl_s, member, reason,
                  *quota.args, "1" if claim else "0", *_FIELDS],
        )
        skip = _s(reply[0])
        if skip:
            return skip, None, False
        return "", self._record(reply[2]), bool(reply[1])

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

    async def generated(
        self, tenant_id: str, event_id: str, text: str, provider: str, model: str, *,
        now_ms: int,
    ) -> bool:
        return bool(await self._generated(
            keys=[keys.reply(tenant_id, event_id)], args=[text, provider, model, now_ms]
        ))

    async def generated_with_permit(
        self, tenant_id: str, event_id: str, text: str, provider: str, model: str, *,
        now_ms: int, window: tuple[str, int],
    ) -> tuple[bool, bool]:
        """:meth:`generated`, and when it applied, one send permit taken from the rate
        window ``window`` (``SendRateLimiter.window``), in one round trip. Returns
        (generated, permit taken): pass ``prepaid=permit`` to the sender."""
        result = int(await self._generated_permit(
            keys=[keys.reply(tenant_id, event_id), window[0]],
            args=[text, provider, model, now_ms, window[1]],
        ))
        return result > 0, result == 2

    async def part_sent(
        self, tenant_id: str, event_id: str, index: int, message: StoredMessage, *,
        now_ms: int,
    ) -> bool:
        """Record that Meta accepted part ``index`` (its id is ``message.message_id``):
        progress, the history entry and the outbound status hash in one step."""
        conv = conversation_of(message)
        return bool(await self._part_sent(
            keys=[keys.reply(tenant_id, event_id), keys.history(tenant_id, conv),
                  keys.conversations(tenant_id), keys.outbound(tenant_id, message.message_id)],
            args=[index, message.message_id, encode_message(message), conv, now_ms,
                  self._history_ttl_s],
        ))

    async def last_part_sent(
        self, tenant_id: str, event_id: str, index: int, message: StoredMessage, *,
        now_ms: int, state: str, reason: str = "", context_key: str, context: bytes,
        context_ttl_s: int,
    ) -> None:
        """:meth:`part_sent` of the reply's last part, then :meth:`finish_with_context`,
        as ONE step (idempotent: safe to repeat after a Redis blip)."""
        conv = conversation_of(message)
        await self._last_part_sent(
            keys=[keys.reply(tenant_id, event_id), keys.history(tenant_id, conv),
                  keys.conversations(tenant_id), keys.outbound(tenant_id, message.message_id),
                  context_key],
            args=[index, message.message_id, encode_message(message), conv, now_ms,
                  self._history_ttl_s, state, reason, context, context_ttl_s, self._ttl_s],
        )

    async def finish(
        self, tenant_id: str, event_id: str, state: str, *, now_ms: int, reason: str = ""
    ) -> bool:
        """Move to a terminal state (sent | skipped | failed); never out of one."""
        return bool(await self._finish(
            keys=[keys.reply(tenant_id, event_id)], args=[state, reason, now_ms, self._ttl_s]
        ))

    async def finish_with_context(
        self, tenant_id: str, event_id: str, state: str, *, now_ms: int, reason: str = "",
        context_key: str, context: bytes, context_ttl_s: int,
    ) -> bool:
        """:meth:`finish` and ``SET context_key context EX context_ttl_s`` (always
        written, whatever the state) in one round trip."""
        return bool(await self._finish_ctx(
            keys=[keys.reply(tenant_id, event_id), context_key],
            args=[state, reason, now_ms, self._ttl_s, context, context_ttl_s],
        ))
