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
- Every event is stored once per event id (a redelivery is not stored twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from mtdesk.actors.turns import without_texts
from mtdesk.channels.outbound import is_our_metadata
from mtdesk.core import keys
from mtdesk.core.events import Echo, Edit, Message, Receipt, Status, Unsend
from mtdesk.core.history import StoredMessage, inbound_message
from mtdesk.core.ports import ChatMessage
from mtdesk.core.settings import Settings

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
        await services.redis.set(keys.paused(tenant_id, echo.conversation), b"1", ex=pause_s)


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
        if pause_s > 0:
            await s.redis.set(keys.paused(item.tenant_id, conv.key), b"1", ex=pause_s)
            conv.context.paused_until_ms = conv.now_ms() + pause_s * 1000
            conv.mark_dirty()
        s.metrics.outcome("handoff")
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
    kind. An unsend first removes what it names (:func:`forget_unsent`)."""
    if isinstance(item.event, Unsend):
        await forget_unsent(conv, item.event)
    tag = item.event.__struct_config__.tag  # typed str | int | None; ours are str
    reason = tag if isinstance(tag, str) and tag else "other"
    await conv.services.replies.store_inbound(
        item.tenant_id, item.event.event_id,
        inbound_message(item.event, status="skipped", reason=reason),
        now_ms=conv.now_ms(), skip_reason=reason,
    )
    conv.services.metrics.outcome("recorded")


async def forget_unsent(conv: Conversation, event: Unsend) -> None:
    """An unsent message (and its edits) leaves the history, so the inbox and exports,
    and the turns the model is shown."""
    gone = await conv.services.store.unsend(conv.tenant_id, conv.key, event.target_id)
    turns = without_texts(conv.context.turns, [m.text for m in gone if m.text])
    if len(turns) != len(conv.context.turns):
        conv.context.turns = turns
        conv.mark_dirty()


def edit_queued(conv: Conversation, edit: Edit) -> None:
    """An edit of a message still waiting in ``conv``'s queue: the new text is what gets
    answered (and stored; the edit itself is recorded after it as its version)."""
    if edit.text is None:
        return
    for queued in conv.queue:
        event = queued.event
        if isinstance(event, Message) and event.event_id == edit.target_id:
            queued.event = msgspec.structs.replace(event, text=edit.text)
