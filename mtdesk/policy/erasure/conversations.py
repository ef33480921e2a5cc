"""Erasing conversations, with the replies in flight in them.

A reply being generated or sent (reply state ``generating``, ``generated`` or
``sending``) while its conversation is erased is still recorded by its shard when it
gets there. So an erasure is two passes (see :mod:`mtdesk.policy.erasure.sweep`): in the
first, :meth:`ConversationEraser.drop_replies` keeps the reply records in flight it
meets (in :attr:`ConversationEraser.kept`); :meth:`ConversationEraser.settle` watches
them until none is in flight (at most ``settle_s``) and starts the final pass, in which
nothing is kept and a reply still in flight is counted in ``in_flight_left``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec

from mtdesk.core import keys
from mtdesk.core.history import decode_message
from mtdesk.core.keys import Scope
from mtdesk.core.redis import Redis, as_bytes_list, as_entries, as_scored, scan_pages
from mtdesk.core.replystate import IN_FLIGHT as REPLY_IN_FLIGHT
from mtdesk.core.replystate import lua_prelude
from mtdesk.core.scripts import LuaScript

Counts = dict[str, int]

# Reply states of a reply still being generated or sent: its shard will still write
# (history, outbound and reply records) when it gets there.
IN_FLIGHT = frozenset(state.value.encode() for state in REPLY_IN_FLIGHT)

# KEYS: reply records. Deletes those not in flight; returns the ones in flight (kept, so
# the job can watch them settle). One step per page: a reply cannot start unseen between
# the look and the delete.
_DROP_SETTLED = lua_prelude() + """
local kept = {}
for i = 1, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state and IN_FLIGHT[state] then
    kept[#kept + 1] = KEYS[i]
  else
    redis.call('DEL', KEYS[i])
  end
end
return kept
"""

# KEYS: history, context, pause marker, index, media, inbox card, imported, media retries;
# ARGV: conversation, force ('1':
# even with entries left). The conversation's remaining keys (its media bytes too), once
# its history stream is empty (else -1: a message came in after the last page read,
# page through it again). Returns whether a context was deleted.
_DROP_CONVERSATION = """
if ARGV[2] ~= '1' and redis.call('XLEN', KEYS[1]) > 0 then return -1 end
redis.call('DEL', KEYS[1])
local ctx = redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[4], ARGV[1])
local prefix = ARGV[1] .. ' '
for _, field in ipairs(redis.call('HKEYS', KEYS[8])) do
  if string.sub(field, 1, #prefix) == prefix then redis.call('HDEL', KEYS[8], field) end
end
return ctx
"""


def split_conversation(conv: str) -> tuple[str, str, str] | None:
    parts = conv.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


class ConversationEraser:
    """Finds and erases a tenant's conversations; ``progress`` receives count deltas."""

    def __init__(
        self, redis: Redis, progress: Callable[[Counts], Awaitable[None]], *, batch: int,
        settle_s: float, settle_poll_s: float,
    ) -> None:
        self._redis = redis
        self._progress = progress
        self._batch = batch
        self._settle_s = settle_s
        self._settle_poll_s = settle_poll_s
        self._drop_settled = LuaScript(_DROP_SETTLED, name="drop_settled").bind(redis)
        self._drop_conversation = LuaScript(_DROP_CONVERSATION, name="drop_conversation").bind(redis)
        # First pass: reply records in flight are kept (and watched); final pass: not.
        self._keep_in_flight = True
        self.kept: set[bytes] = set()
        self.in_flight_left = 0  # replies still in flight when the erasure ended

    async def find(
        self, tenant_id: str, want: Callable[[str], bool]
    ) -> list[str]:
        found: list[str] = []
        cursor = 0
        while True:
            cursor, rows = await self._redis.zscan(
                keys.conversations(tenant_id), cursor, count=self._batch
            )
            found.extend(c.decode() for c, _ in as_scored(rows) if want(c.decode()))
            if cursor == 0:
                break
        # A conversation may have data but no index entry (a crash between writes).
        # One SCAN pass over the tenant's keys finds those.
        match = keys.tenant_pattern(tenant_id)
        async for names in scan_pages(self._redis, match=match, count=self._batch):
            for raw in names:
                ref = keys.parse(raw)
                if (ref is not None and ref.family.scope is Scope.CONVERSATION
                        and ref.part and want(ref.part)):
                    found.append(ref.part)
        return sorted(set(found))

    async def erase(self, tenant_id: str, convs: list[str]) -> None:
        for conv in convs:
            await self._erase_one(tenant_id, conv)

    async def _erase_one(self, tenant_id: str, conv: str) -> None:
        """History, context, pause, index entry, media (and its retries), inbox card and the
        per-message reply/outbound state."""
        hist = keys.history(tenant_id, conv)
        counts: Counts = {"conversations": 1}
        ctx = 0
        rereads = 0
        start = "-"
        while True:
            page = as_entries(await self._redis.xrange(hist, start, "+", count=self._batch))
            if not page:
                ctx = int(await self._drop_conversation(
                    keys=[hist, keys.context(tenant_id, conv), keys.paused(tenant_id, conv),
                          keys.conversations(tenant_id), keys.media(tenant_id, conv),
                          keys.inbox_card(tenant_id, conv), keys.imported(tenant_id, conv),
                          keys.media_retries(tenant_id)],
                    args=[conv, "1" if rereads >= 3 else "0"],
                ))
                if ctx >= 0:
                    break
                rereads += 1  # a message came in after the last page read
                start = "-"
                continue
            pipe = self._redis.pipeline(transaction=False)
            replies: list[str] = []
            for _entry_id, fields in page:
                try:
                    msg = decode_message(fields[b"m"])
                except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if msg.direction == "out":
                    pipe.delete(keys.outbound(tenant_id, msg.message_id))
                else:
                    replies.append(keys.reply(tenant_id, msg.message_id))
            pipe.xdel(hist, *[e for e, _ in page])
            await pipe.execute()
            if replies:
                await self.drop_replies(replies)
            counts["messages"] = counts.get("messages", 0) + len(page)
            start = "(" + page[-1][0].decode()
        counts["contexts"] = ctx
        await self._progress(counts)

    async def drop_replies(self, names: list[str] | list[bytes]) -> None:
        """Reply records: deleted, except in the first pass those in flight, kept to
        watch. In the final pass those in flight are counted as left (their shard may
        still write after the job)."""
        if self._keep_in_flight:
            kept = await self._drop_settled(keys=list(names), args=[])
            self.kept.update(as_bytes_list(kept))
            return
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(name, "state")
            pipe.delete(name)
        done = await pipe.execute()
        self.in_flight_left += sum(1 for st in done[0::2] if st in IN_FLIGHT)

    def begin(self) -> None:
        """A new erasure (one sweep may run several, e.g. every channel of a person)."""
        self._keep_in_flight = True
        self.kept = set()

    async def settle(self) -> bool:
        """Wait (at most ``settle_s``) until no reply kept by the first pass is in flight
        any more; then the final pass begins. True when there was any (the scope must be
        swept once more: those replies may have written after the first pass)."""
        self._keep_in_flight = False
        watched = sorted(self.kept)
        if not watched:
            return False
        deadline = time.monotonic() + self._settle_s
        while True:
            pipe = self._redis.pipeline(transaction=False)
            for name in watched:
                pipe.hget(name, "state")
            states = await pipe.execute()
            watched = [n for n, st in zip(watched, states, strict=True) if st in IN_FLIGHT]
            left = deadline - time.monotonic()
            if not watched or left <= 0:
                break
            await asyncio.sleep(min(self._settle_poll_s, left))
        self.in_flight_left += len(watched)
        removed = int(await self._redis.delete(*self.kept))
        await self._progress({"records": removed})
        return True
