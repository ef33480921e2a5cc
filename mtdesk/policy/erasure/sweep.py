"""The erasure sweep: what erasing a tenant, a channel or one end user removes, key by key.

The deletion jobs (:mod:`mtdesk.policy.erasure.jobs`) run it; they are idempotent (a
second run finds nothing and counts zeros) and work in pages (SCAN/ZSCAN/XRANGE with
``batch`` items, pipelined writes), so they never hold Redis for long.

Which keys it looks at, and how, comes from the key registry (:data:`keys.FAMILIES`,
each family's :class:`~mtdesk.core.keys.Erasure` rule; keys are classified with
:func:`keys.parse`). What each erases:

- **end user** ``(tenant, channel, user_id)``: every conversation of that user on any of
  the tenant's accounts of that channel (history stream, context, pause marker, index
  entry, the reply/outbound state of its messages), the restriction flag, any other
  tenant key that names the user, the user's events still queued in the inbound streams,
  the tenant's own dead letters mentioning the id; shards are told to forget the
  conversations.
- **channel** ``(tenant, channel id)``: all of the above for every conversation on that
  account, plus the channel record with its token, the routing hash, rate counters, the
  app-scoped-user links, inbound events and the tenant's dead letters of the account.
- **tenant**: every key under ``mt:t:{tenant}:`` and the tenant hash, its API keys, the
  routing of all its accounts, every global record owned by the tenant (billing
  references, pending ingestion, app-user links), inbound events, its dead letters, files
  under the data directory whose name carries the tenant id. First of all it sets the
  tenant's erasure marker (:func:`mtdesk.core.keys.erased`, kept
  :data:`ERASURE_MARK_TTL_S`): from then on no knowledge write for the tenant goes
  through (an ingestion job still running cannot re-create what the sweep removed).

Replies in flight (:mod:`mtdesk.policy.erasure.conversations`): a reply being generated
or sent (reply state ``generating``, ``generated`` or ``sending``) while its conversation
is erased is still recorded by its shard when it gets there (history entry, index
entry, outbound and reply records). So
each erasure is two passes: the first keeps the reply records in flight that it meets
(found, as always, through the conversation's inbound history entries, or by name in a
tenant's sweep) and, after the scope's sweep, watches them until none is in flight any
more, at most ``settle_s``; then the scope is swept once more, those records included.
``in_flight_left`` counts replies still in flight at the end (waited out, or begun after
the first pass): their shard may still write after the erasure.

Dead letters (raw webhook bodies) carry the tenant that owned every account they name
(field ``t``, resolved when they were written; see :mod:`mtdesk.gateway.dead_letters`)
and those accounts (``a``). An erasure removes only its own tenant's: an entry of another
tenant, of several, or of none known is never touched (nor counted) by a tenant's job;
retention trims it after the maximum period.

Identifiers are matched as whole tokens (:mod:`mtdesk.policy.erasure.records`).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import msgspec

from mtdesk.core import keys
from mtdesk.core.errors import DecryptionError
from mtdesk.core.events import EVENT_FAMILY, decode_event
from mtdesk.core.keys import Erasure, Scope
from mtdesk.core.redis import (
    Redis,
    as_bytes_set,
    as_opt_bytes,
    as_opt_bytes_list,
    scan_pages,
)
from mtdesk.core.sealing import TenantCipher, is_sealed
from mtdesk.core.tenants import unroute_tenant
from mtdesk.policy.erasure.conversations import ConversationEraser, split_conversation
from mtdesk.policy.erasure.notices import (
    ChannelNotice,
    ConversationsNotice,
    Notice,
    TenantNotice,
    publish_notice,
)
from mtdesk.policy.erasure.records import Fields, RecordSweeper, id_pattern

log = logging.getLogger(__name__)

Counts = dict[str, int]
# The erasure marker outlives, by far, any ingestion job that was under way when the
# erasure began (a job's build lock lasts 15 minutes); it names no tenant (a digest).
ERASURE_MARK_TTL_S = 30 * 86400
Progress = Callable[[Counts], Awaitable[None]]

# How a user's or a channel's erasure treats a tenant key, by its family's rule: skipped
# when the rule is carried out exactly elsewhere (by conversation key, by "channel:user"
# member, with the channel record) or the family holds no end user's data; swept for
# the erased ids otherwise (a key of no registered family too: the safe default).
_EXACTLY_ELSEWHERE = frozenset({
    Erasure.CONVERSATION, Erasure.MEMBERS, Erasure.WITH_TENANT, Erasure.WITH_CHANNEL,
})
# How an account erasure treats a global key, by its family's rule: records it owns are
# swept for the tenant id; routing and rate keys are named by account ids another tenant
# may hold by now (dropped only after checking the owner); streams are swept entry by
# entry; the rest names no tenant.
_GLOBAL_BY_OWNER = frozenset({Erasure.OWNED})
# The rules this module carries out: the two sets above, the token sweep (NAMED, and any
# key of no family), the conversation's messages (MESSAGE), routing (ROUTE), streams
# (ENTRIES) and nothing for NONE. tests/core/test_key_registry.py checks that every
# family's rule is one of them.
RULES_CARRIED_OUT = _EXACTLY_ELSEWHERE | _GLOBAL_BY_OWNER | {
    Erasure.NAMED, Erasure.MESSAGE, Erasure.ROUTE, Erasure.ENTRIES, Erasure.NONE,
}

class ErasureSweep:
    """Erases by tenant, channel or end user. ``progress`` receives count deltas."""

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
        cipher: TenantCipher | None = None,
    ) -> None:
        self._redis = redis
        # Opens the sealed inbound events of the tenant whose user or channel is erased.
        self._cipher = cipher or TenantCipher.disabled()
        self._partitions = partitions
        self._data_dir = Path(data_dir)
        self._progress = progress
        self._batch = batch
        self._records = RecordSweeper(redis, batch=batch)
        self._conversations = ConversationEraser(
            redis, self._report, batch=batch, settle_s=settle_s, settle_poll_s=settle_poll_s)

    @property
    def in_flight_left(self) -> int:
        """Replies still in flight when the erasure ended (their shard may still write)."""
        return self._conversations.in_flight_left

    async def _report(self, counts: Counts) -> None:
        counts = {k: v for k, v in counts.items() if v}
        if counts and self._progress is not None:
            await self._progress(counts)

    async def _notify(self, notice: Notice) -> None:
        await publish_notice(self._redis, notice)

    # --- sweeps by family ----------------------------------------------------------------
    async def _sweep_tenant_keys(
        self, tenant_id: str, pattern: re.Pattern[bytes], convs: set[str],
        conv_prefix: str | None = None,
    ) -> None:
        """Every tenant key that may name the person, except other conversations' data."""
        removed = 0
        match = keys.tenant_pattern(tenant_id)
        async for names in scan_pages(self._redis, match=match, count=self._batch):
            todo: list[bytes] = []
            outs: list[bytes] = []
            for raw in names:
                ref = keys.parse(raw)
                if ref is not None and ref.family.erasure in _EXACTLY_ELSEWHERE:
                    continue  # not user data, or handled exactly (conversations, flags)
                if raw in self._conversations.kept:
                    continue  # a reply in flight, watched until it settles
                # An outbound record says its conversation: erased by that, not by a match.
                (outs if ref is not None and ref.family is keys.OUTBOUND else todo).append(raw)
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
            removed += await self._records.names(todo, pattern)
        await self._report({"records": removed})

    async def _sweep_inbound(self, tenant_id: str, match: Callable[[str, object], bool]) -> None:
        """Queued events (not yet processed by a shard) that ``match(tenant, event)``. A
        sealed event is opened with ``tenant_id``'s key when it is that tenant's (one of
        another tenant, or of a tenant whose key is gone, is matched as ``None``)."""
        try:
            sealer = await self._cipher.key(tenant_id, create=False)
        except DecryptionError:
            sealer = None  # shredded: its events are matched by their tenant field
        removed = 0
        for p in range(self._partitions):
            def hit(fields: dict[bytes, bytes]) -> bool:
                tenant = fields.get(b"t", b"").decode("utf-8", "replace")
                raw = fields.get(b"e", b"")
                event: object = None
                try:
                    if not is_sealed(raw):
                        event = decode_event(raw)
                    elif sealer is not None and tenant == tenant_id:
                        event = decode_event(sealer.open(EVENT_FAMILY, "", raw))
                except (msgspec.DecodeError, msgspec.ValidationError, DecryptionError):
                    event = None
                return match(tenant, event)

            removed += await self._records.stream(keys.inbound(p), hit)
        await self._report({"inbound_events": removed})

    async def _sweep_dead_letters(
        self, tenant_id: str, match: Callable[[set[str], bytes], bool]
    ) -> None:
        """The tenant's own dead letters for which ``match(accounts, body)``; an entry
        owned by another tenant, by several or by none known is never looked into."""
        owner = tenant_id.encode()

        def hit(fields: Fields) -> bool:
            if fields.get(b"t") != owner:
                return False
            accounts = set(fields.get(b"a", b"").decode("utf-8", "replace").split())
            return match(accounts, fields.get(b"b", b""))

        removed = await self._records.stream(keys.DEAD_LETTERS, hit)
        await self._report({"dead_letters": removed})

    async def _sweep_global(self, tenant_id: str, fallback: re.Pattern[bytes]) -> None:
        """Global records the tenant owns (its id as a whole token); a global key of no
        registered family is swept for ``fallback`` (the tenant and its accounts)."""
        owned = id_pattern([tenant_id])
        assert owned is not None
        removed = 0
        async for names in scan_pages(self._redis, match=f"{keys.ROOT}:*", count=self._batch):
            by_owner: list[bytes] = []
            unknown: list[bytes] = []
            for name in names:
                ref = keys.parse(name)
                if ref is None:
                    unknown.append(name)
                elif ref.family.scope is Scope.GLOBAL and ref.family.erasure in _GLOBAL_BY_OWNER:
                    by_owner.append(name)
            removed += await self._records.names(by_owner, owned)
            removed += await self._records.names(unknown, fallback)
        await self._report({"global_records": removed})

    async def _drop_app_user_links(self, members: set[str]) -> None:
        removed = 0
        async for names in scan_pages(
                self._redis, match=keys.global_pattern(keys.APP_USER), count=self._batch):
            for name in names:
                if members:
                    removed += int(await self._redis.srem(name, *members))
                if await self._redis.scard(name) == 0:
                    await self._redis.delete(name)
        await self._report({"app_user_links": removed})

    async def _delete_matching(self, match: str) -> int:
        removed = 0
        async for names in scan_pages(self._redis, match=match, count=self._batch):
            removed += int(await self._redis.unlink(*names))
        return removed

    async def _drop_routing(self, tenant_id: str, channel: str, account_id: str) -> None:
        removed = await unroute_tenant(self._redis, channel, account_id, tenant_id)
        await self._delete_matching(keys.global_pattern(keys.RATE, channel, account_id))
        await self._report({"routing": removed})

    # --- the three erasures -------------------------------------------------------------
    async def erase_user(self, tenant_id: str, channel: str, user_id: str) -> None:
        """One end user across the tenant's accounts of ``channel``."""
        self._conversations.begin()

        def mine(conv: str) -> bool:
            parts = split_conversation(conv)
            return parts is not None and parts[0] == channel and parts[2] == user_id

        convs = await self._conversations.find(tenant_id, mine)
        await self._notify(ConversationsNotice(tenant_id, tuple(convs)))
        await self._user_pass(tenant_id, channel, user_id, convs)
        if await self._conversations.settle():  # replies were in flight: what they wrote goes too
            again = await self._conversations.find(tenant_id, mine)
            await self._user_pass(tenant_id, channel, user_id, again)
            convs = sorted({*convs, *again})
        # Again at the end: a message being answered meanwhile may have been cached.
        await self._notify(ConversationsNotice(tenant_id, tuple(convs)))

    async def _user_pass(
        self, tenant_id: str, channel: str, user_id: str, convs: list[str]
    ) -> None:
        await self._conversations.erase(tenant_id, convs)
        removed = int(await self._redis.srem(keys.restricted(tenant_id), f"{channel}:{user_id}"))
        await self._report({"restrictions": removed})
        pattern = id_pattern([user_id])
        assert pattern is not None
        await self._sweep_tenant_keys(tenant_id, pattern, set(convs))
        await self._sweep_inbound(
            tenant_id,
            lambda t, e: t == tenant_id and getattr(e, "channel", None) == channel
            and user_id in (getattr(e, "user_id", None), getattr(e, "wa_id", None))
        )
        await self._sweep_dead_letters(tenant_id, lambda _accounts, body: bool(pattern.search(body)))

    async def erase_channel(
        self, tenant_id: str, channel_id: str, channel: str, account_id: str
    ) -> None:
        """All Platform Data of one connected account of the tenant."""
        self._conversations.begin()
        prefix = f"{channel}:{account_id}:"
        notice = ChannelNotice(tenant_id, prefix)
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
        if await self._conversations.settle():  # replies were in flight: what they wrote goes too
            await self._drop_routing(tenant_id, channel, account_id)  # their rate counters
            await self._channel_pass(tenant_id, channel, account_id)
        await self._notify(notice)

    async def _channel_pass(self, tenant_id: str, channel: str, account_id: str) -> None:
        prefix = f"{channel}:{account_id}:"
        convs = await self._conversations.find(tenant_id, lambda c: c.startswith(prefix))
        await self._conversations.erase(tenant_id, convs)
        # Restriction flags are "channel:user" (no account): keep a flag while the same
        # user still has a conversation on another account of this channel.
        users = {p[2] for c in convs if (p := split_conversation(c)) is not None}
        remaining = await self._conversations.find(
            tenant_id, lambda c: c.startswith(f"{channel}:") and c.split(":", 2)[-1] in users
        )
        still = {p[2] for c in remaining if (p := split_conversation(c)) is not None}
        gone = [f"{channel}:{u}" for u in users - still]
        removed = int(await self._redis.srem(keys.restricted(tenant_id), *gone)) if gone else 0
        await self._report({"restrictions": removed})

        pattern = id_pattern([account_id])
        assert pattern is not None
        await self._sweep_tenant_keys(tenant_id, pattern, set(convs), conv_prefix=prefix)
        await self._sweep_inbound(
            tenant_id,
            lambda t, e: t == tenant_id and getattr(e, "channel", None) == channel
            and getattr(e, "account_id", None) == account_id
        )
        account = f"{channel}:{account_id}"
        await self._sweep_dead_letters(tenant_id, lambda accounts, _body: account in accounts)

    async def erase_tenant(self, tenant_id: str, accounts: Iterable[tuple[str, str]] = ()) -> None:
        """Everything of a tenant. ``accounts`` adds (channel, account id) pairs known
        from before (a resumed job whose channel records are already gone)."""
        self._conversations.begin()
        notice = TenantNotice(tenant_id)
        r = self._redis
        await r.set(keys.erased(tenant_id), b"1", ex=ERASURE_MARK_TTL_S)
        # Its data key first (crypto-shredding; already done when the job was scheduled
        # through DeletionJobs): from here on nothing of the tenant opens anywhere.
        shredded = await self._cipher.shred_in_keystore(tenant_id)  # the key store's first
        await self._report({"data_keys": shredded + int(await r.delete(keys.data_key(tenant_id)))})
        # The key store's own files lose the key too (a rewrite of a few kilobytes).
        await self._cipher.compact_keystore()
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
        await self._sweep_global(tenant_id, pattern)  # billing references, pending jobs …
        await self._drop_app_user_links(set())
        await self._sweep_inbound(
            tenant_id,
            lambda t, e: t == tenant_id
            or (getattr(e, "channel", None), getattr(e, "account_id", None)) in known
        )
        await self._sweep_dead_letters(tenant_id, lambda _accounts, _body: True)
        await self._report({"files": self._erase_files(tenant_id)})
        if await self._conversations.settle():  # replies were in flight: what they wrote goes too
            await self._unlink_tenant_keys(tenant_id)
            for ch, acct in sorted(known):
                await self._drop_routing(tenant_id, ch, acct)  # their rate counters
        await self._report({"tenants": int(await r.delete(keys.tenant(tenant_id)))})
        await self._notify(notice)

    async def _unlink_tenant_keys(self, tenant_id: str) -> None:
        """Every key of the tenant, counted by what it held (in the first pass, reply
        records in flight are kept, to be watched)."""
        r = self._redis
        counts: Counts = {}
        async for names in scan_pages(r, match=keys.tenant_pattern(tenant_id),
                                      count=self._batch):
            if names:
                refs = [keys.parse(name) for name in names]
                pipe = r.pipeline(transaction=False)
                for name, ref in zip(names, refs, strict=True):
                    if ref is not None and ref.family is keys.HISTORY:
                        pipe.xlen(name)
                for n in await pipe.execute(raise_on_error=False):
                    if isinstance(n, int):  # not a stream after all: no messages to count
                        counts["messages"] = counts.get("messages", 0) + n
                replies: list[bytes] = []
                others: list[bytes] = []
                for name, ref in zip(names, refs, strict=True):
                    label = ref.family.counted_as if ref is not None else "other_keys"
                    counts[label] = counts.get(label, 0) + 1
                    # Reply records may be in flight: kept (and watched) in the first pass.
                    is_reply = ref is not None and ref.family is keys.REPLY
                    (replies if is_reply else others).append(name)
                if others:
                    await r.unlink(*others)
                if replies:
                    before = len(self._conversations.kept)
                    await self._conversations.drop_replies(replies)
                    counts["records"] -= len(self._conversations.kept) - before  # kept: not deleted yet
                await self._report(counts)
                counts = {}

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
