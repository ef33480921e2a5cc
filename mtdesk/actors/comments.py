"""Instagram comments on the business's media: recorded, and maybe answered privately.

A :class:`~mtdesk.core.events.Comment` is stored in its author's conversation (kind
``comment``: the comment id, media id, username, text, the comment it replies to), so
the inbox, exports, retention and erasure treat it as they treat messages. It is never
answered in public. When the bot's ``comment_replies`` is ``"private"`` it is answered
with ONE private message (Meta's Private Replies: ``recipient: {"comment_id": …}``,
one per comment, within 7 days of it), through the same exactly-once reply record,
sender and history as every reply (:mod:`mtdesk.actors.answering`); the text is cut to
one message if the model wrote more (:func:`mtdesk.channels.outbound.one_message`).

Not answered, and recorded ``skipped`` with the reason: the business's own comments,
comments without text, stale ones (older than ``MTDESK_MAX_EVENT_AGE_S``), comments
older than 7 days, replies off, and what stops any answer (restricted person, a human
agent's pause, bot disabled, channel disconnected, quota). A private reply opens no
messaging window (Meta's rule), so the conversation's window is left as it was; it
shows no read mark or typing (there is no thread yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mtdesk.actors.admission import BOT_DISABLED, CHANNEL_DISCONNECTED, STALE, Skip
from mtdesk.actors.answering import _DONE_REASONS, _generate, greeted, send_reply
from mtdesk.actors.replies import OutgoingReply
from mtdesk.channels.outbound import one_message
from mtdesk.core import keys
from mtdesk.core.events import Comment
from mtdesk.core.history import inbound_message
from mtdesk.core.ports import BotConfig, ChatMessage
from mtdesk.core.replystate import on_delivery
from mtdesk.policy.quotas import consume_call

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation
    from mtdesk.actors.work import WorkItem

PRIVATE_REPLY_MS: Final = 7 * 24 * 3_600_000  # Meta: within 7 days of the comment

REPLIES_OFF: Final = "comment"  # recorded only: the bot's comment_replies is off
OWN_COMMENT: Final = "the business's own comment"
NO_TEXT: Final = "comment without text"
TOO_OLD: Final = "older than 7 days: no private reply"


def private_reply_until(comment: Comment, received_ms: int) -> int:
    """Until when (epoch ms) a private reply to ``comment`` may go."""
    start = comment.timestamp_ms if comment.timestamp_ms > 0 else received_ms
    return start + PRIVATE_REPLY_MS


def comment_skip(
    comment: Comment, bot: BotConfig, channel_connected: bool, *, stale: bool, now_ms: int,
    received_ms: int,
) -> Skip | None:
    """Why ``comment`` gets no private reply, as far as it is known without Redis (the
    store still checks restriction, pause and quota); None: ask the store."""
    if comment.by_business:
        return Skip(OWN_COMMENT, final=True)
    if bot.comment_replies != "private":
        return Skip(REPLIES_OFF, final=True)
    if stale:
        return Skip(STALE, final=True)
    if not (comment.text or "").strip():
        return Skip(NO_TEXT, final=True)
    if now_ms >= private_reply_until(comment, received_ms):
        return Skip(TOO_OLD, final=True)
    if not bot.enabled:
        return Skip(BOT_DISABLED, final=False)
    if not channel_connected:
        return Skip(CHANNEL_DISCONNECTED, final=False)
    return None


def private_reply(tenant_id: str, comment: Comment, text: str, provider: str, model: str, *,
                  reason: str = "") -> OutgoingReply:
    """The reply to ``comment`` as one private message to its author (``text`` cut to
    one message: what is stored is what is sent)."""
    one = one_message(comment.channel, text)
    return OutgoingReply(
        tenant_id=tenant_id, event_id=comment.event_id, channel=comment.channel,
        account_id=comment.account_id, user_id=comment.user_id, wa_id=None, text=one,
        provider=provider, model=model, parts=(one,), reason=reason,
        comment_id=comment.event_id)


async def on_comment(conv: Conversation, item: WorkItem, comment: Comment) -> None:
    """Record ``comment``; answer it privately when the bot says so. Hands the item back
    to the ledger itself."""
    s = conv.services
    tid = conv.tenant_id
    bot = await s.tenants.bot(tid)
    connected = bot.enabled and await s.tenants.channel_connected(
        tid, comment.channel, comment.account_id)
    verdict = comment_skip(comment, bot, connected, stale=item.stale, now_ms=conv.now_ms(),
                           received_ms=item.received_ms)
    reason = verdict.reason if verdict is not None and verdict.final else ""
    record = None
    claimed = False
    if not reason:
        now = conv.now_ms()
        reason, record, claimed = await s.replies.admit(
            tid, comment.event_id, inbound_message(comment), now_ms=now,
            member=f"{comment.channel}:{comment.user_id}",
            paused_key=keys.paused(tid, conv.key),
            reason=verdict.reason if verdict is not None else "",
            quota=consume_call(tid, 1, now_ms=now, enforce=s.settings.billing_enabled),
            claim=True,
        )
    if record is None:
        record = await s.replies.store_inbound(
            tid, comment.event_id, inbound_message(comment, status="skipped", reason=reason),
            now_ms=conv.now_ms(), skip_reason=reason)
    move = on_delivery(record.phase)
    if reason or move == "done":
        s.metrics.outcome("recorded" if reason else "duplicate")
        s.ledger.done(item)
        return
    window = private_reply_until(comment, item.received_ms)
    if move == "resume":  # a restart mid-send: finish the same reply
        reply = private_reply(tid, comment, record.text, record.provider, record.model)
        await send_reply(conv, [item], reply, start=record.parts_sent, window=window)
        return
    if not claimed and move == "answer":
        if await s.replies.claim(tid, comment.event_id, [], now_ms=conv.now_ms()) is None:
            s.ledger.release(item)  # someone else is answering it: look again later
            return
    text = (comment.text or "").strip()
    completion, outcome = await _generate(conv, bot, [text])
    s.tally.tokens(tid, comment.channel, conv.now_ms(), completion.prompt_tokens,
                   completion.completion_tokens)
    reply_text = greeted(bot, completion.text) if conv.context.new else completion.text
    conv.context.turns = conv.bounded([*conv.context.turns, ChatMessage("user", text)])
    reply = private_reply(tid, comment, reply_text, completion.provider, completion.model,
                          reason=_DONE_REASONS.get(outcome, ""))
    await send_reply(conv, [item], reply, start=0, window=window, outcome=outcome, begin=True)
