"""Events a conversation records and never answers: echoes, receipts, statuses, and the
kinds that are stored only (reactions, unsends, unsupported messages).

- An echo of our own send is already in history when we recorded that send (also when
  no app id is configured); one seen only through its echo (our app id or our
  metadata) is stored as kind ``echo``. An echo from anyone else is a human agent
  writing from the inbox: stored as kind ``agent``, and the bot pauses in that
  conversation for ``settings.handoff_pause_s`` (``keys.paused``, hand-off).
- Messenger/Instagram receipts and WhatsApp statuses move stored statuses forward.
- An unsent message (and its edits) leaves the history, so the inbox and exports, and
  the turns the model is shown. An edit of a message still queued in the conversation
  changes the text that gets answered (and stored); the edit is recorded after it as
  its version.
- Thread control (:mod:`mtdesk.policy.threads`): a handover moves the thread's owner in
  the context; a message on ``standby`` is stored ``skipped`` (another app owns the
  thread), opens Meta's window like any message of the person, and says another app
  owns the thread.
- The WhatsApp Business app on the same number (coexistence): its echoes are a human's
  messages (the bot pauses), its imported ``history`` is stored with each message's own
  time and opens no window; either marks the number coexistence (paced at 20/s).
- A user id change (WhatsApp ``user_changed_number`` / ``user_changed_user_id``) moves
  the conversation: history, context (turns, window, thread owner), pause and
  restriction go to the new id, where the change itself is recorded.
- Every event is stored once per event id (a redelivery is not stored twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from mtdesk.actors.turns import (
    ConversationContext,
    decode_context,
    encode_context,
    user_text,
    with_text_edited,
    without_texts,
)
from mtdesk.actors.window import window_end
from mtdesk.channels.outbound import is_our_metadata
from mtdesk.core import keys
from mtdesk.core.errors import DecryptionError
from mtdesk.core.events import (
    Echo,
    Edit,
    Event,
    Handover,
    Imported,
    Message,
    Postback,
    Receipt,
    Status,
    Unsend,
    UserChanged,
    conversation_key,
)
from mtdesk.core.history import StoredMessage, inbound_message
from mtdesk.core.ports import ChatMessage
from mtdesk.core.redis import as_opt_bytes
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels
from mtdesk.policy.erasure.notices import ConversationsNotice, publish_notice
from mtdesk.policy.threads import OWNED_ELSEWHERE, ThreadControl, after_handover, after_message

IMPORTED = "imported from the WhatsApp Business app"

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation
    from mtdesk.actors.work import ConversationServices, WorkItem


def _ours_by_its_marks(settings: Settings, echo: Echo) -> bool:
    app_id = settings.meta_app_id
    return is_our_metadata(echo.metadata) or (app_id is not None and echo.app_id == app_id)


async def pause_on_arrival(services: ConversationServices, tenant_id: str, echo: Echo) -> None:
    """A person's echo (not ours by its metadata or app id) pauses the bot as soon as the
    shard reads it, before it waits its turn behind a message being answered: that
    answer's next send permit sees the pause and drops it. :func:`on_echo` records it
    in order later (and pauses again, harmlessly)."""
    pause_s = services.settings.handoff_pause_s
    if pause_s > 0 and not _ours_by_its_marks(services.settings, echo):
        # Only a pause not there yet, marked as this echo's: on_echo then still knows
        # the bot was answering until this echo (a hand-off).
        await services.redis.set(keys.paused(tenant_id, echo.conversation),
                                 _early_mark(echo), ex=pause_s, nx=True)


def _early_mark(echo: Echo) -> bytes:
    return b"echo:" + echo.event_id.encode()


async def on_echo(conv: Conversation, item: WorkItem, echo: Echo) -> None:
    s = conv.services
    recorded = await s.redis.hexists(keys.outbound(item.tenant_id, echo.event_id), "entry")
    ours = recorded or _ours_by_its_marks(s.settings, echo)
    if ours:
        s.metrics.outcome("echo")
        if recorded:
            return
        kind = "echo"
    else:
        kind = "agent"
        pause_s = s.settings.handoff_pause_s
        took_over = False
        if pause_s > 0:
            # the old value says whether the bot was answering until now: a hand-off
            was = await s.redis.set(keys.paused(item.tenant_id, conv.key), b"1", ex=pause_s,
                                    get=True)
            took_over = was is None or was == _early_mark(echo)
            conv.context.paused_until_ms = conv.now_ms() + pause_s * 1000
            conv.mark_dirty()
        s.metrics.outcome("handoff")
        s.tally.human_reply(item.tenant_id, echo.channel, conv.now_ms(), conv.key,
                            handoff=took_over)
    message = StoredMessage(
        direction="out", message_id=echo.event_id, kind=kind, channel=echo.channel,
        account_id=echo.account_id, user_id=echo.user_id, timestamp_ms=echo.timestamp_ms,
        text=echo.text, attachments=echo.attachments, status="sent",
    )
    await s.replies.store_inbound(item.tenant_id, echo.event_id, message,
                                  now_ms=conv.now_ms(), skip_reason="echo")
    conv.context.replied = True
    conv.mark_dirty()
    if not ours:
        conv.context.turns = conv.bounded([*conv.context.turns,
                                           ChatMessage("assistant", echo.text or "")])


async def on_receipt(conv: Conversation, receipt: Receipt) -> None:
    s = conv.services
    await s.store.apply_receipt(conv.tenant_id, conv.key, receipt, now_ms=conv.now_ms())
    s.metrics.outcome("receipt")


async def on_status(conv: Conversation, status: Status) -> None:
    s = conv.services
    await s.store.apply_status(conv.tenant_id, conv.key, status, now_ms=conv.now_ms())
    s.metrics.outcome("status")


async def record_only(conv: Conversation, item: WorkItem) -> None:
    """A reaction, unsend, edit or unsupported message: stored as ``skipped`` with its
    kind. An unsend first removes what it names (:func:`forget_unsent`). The business's
    own edit or unsend (WhatsApp Business app echoes) is stored as the business's
    (direction ``out``), applied to its message (:func:`business_edited`)."""
    event = item.event
    if isinstance(event, Unsend):
        await forget_unsent(conv, event)
        conv.unsent.discard(event.target_id)
    tag = event.__struct_config__.tag  # typed str | int | None; ours are str
    reason = tag if isinstance(tag, str) and tag else "other"
    message = inbound_message(event, status="skipped", reason=reason)
    if isinstance(event, Edit | Unsend) and event.by_business:
        if isinstance(event, Edit):
            await business_edited(conv, event)
        message = msgspec.structs.replace(message, direction="out", status="sent",
                                          reason=None)
    await conv.services.replies.store_inbound(
        item.tenant_id, event.event_id, message, now_ms=conv.now_ms(), skip_reason=reason,
    )
    conv.services.metrics.outcome("recorded")


async def forget_unsent(conv: Conversation, event: Unsend) -> None:
    """An unsent message (and its edits, and its media) leaves the history, so the inbox
    and exports, and the turns the model is shown. The business's own (``by_business``)
    leaves the history and the model's turns as the business's."""
    if event.by_business:
        gone = await conv.services.store.unsend(conv.tenant_id, conv.key, event.target_id,
                                                direction="out")
        turns = without_texts(conv.context.turns, [m.text for m in gone if m.text],
                              role="assistant")
    else:
        gone = await conv.services.store.unsend(conv.tenant_id, conv.key, event.target_id)
        if conv.services.media is not None:  # the files it carried go with it
            await conv.services.media.store.delete_message(conv.tenant_id, conv.key,
                                                           event.target_id)
            await conv.services.media.store.drop_retries(conv.tenant_id, conv.key,
                                                         event.target_id)
        turns = without_texts(conv.context.turns, [m.text for m in gone if m.text])
    if len(turns) != len(conv.context.turns):
        conv.context.turns = turns
        conv.mark_dirty()


async def business_edited(conv: Conversation, edit: Edit) -> None:
    """The business edited its own message in the Business app: the model's turn of it
    says the new text (the history keeps both: the edit is stored as its version)."""
    if edit.text is None:
        return
    before = await conv.services.store.find(conv.tenant_id, conv.key, edit.target_id,
                                            direction="out")
    if before is None or before.text is None:
        return
    turns = with_text_edited(conv.context.turns, before.text, edit.text)
    if turns != conv.context.turns:
        conv.context.turns = turns
        conv.mark_dirty()


def edit_queued(conv: Conversation, edit: Edit) -> None:
    """An edit of a message still waiting in ``conv``'s queue, or in the burst being
    answered: the new text is what gets answered (and, still queued, stored; the edit
    itself is recorded after it as its version). An answer being made is made again."""
    if edit.text is None:
        return
    for queued in conv.queue:
        event = queued.event
        if isinstance(event, Message) and event.event_id == edit.target_id:
            queued.event = msgspec.structs.replace(event, text=edit.text)
    answering = conv.answering.get(edit.target_id)
    if answering is not None and isinstance(answering.event, Message):
        answering.event = msgspec.structs.replace(answering.event, text=edit.text)
        conv.revise()


def unsend_queued(conv: Conversation, unsend: Unsend) -> None:
    """An unsend of a message not answered yet: still queued, it is recorded ``skipped``
    when its turn comes (``unsent before it was answered``), never answered; in the burst being
    answered, the answer is made without it (or not at all). Either way the unsend,
    queued behind it, then takes it out of the history."""
    target = unsend.target_id
    queued = any(q.event.event_id == target and isinstance(q.event, Message | Postback)
                 for q in conv.queue)
    if queued or target in conv.answering:
        conv.unsent.add(target)
    if target in conv.answering:
        conv.revise()


# --- thread control (the handover protocol) ----------------------------------------------
def thread_seen_elsewhere(conv: Conversation, timestamp_ms: int) -> None:
    """Something of the thread came on ``standby``: another app owns it."""
    changed = after_message(conv.context.thread, timestamp_ms, standby=True)
    if changed is not None:
        conv.context.set_thread(changed)
        conv.mark_dirty()


async def on_standby(conv: Conversation, item: WorkItem, event: Message | Postback) -> None:
    """A message of the person while another app owns the thread: recorded ``skipped``,
    never answered; Meta's window still counts from it, and the model will see it
    (a user turn) once the thread is back."""
    thread_seen_elsewhere(conv, event.timestamp_ms)
    ctx = conv.context
    ctx.last_inbound_ms = max(ctx.last_inbound_ms, event.timestamp_ms)
    ctx.window_until_ms = max(ctx.window_until_ms, window_end(event, item.received_ms))
    # Remembered like the other app's replies (human echoes are assistant turns): when
    # the thread comes back the model knows what was said meanwhile.
    ctx.turns = conv.bounded([*ctx.turns, ChatMessage("user", user_text(event))])
    conv.mark_dirty()
    await conv.services.replies.store_inbound(
        item.tenant_id, event.event_id,
        inbound_message(event, status="skipped", reason=OWNED_ELSEWHERE),
        now_ms=conv.now_ms(), skip_reason=OWNED_ELSEWHERE,
    )
    conv.services.metrics.outcome("standby")
    conv.services.tally.message_in(item.tenant_id, event.channel, conv.now_ms())


async def on_handover(conv: Conversation, item: WorkItem, event: Handover) -> None:
    """Thread control passed, taken or requested: the owner moves (recorded)."""
    changed = after_handover(conv.context.thread, event, conv.services.settings.meta_app_id)
    if changed is not None:
        if conv.context.thread.ours and not changed.ours:  # the bot gave the thread away
            conv.services.tally.add(item.tenant_id, event.channel, conv.now_ms(), "handoff")
        conv.context.set_thread(changed)
        conv.mark_dirty()
    await record_only(conv, item)


def thread_lost(conv: Conversation) -> bool:
    """Whether another app owns the thread, counting the handovers and standby messages
    already queued (they arrived while the answer was being made)."""
    control: ThreadControl = conv.context.thread
    app_id = conv.services.settings.meta_app_id
    for queued in conv.queue:
        event = queued.event
        changed: ThreadControl | None = None
        if isinstance(event, Handover):
            changed = after_handover(control, event, app_id)
        elif event.standby and isinstance(event, Message | Postback | Echo):
            changed = after_message(control, event.timestamp_ms, standby=True)
        if changed is not None:
            control = changed
    return not control.ours


# --- the WhatsApp Business app on the same number (coexistence) ---------------------------
async def mark_coexistence(conv: Conversation, event: Event) -> None:
    """The number is also used in the WhatsApp Business app: paced at its 20/s."""
    s = conv.services
    known = await s.tenants.coexistence(conv.tenant_id, event.channel, event.account_id)
    if not known and await Channels(s.redis, s.clock).mark_coexistence(
            event.channel, event.account_id):
        s.tenants.forget_channel(conv.tenant_id, event.channel, event.account_id)
        known = True
    if known and s.replies.limiter is not None:
        s.replies.limiter.pace_coexistence(event.channel, event.account_id)


async def on_imported(conv: Conversation, item: WorkItem, event: Imported) -> None:
    """A past message of the Business app's chat: stored with its own time (the
    person's as ``skipped``, the business's as sent), never answered, no window.
    Retention counts from that time (``keys.imported``). History comes keyed by the
    person's number: when live messages told us the number's business-scoped id, it is
    stored in that conversation instead (:func:`note_phone`)."""
    s = conv.services
    await mark_coexistence(conv, event)
    phone = _phone_of(event)
    user = event.user_id
    if phone:
        user = await _alias_of(s, conv.tenant_id, event.account_id, phone) or user
    inbound = event.direction == "in"
    message = StoredMessage(
        direction=event.direction, message_id=event.event_id, kind="imported",
        channel=event.channel, account_id=event.account_id, user_id=user,
        timestamp_ms=event.timestamp_ms, text=event.text, attachments=event.attachments,
        status="skipped" if inbound else (event.status or "sent"),
        reason=IMPORTED if inbound else None,
    )
    record = await s.replies.store_inbound(item.tenant_id, event.event_id, message,
                                           now_ms=conv.now_ms(), skip_reason="imported")
    stored_in = conversation_key(event.channel, event.account_id, user)
    await s.store.note_imported(item.tenant_id, stored_in, record.stored, event.timestamp_ms)
    if phone and user == event.user_id:
        # The person's business-scoped id may have been learnt meanwhile (a live
        # message between the look-up and the store): then join it now.
        alias = await _alias_of(s, conv.tenant_id, event.account_id, phone)
        if alias:
            await s.store.move(item.tenant_id, stored_in,
                               conversation_key(event.channel, event.account_id, alias))
    s.metrics.outcome("imported")


def _phone_of(event: Imported) -> str:
    """The person's number when the import is keyed by it (not by a business-scoped id)."""
    return event.user_id if event.user_id.isdigit() else ""


async def _alias_of(s: ConversationServices, tenant_id: str, account_id: str,
                    phone: str) -> str:
    raw = as_opt_bytes(await s.redis.get(keys.phone_alias(tenant_id, account_id, phone)))
    return raw.decode() if raw else ""


async def note_phone(conv: Conversation, event: Message | Postback) -> None:
    """A live WhatsApp message carrying both the person's business-scoped id and their
    number: remember which id the number has (imported history, keyed by the number,
    then joins this conversation), and the first time, bring what is already stored
    under the number here (history in time order, its imported messages' times, the
    remembered turns)."""
    wa_id = event.wa_id
    if event.channel != "whatsapp" or not wa_id or wa_id == event.user_id:
        return
    s = conv.services
    tid = conv.tenant_id
    was = await s.redis.set(keys.phone_alias(tid, event.account_id, wa_id), event.user_id,
                            ex=s.store.ttl_s, get=True)
    if was == event.user_id.encode():
        return
    by_number = conversation_key(event.channel, event.account_id, wa_id)
    if not await s.redis.exists(keys.history(tid, by_number), keys.context(tid, by_number)):
        return
    await s.store.move(tid, by_number, conv.key)
    raw = as_opt_bytes(await s.redis.get(keys.context(tid, by_number)))
    if raw is not None:
        try:
            there = decode_context(raw, conv.sealer, by_number)
        except (msgspec.DecodeError, DecryptionError):
            there = ConversationContext()
        conv.context = _merged(there, conv.context, s.settings.history_turns)
        conv.mark_dirty()
        await s.redis.delete(keys.context(tid, by_number))
    # A shard holding the number's conversation in memory forgets it.
    await publish_notice(s.redis, ConversationsNotice(tid, (by_number,)))


# --- a person's id changed ------------------------------------------------------------
def _merged(old: ConversationContext, new: ConversationContext, limit: int) -> ConversationContext:
    """One context of both ids' (the old conversation's first: it is the older)."""
    turns = [*old.turns, *new.turns]
    newer = new if new.thread_owner_ms >= old.thread_owner_ms else old
    return ConversationContext(
        turns=turns[-limit:] if limit else [],
        bot_state={**old.bot_state, **new.bot_state},
        last_inbound_ms=max(old.last_inbound_ms, new.last_inbound_ms),
        window_until_ms=max(old.window_until_ms, new.window_until_ms),
        paused_until_ms=max(old.paused_until_ms, new.paused_until_ms),
        replied=old.replied or new.replied,
        thread_owner=newer.thread_owner, thread_owner_ms=newer.thread_owner_ms,
    )


async def on_user_changed(conv: Conversation, item: WorkItem, event: UserChanged) -> None:
    """The person continues under ``event.new_user_id``: the conversation moves there
    (history, context, pause, restriction), and the change is recorded in it."""
    s = conv.services
    tid = conv.tenant_id
    new_key = conversation_key(event.channel, event.account_id, event.new_user_id)
    redis = s.redis
    if new_key != conv.key:
        await s.store.move(tid, conv.key, new_key)
        raw = as_opt_bytes(await redis.get(keys.context(tid, new_key)))
        there = ConversationContext()
        if raw is not None:
            try:
                there = decode_context(raw, conv.sealer, new_key)
            except (msgspec.DecodeError, DecryptionError):
                pass
        merged = _merged(conv.context, there, s.settings.history_turns)
        await redis.set(keys.context(tid, new_key), encode_context(merged, conv.sealer, new_key),
                        ex=s.store.ttl_s)
        await redis.delete(keys.context(tid, conv.key))
        paused_ms = int(await redis.pttl(keys.paused(tid, conv.key)))
        if paused_ms > 0:
            await redis.set(keys.paused(tid, new_key), b"1", px=paused_ms)
            await redis.delete(keys.paused(tid, conv.key))
        if await redis.sismember(keys.restricted(tid), f"{event.channel}:{event.user_id}"):
            await redis.sadd(keys.restricted(tid), f"{event.channel}:{event.new_user_id}")
        # A shard holding the new conversation in memory reads it again from Redis.
        await publish_notice(redis, ConversationsNotice(tid, (new_key,)))
        conv.context = ConversationContext()
        conv.mark_clean()
    moved = msgspec.structs.replace(event, user_id=event.new_user_id,
                                    wa_id=event.new_wa_id or event.wa_id)
    await s.replies.store_inbound(
        tid, event.event_id, inbound_message(moved, status="skipped", reason="user_changed"),
        now_ms=conv.now_ms(), skip_reason="user_changed",
    )
    s.metrics.outcome("user_changed")
