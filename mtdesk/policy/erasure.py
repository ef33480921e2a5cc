"""Erasure: what deleting a tenant, a channel or one end user removes, key by key.

The deletion *jobs* (:mod:`mtdesk.policy.deletion`) call these; they are idempotent (a
second run finds nothing and counts zeros) and work in pages (SCAN/ZSCAN/XRANGE with
``batch`` items, pipelined writes), so they never hold Redis for long.

What each erases (Redis names from :mod:`mtdesk.core.keys`):

- **end user** ``(tenant, channel, user_id)``: every conversation of that user on any of
  the tenant's accounts of that channel (history stream, context, pause marker, index
  entry, the reply/outbound state of its messages), the restriction flag, any other
  tenant key that names the user, the user's events still queued in the inbound streams,
  dead letters mentioning the id; shards are told to forget the conversations.
- **channel** ``(tenant, channel id)``: all of the above for every conversation on that
  account, plus the channel record with its token, the routing hash, rate counters, the
  app-scoped-user links and inbound/dead-letter entries of the account.
- **tenant**: every key under ``mt:t:{tenant}:`` and the tenant hash, its API keys, the
  routing of all its accounts, every global key that names the tenant or its accounts
  (e.g. billing references, pending ingestion), inbound/dead-letter entries, and files
  under the data directory whose name carries the tenant id. First of all it sets the
  tenant's erasure marker (:func:`mtdesk.core.keys.erased`, kept
  :data:`ERASURE_MARK_TTL_S`): from then on no knowledge write for the tenant goes
  through (an ingestion job still running cannot re-create what the sweep removed).

Replies in flight: a reply being generated or sent (reply state ``generating``,
``generated`` or ``sending``) while its conversation is erased is still recorded by its
shard when it gets there (history entry, index entry, outbound and reply records). So
each erasure is two passes: the first keeps the reply records in flight that it meets
(found, as always, through the conversation's inbound history entries, or by name in a
tenant's sweep) and, after the scope's sweep, watches them until none is in flight any
more, at most ``settle_s``; then the scope is swept once more, those records included.
``in_flight_left`` counts replies still in flight at the end (waited out, or begun after
the first pass): their shard may still write after the erasure.

Identifiers are matched as whole tokens (not inside a longer id) in raw bytes, which
covers JSON and msgpack values alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import msgspec

from mtdesk.core import keys
from mtdesk.core.events import decode_event
from mtdesk.core.history import decode_message
from mtdesk.core.redis import (
    Redis,
    as_bytes,
    as_bytes_list,
    as_bytes_set,
    as_entries,
    as_opt_bytes,
    as_opt_bytes_list,
    as_scored,
)
from mtdesk.core.scripts import LuaScript

log = logging.getLogger(__name__)

Counts = dict[str, int]
# The erasure marker outlives, by far, any ingestion job that was under way when the
# erasure began (a job's build lock lasts 15 minutes); it names no tenant (a digest).
ERASURE_MARK_TTL_S = 30 * 86400
Progress = Callable[[Counts], Awaitable[None]]

# Tenant keys that never hold end-user data: a user/channel sweep skips them.
_NOT_USER_DATA = ("kb:", "ch:", "channels", "bot")
# Global keys handled by dedicated code (or holding only hashes/ids of no one).
# Routing and rate keys are named by account ids that another tenant may hold by now:
# they are dropped only after checking the owner.
_GLOBAL_SKIP = ("seen:", "job:", "jobs", "in:", "dead", "t:", "retention", "acct:", "rl:")
# Erased exactly by conversation key or "channel:user", never by a loose id match.
_PER_CONVERSATION = ("hist:", "ctx:", "paused:", "convs", "restricted")

# Reply states of a reply still being generated or sent (``mtdesk.actors.replies``): its
# shard will still write (history, outbound and reply records) when it gets there.
IN_FLIGHT = (b"generating", b"generated", b"sending")

# KEYS: reply records. Deletes those not in flight; returns the ones in flight (kept, so
# the job can watch them settle). One step per page: a reply cannot start unseen between
# the look and the delete.
_DROP_SETTLED = """
local kept = {}
for i = 1, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state == 'generating' or state == 'generated' or state == 'sending' then
    kept[#kept + 1] = KEYS[i]
  else
    redis.call('DEL', KEYS[i])
  end
end
return kept
"""

# KEYS: history, context, pause marker, index; ARGV: conversation, force ('1': even with
# entries left). The conversation's remaining keys, once its history stream is empty
# (else -1: a message came in after the last page read, page through it again). Returns
# whether a context was deleted.
_DROP_CONVERSATION = """
if ARGV[2] ~= '1' and redis.call('XLEN', KEYS[1]) > 0 then return -1 end
redis.call('DEL', KEYS[1])
local ctx = redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return ctx
"""


def id_pattern(identifiers: Iterable[str]) -> re.Pattern[bytes] | None:
    """Bytes regex matching any identifier as a whole token (not inside a longer id)."""
    alts = sorted({i for i in identifiers if i}, key=len, reverse=True)
    if not alts:
        return None
    body = b"|".join(re.escape(a.encode("utf-8")) for a in alts)
    return re.compile(rb"(?<![A-Za-z0-9_])(?:" + body + rb")(?![A-Za-z0-9_])")


def _split_conv(conv: str) -> tuple[str, str, str] | None:
    parts = conv.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


class Eraser:
    """Deletes by tenant, channel or end user. ``progress`` receives count deltas."""

    def __init__(
        self,
        redis: Redis,
        *,
        partitions: int,
        data_dir: str,
        progress: Progress | None = None,
        batch: int = 500,
        settle_s: float = 0.0,
        settle_poll_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self._partitions = partitions
        self._data_dir = Path(data_dir)
        self._progress = progress
        self._batch = batch
        self._settle_s = settle_s
        self._settle_poll_s = settle_poll_s
        self._drop_settled = LuaScript(_DROP_SETTLED, name="drop_settled").bind(redis)
        self._drop_conversation = LuaScript(_DROP_CONVERSATION, name="drop_conversation").bind(redis)
        # First pass: reply records in flight are kept (and watched); final pass: not.
        self._keep_in_flight = True
        self._kept: set[bytes] = set()
        self.in_flight_left = 0  # replies still in flight when the erasure ended

    async def _report(self, counts: Counts) -> None:
        counts = {k: v for k, v in counts.items() if v}
        if counts and self._progress is not None:
            await self._progress(counts)

    async def _notify(self, notice: Mapping[str, object]) -> None:
        # Pub/sub: nothing is stored, so the notice itself leaves no trace of the user.
        await self._redis.publish(keys.PURGE, json.dumps(notice))

    # --- conversations ------------------------------------------------------------------
    async def _find_conversations(
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
        cursor = 0
        prefix = keys.tenant_prefix(tenant_id)
        while True:
            cursor, names = await self._redis.scan(cursor, match=f"{prefix}*", count=self._batch)
            for raw in as_bytes_list(names):
                rest = raw.decode("utf-8", "replace")[len(prefix):]
                kind, _, conv = rest.partition(":")
                if kind in ("hist", "ctx", "paused") and conv and want(conv):
                    found.append(conv)
            if cursor == 0:
                break
        return sorted(set(found))

    async def _erase_conversations(self, tenant_id: str, convs: list[str]) -> None:
        for conv in convs:
            await self._erase_conversation(tenant_id, conv)

    async def _erase_conversation(self, tenant_id: str, conv: str) -> None:
        """History, context, pause, index entry and the per-message reply/outbound state."""
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
                          keys.conversations(tenant_id)],
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
                await self._drop_replies(replies)
            counts["messages"] = counts.get("messages", 0) + len(page)
            start = "(" + page[-1][0].decode()
        counts["contexts"] = ctx
        await self._report(counts)

    async def _drop_replies(self, names: list[str] | list[bytes]) -> None:
        """Reply records: deleted, except in the first pass those in flight, kept to
        watch. In the final pass those in flight are counted as left (their shard may
        still write after the job)."""
        if self._keep_in_flight:
            kept = await self._drop_settled(keys=list(names), args=[])
            self._kept.update(as_bytes_list(kept))
            return
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(name, "state")
            pipe.delete(name)
        done = await pipe.execute()
        self.in_flight_left += sum(1 for st in done[0::2] if st in IN_FLIGHT)

    def _begin(self) -> None:
        """A new erasure (one Eraser may run several, e.g. every channel of a person)."""
        self._keep_in_flight = True
        self._kept = set()

    async def _settle(self) -> bool:
        """Wait (at most ``settle_s``) until no reply kept by the first pass is in flight
        any more; then the final pass begins. True when there was any (the scope must be
        swept once more: those replies may have written after the first pass)."""
        self._keep_in_flight = False
        watched = sorted(self._kept)
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
        removed = int(await self._redis.delete(*self._kept))
        await self._report({"records": removed})
        return True

    # --- generic sweeps -----------------------------------------------------------------
    async def _sweep_names(self, names: list[bytes], pattern: re.Pattern[bytes]) -> int:
        """Remove what names an identifier from these keys (pipelined); items removed."""
        r = self._redis
        removed = 0
        rest: list[bytes] = []
        for name in names:
            if pattern.search(name):
                removed += int(await r.delete(name))
            else:
                rest.append(name)
        if not rest:
            return removed
        pipe = r.pipeline(transaction=False)
        for name in rest:
            pipe.type(name)
        types = [t.decode() for t in await pipe.execute()]
        small = [(n, t) for n, t in zip(rest, types, strict=True) if t in ("string", "hash")]
        pipe = r.pipeline(transaction=False)
        for name, kind in small:
            pipe.get(name) if kind == "string" else pipe.hgetall(name)
        values = await pipe.execute() if small else []
        for (name, kind), value in zip(small, values, strict=True):
            if kind == "string":
                if value and pattern.search(value):
                    removed += int(await r.delete(name))
                continue
            if any(pattern.search(v) for v in value.values()):
                removed += int(await r.delete(name))  # a record about the person
                continue
            fields = [f for f in value if pattern.search(f)]
            if fields:
                removed += int(await r.hdel(name, *fields))
        for name, kind in zip(rest, types, strict=True):
            if kind not in ("string", "hash"):
                removed += await self._sweep_container(name, kind, pattern)
        return removed

    async def _sweep_container(self, name: bytes, kind: str, pattern: re.Pattern[bytes]) -> int:
        r = self._redis
        if kind in ("set", "zset"):
            hits: list[bytes] = []
            cursor = 0
            while True:
                if kind == "set":
                    cursor, page = await r.sscan(name, cursor, count=self._batch)
                    members = as_bytes_list(page)
                else:
                    cursor, rows = await r.zscan(name, cursor, count=self._batch)
                    members = [m for m, _ in as_scored(rows)]
                hits.extend(m for m in members if pattern.search(m))
                if cursor == 0:
                    break
            if not hits:
                return 0
            return int(await (r.srem(name, *hits) if kind == "set" else r.zrem(name, *hits)))
        if kind == "list":
            removed = 0
            values = as_bytes_list(await r.lrange(name, 0, -1))
            for value in {v for v in values if pattern.search(v)}:
                # redis-py annotates LREM's value as str; the exact bytes must be sent back
                # (decoding could alter a non-UTF-8 member and miss it).
                removed += int(await r.lrem(name, 0, value))  # type: ignore[arg-type]
            return removed
        if kind == "stream":
            return await self._sweep_stream(name, lambda fields: any(
                pattern.search(v) for v in fields.values()
            ))
        return 0

    async def _sweep_stream(
        self, name: bytes | str, match: Callable[[dict[bytes, bytes]], bool]
    ) -> int:
        removed = 0
        start = "-"
        while True:
            page = as_entries(await self._redis.xrange(name, start, "+", count=self._batch))
            if not page:
                return removed
            hits = [entry_id for entry_id, fields in page if match(fields)]
            if hits:
                removed += int(await self._redis.xdel(name, *hits))
            start = "(" + page[-1][0].decode()

    async def _sweep_tenant_keys(
        self, tenant_id: str, pattern: re.Pattern[bytes], convs: set[str],
        conv_prefix: str | None = None,
    ) -> None:
        """Every tenant key that may name the person, except other conversations' data."""
        prefix = keys.tenant_prefix(tenant_id)
        removed = 0
        cursor = 0
        while True:
            cursor, names = await self._redis.scan(cursor, match=f"{prefix}*", count=self._batch)
            todo: list[bytes] = []
            outs: list[bytes] = []
            for raw in as_bytes_list(names):
                rest = raw.decode("utf-8", "replace")[len(prefix):]
                if rest.startswith(_NOT_USER_DATA) or rest.startswith(_PER_CONVERSATION):
                    continue  # not user data, or handled exactly (conversations, flags)
                if raw in self._kept:
                    continue  # a reply in flight, watched until it settles
                (outs if rest.startswith("out:") else todo).append(raw)
            if outs:
                pipe = self._redis.pipeline(transaction=False)
                for raw in outs:
                    pipe.hget(raw, "conv")
                for raw, conv in zip(outs, await pipe.execute(), strict=True):
                    c = conv.decode() if conv else ""
                    if c in convs or (conv_prefix and c.startswith(conv_prefix)):
                        removed += int(await self._redis.delete(raw))
                    else:
                        todo.append(raw)
            removed += await self._sweep_names(todo, pattern)
            if cursor == 0:
                break
        await self._report({"records": removed})

    async def _sweep_inbound(self, match: Callable[[str, object], bool]) -> None:
        """Queued events (not yet processed by a shard) that ``match(tenant, event)``."""
        removed = 0
        for p in range(self._partitions):
            def hit(fields: dict[bytes, bytes]) -> bool:
                tenant = fields.get(b"t", b"").decode("utf-8", "replace")
                try:
                    event = decode_event(fields.get(b"e", b""))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return False
                return match(tenant, event)

            removed += await self._sweep_stream(keys.inbound(p), hit)
        await self._report({"inbound_events": removed})

    async def _sweep_dead_letters(self, pattern: re.Pattern[bytes]) -> None:
        kind = as_bytes(await self._redis.type(keys.DEAD_LETTERS)).decode()
        if kind == "none":
            return
        removed = await self._sweep_container(keys.DEAD_LETTERS.encode(), kind, pattern)
        await self._report({"dead_letters": removed})

    async def _sweep_global(self, pattern: re.Pattern[bytes]) -> None:
        """Global keys (outside any tenant prefix) naming the identifiers."""
        removed = 0
        cursor = 0
        root = keys.ROOT + ":"
        while True:
            cursor, names = await self._redis.scan(cursor, match=f"{root}*", count=self._batch)
            todo = [n for n in as_bytes_list(names)
                    if not n.decode("utf-8", "replace")[len(root):].startswith(_GLOBAL_SKIP)]
            removed += await self._sweep_names(todo, pattern)
            if cursor == 0:
                break
        await self._report({"global_records": removed})

    async def _drop_app_user_links(self, members: set[str]) -> None:
        removed = 0
        cursor = 0
        while True:
            cursor, names = await self._redis.scan(
                cursor, match=keys.app_user("*"), count=self._batch
            )
            for name in names:
                if members:
                    removed += int(await self._redis.srem(name, *members))
                if await self._redis.scard(name) == 0:
                    await self._redis.delete(name)
            if cursor == 0:
                break
        await self._report({"app_user_links": removed})

    async def _delete_matching(self, match: str) -> int:
        removed = 0
        cursor = 0
        while True:
            cursor, names = await self._redis.scan(cursor, match=match, count=self._batch)
            if names:
                removed += int(await self._redis.unlink(*names))
            if cursor == 0:
                return removed

    async def _drop_routing(self, tenant_id: str, channel: str, account_id: str) -> None:
        route = keys.account(channel, account_id)
        owner = as_opt_bytes(await self._redis.hget(route, "tenant"))
        removed = 0
        if owner is not None and owner.decode() == tenant_id:
            removed = int(await self._redis.delete(route))
        await self._delete_matching(f"{keys.ROOT}:rl:{channel}:{account_id}:*")
        await self._report({"routing": removed})

    # --- the three erasures -------------------------------------------------------------
    async def erase_user(self, tenant_id: str, channel: str, user_id: str) -> None:
        """One end user across the tenant's accounts of ``channel``."""
        self._begin()

        def mine(conv: str) -> bool:
            parts = _split_conv(conv)
            return parts is not None and parts[0] == channel and parts[2] == user_id

        convs = await self._find_conversations(tenant_id, mine)
        await self._notify({"scope": "conversations", "tenant": tenant_id, "conversations": convs})
        await self._user_pass(tenant_id, channel, user_id, convs)
        if await self._settle():  # replies were in flight: what they wrote goes too
            again = await self._find_conversations(tenant_id, mine)
            await self._user_pass(tenant_id, channel, user_id, again)
            convs = sorted({*convs, *again})
        # Again at the end: a message being answered meanwhile may have been cached.
        await self._notify({"scope": "conversations", "tenant": tenant_id, "conversations": convs})

    async def _user_pass(
        self, tenant_id: str, channel: str, user_id: str, convs: list[str]
    ) -> None:
        await self._erase_conversations(tenant_id, convs)
        removed = int(await self._redis.srem(keys.restricted(tenant_id), f"{channel}:{user_id}"))
        await self._report({"restrictions": removed})
        pattern = id_pattern([user_id])
        assert pattern is not None
        await self._sweep_tenant_keys(tenant_id, pattern, set(convs))
        await self._sweep_inbound(
            lambda t, e: t == tenant_id and getattr(e, "channel", None) == channel
            and user_id in (getattr(e, "user_id", None), getattr(e, "wa_id", None))
        )
        await self._sweep_dead_letters(pattern)

    async def erase_channel(
        self, tenant_id: str, channel_id: str, channel: str, account_id: str
    ) -> None:
        """All Platform Data of one connected account of the tenant."""
        self._begin()
        prefix = f"{channel}:{account_id}:"
        notice = {"scope": "channel", "tenant": tenant_id, "prefix": prefix}
        await self._notify(notice)
        await self._drop_routing(tenant_id, channel, account_id)
        hkey = keys.channel(tenant_id, channel_id)
        asid = as_opt_bytes(await self._redis.hget(hkey, "connected_by"))
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(hkey)
        pipe.srem(keys.channels(tenant_id), channel_id)
        deleted, _ = await pipe.execute()
        await self._report({"channels": int(deleted)})
        link = f"{tenant_id}:{channel_id}"
        if asid is not None:
            await self._redis.srem(keys.app_user(asid.decode()), link)
        await self._drop_app_user_links({link})

        await self._channel_pass(tenant_id, channel, account_id)
        if await self._settle():  # replies were in flight: what they wrote goes too
            await self._drop_routing(tenant_id, channel, account_id)  # their rate counters
            await self._channel_pass(tenant_id, channel, account_id)
        await self._notify(notice)

    async def _channel_pass(self, tenant_id: str, channel: str, account_id: str) -> None:
        prefix = f"{channel}:{account_id}:"
        convs = await self._find_conversations(tenant_id, lambda c: c.startswith(prefix))
        await self._erase_conversations(tenant_id, convs)
        # Restriction flags are "channel:user" (no account): keep a flag while the same
        # user still has a conversation on another account of this channel.
        users = {p[2] for c in convs if (p := _split_conv(c)) is not None}
        remaining = await self._find_conversations(
            tenant_id, lambda c: c.startswith(f"{channel}:") and c.split(":", 2)[-1] in users
        )
        still = {p[2] for c in remaining if (p := _split_conv(c)) is not None}
        gone = [f"{channel}:{u}" for u in users - still]
        removed = int(await self._redis.srem(keys.restricted(tenant_id), *gone)) if gone else 0
        await self._report({"restrictions": removed})

        pattern = id_pattern([account_id])
        assert pattern is not None
        await self._sweep_tenant_keys(tenant_id, pattern, set(convs), conv_prefix=prefix)
        await self._sweep_inbound(
            lambda t, e: t == tenant_id and getattr(e, "channel", None) == channel
            and getattr(e, "account_id", None) == account_id
        )
        await self._sweep_dead_letters(pattern)

    async def erase_tenant(self, tenant_id: str, accounts: Iterable[tuple[str, str]] = ()) -> None:
        """Everything of a tenant. ``accounts`` adds (channel, account id) pairs known
        from before (a resumed job whose channel records are already gone)."""
        self._begin()
        notice = {"scope": "tenant", "tenant": tenant_id}
        r = self._redis
        await r.set(keys.erased(tenant_id), b"1", ex=ERASURE_MARK_TTL_S)
        await self._notify(notice)
        known = set(accounts)
        for raw in as_bytes_set(await r.smembers(keys.channels(tenant_id))):
            raw_ch, raw_acct = as_opt_bytes_list(
                await r.hmget(keys.channel(tenant_id, raw.decode()), "channel", "account_id")
            )
            if raw_ch and raw_acct:
                known.add((raw_ch.decode(), raw_acct.decode()))
        api_hash = as_opt_bytes(await r.hget(keys.tenant(tenant_id), "api_key_hash"))
        if api_hash:
            await self._report({"api_keys": int(await r.delete(keys.api_key(api_hash.decode())))})
        await r.srem(keys.TENANTS, tenant_id)
        for ch, acct in sorted(known):
            await self._drop_routing(tenant_id, ch, acct)

        await self._unlink_tenant_keys(tenant_id)
        pattern = id_pattern([tenant_id, *(a for _, a in known)])
        assert pattern is not None
        await self._sweep_global(pattern)  # API keys, billing references, pending jobs …
        await self._drop_app_user_links(set())
        await self._sweep_inbound(
            lambda t, e: t == tenant_id
            or (getattr(e, "channel", None), getattr(e, "account_id", None)) in known
        )
        await self._sweep_dead_letters(pattern)
        await self._report({"files": self._erase_files(tenant_id)})
        if await self._settle():  # replies were in flight: what they wrote goes too
            await self._unlink_tenant_keys(tenant_id)
            for ch, acct in sorted(known):
                await self._drop_routing(tenant_id, ch, acct)  # their rate counters
        await self._report({"tenants": int(await r.delete(keys.tenant(tenant_id)))})
        await self._notify(notice)

    async def _unlink_tenant_keys(self, tenant_id: str) -> None:
        """Every key of the tenant, counted by what it held (in the first pass, reply
        records in flight are kept, to be watched)."""
        r = self._redis
        prefix = keys.tenant_prefix(tenant_id)
        counts: Counts = {}
        cursor = 0
        while True:
            cursor, page = await r.scan(cursor, match=f"{prefix}*", count=self._batch)
            names = as_bytes_list(page)
            if names:
                pipe = r.pipeline(transaction=False)
                for name in names:
                    pipe.type(name)
                types = await pipe.execute()
                pipe = r.pipeline(transaction=False)
                for name, kind in zip(names, types, strict=True):
                    if b"hist:" in name and kind == b"stream":
                        pipe.xlen(name)
                for n in await pipe.execute():
                    counts["messages"] = counts.get("messages", 0) + int(n)
                replies: list[bytes] = []
                others: list[bytes] = []
                for name in names:
                    kind = name.decode("utf-8", "replace")[len(prefix):].split(":", 1)[0]
                    label = {"hist": "conversations", "ctx": "contexts", "kb": "knowledge_keys",
                             "ch": "channels", "reply": "records", "out": "records"}.get(
                                 kind, "other_keys")
                    counts[label] = counts.get(label, 0) + 1
                    (replies if kind == "reply" else others).append(name)
                if others:
                    await r.unlink(*others)
                if replies:
                    before = len(self._kept)
                    await self._drop_replies(replies)
                    counts["records"] -= len(self._kept) - before  # kept: not deleted yet
                await self._report(counts)
                counts = {}
            if cursor == 0:
                break

    def _erase_files(self, tenant_id: str) -> int:
        """Files and folders under the data directory named with the tenant id."""
        if not self._data_dir.is_dir():
            return 0
        pattern = id_pattern([tenant_id])
        assert pattern is not None
        removed = 0
        # Deepest first, so a folder's contents are counted before it goes.
        for path in sorted(self._data_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if not path.exists() and not path.is_symlink():
                continue
            if pattern.search(path.name.encode("utf-8", "replace")):
                if path.is_dir() and not path.is_symlink():
                    removed += sum(1 for p in path.rglob("*") if p.is_file())
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
