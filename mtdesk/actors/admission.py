"""Admission: whether an inbound message is answered, and its one step into Redis.

Why a message is recorded but not answered, in this order: stale, stop word, outside
Meta's customer service window (:mod:`mtdesk.actors.window`), another app owns the
thread (:mod:`mtdesk.policy.threads`), restricted, paused (hand-off), bot disabled, channel disconnected, quota exceeded (last, so messages
skipped for other reasons never count against the plan).

- :func:`skip_reason` is the pure part: what is known before Redis is asked (the
  gateway's stale flag, the text, the cached bot and channel status).
- :func:`admit` is the rest, as ONE round trip (``ReplyStore.admit``): the restricted
  set, the pause marker, the reason found here, the allowance, the inbound stored once
  and, when asked, the reply claimed. A skipped message is stored as such; a stop word
  also restricts its sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mtdesk.actors.replies import ReplyRecord
from mtdesk.actors.window import OUTSIDE_WINDOW, is_open, window_end
from mtdesk.core import keys
from mtdesk.core.events import Message, Postback
from mtdesk.core.history import inbound_message
from mtdesk.core.ports import BotConfig
from mtdesk.policy.quotas import consume_call, usage_counter
from mtdesk.policy.threads import OWNED_ELSEWHERE, after_message

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation
    from mtdesk.actors.work import WorkItem

STALE: Final = "stale"
UNSENT_FIRST: Final = "unsent before it was answered"
STOP_WORD: Final = "stop word"
BOT_DISABLED: Final = "bot disabled"
CHANNEL_DISCONNECTED: Final = "channel disconnected"


@dataclass(frozen=True, slots=True)
class Skip:
    """A reason not to answer. ``final``: decided here; otherwise the store's own checks
    (restricted, paused) come first and may give their reason instead."""

    reason: str
    final: bool


def skip_reason(
    event: Message | Postback, bot: BotConfig, channel_connected: bool, *,
    stale: bool = False, stop_words: tuple[str, ...] = (), window_open: bool = True,
    thread_ours: bool = True,
) -> Skip | None:
    """Why ``event`` is not answered, as far as it is known without Redis; None: ask the
    store. ``stale``: the gateway found it older than ``max_event_age_s``; a text equal
    (case-insensitively, trimmed) to one of ``stop_words`` (upper case) restricts the
    sender; ``window_open``: Meta's window still lets us write to the person;
    ``thread_ours``: no other app owns the thread (handover protocol)."""
    if stale:
        return Skip(STALE, final=True)
    text = (event.text or "").strip().upper() if isinstance(event, Message) else ""
    if text and text in stop_words:
        return Skip(STOP_WORD, final=True)
    if not window_open:
        return Skip(OUTSIDE_WINDOW, final=True)
    if not thread_ours:
        return Skip(OWNED_ELSEWHERE, final=True)
    if not bot.enabled:
        return Skip(BOT_DISABLED, final=False)
    if not channel_connected:
        return Skip(CHANNEL_DISCONNECTED, final=False)
    return None


def _usage(tenant_id: str, now_ms: int) -> tuple[str, int, int]:
    key, expire_at_s = usage_counter(tenant_id, now_ms=now_ms)
    return key, 1, expire_at_s


async def admit(
    conv: Conversation, item: WorkItem, *, claim: bool = False
) -> tuple[str, ReplyRecord, bool]:
    """Store the inbound once; returns (skip reason, its reply record, claimed now).
    ``claim``: also claim the reply (no burst members) when it has no state yet; the
    record is then ``generating``."""
    event = item.event
    assert isinstance(event, Message | Postback)
    s = conv.services
    tid = conv.tenant_id
    member = f"{event.channel}:{event.user_id}"
    verdict: Skip | None
    ctx = conv.context
    window_until = max(ctx.window_until_ms, window_end(event, item.received_ms))
    # Delivered on ``messaging`` after the thread went to another app: control came back.
    control = after_message(ctx.thread, event.timestamp_ms, standby=False)
    if control is not None:
        ctx.set_thread(control)
    if item.stale:  # neither the bot nor the channel matter then
        verdict = Skip(STALE, final=True)
    elif event.event_id in conv.unsent:  # the person unsent it before it was answered
        verdict = Skip(UNSENT_FIRST, final=True)
    else:
        # Cached reads (TenantView, a 2 s cache).
        bot = await s.tenants.bot(tid)
        connected = bot.enabled and await s.tenants.channel_connected(
            tid, event.channel, event.account_id)
        verdict = skip_reason(
            event, bot, connected, stop_words=s.settings.stop_words,
            window_open=is_open(window_until, ctx.last_inbound_ms, conv.now_ms()),
            thread_ours=ctx.thread.ours)
    reason = ""
    record: ReplyRecord | None = None
    claimed = False
    # WhatsApp's name for the person rides on the card write of the message itself.
    profiles = s.profiles
    name = profiles.with_message(tid, event) if profiles is not None else None
    if verdict is not None and verdict.final:
        reason = verdict.reason
        if reason == STOP_WORD:
            await s.redis.sadd(keys.restricted(tid), member)
    else:
        now = conv.now_ms()
        # With billing on the allowance is taken in the script (atomic across shards);
        # off, nothing is refused and the count goes with the shard's tally.
        enforce = s.settings.billing_enabled
        reason, record, claimed = await s.replies.admit(
            tid, event.event_id, inbound_message(event), now_ms=now, member=member,
            paused_key=keys.paused(tid, conv.key),
            reason=verdict.reason if verdict is not None else "",
            quota=consume_call(tid, 1 if enforce else 0, now_ms=now, enforce=enforce),
            claim=claim, name=name,
        )
        if not enforce and record is not None and (claimed or not record.state):
            s.tally.counter(tid, *_usage(tid, now))
    if record is None:  # skipped: stored as such (nothing was counted)
        record = await s.replies.store_inbound(
            tid, event.event_id, inbound_message(event, status="skipped", reason=reason),
            now_ms=conv.now_ms(), skip_reason=reason, name=name,
        )
    if name and profiles is not None:
        profiles.written(tid, event)  # stored: the card has it for today
    if reason or claimed or not record.state:  # received now (not a redelivery's answer)
        s.tally.message_in(tid, event.channel, conv.now_ms())
    ctx.last_inbound_ms = max(ctx.last_inbound_ms, event.timestamp_ms)
    ctx.window_until_ms = window_until
    conv.mark_dirty()
    return reason, record, claimed
