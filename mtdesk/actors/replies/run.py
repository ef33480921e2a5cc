"""One reply on its way out: its parts recorded as Meta accepts them, then its end.

:meth:`ReplyStore.begin <mtdesk.actors.replies.store.ReplyStore.begin>` (or ``resume``)
gives a :class:`ReplyRun`. The caller sends ``reply.parts`` (split once, by
:func:`OutgoingReply.of`) with the run as the sender's permit source, calls
:meth:`ReplyRun.part_sent` after each part Meta accepted, before the next, and
:meth:`ReplyRun.end` once the send is over. The run folds the last part's record, the
reply's end and the context write into one round trip; ``end`` then costs nothing.

A part Meta accepted is never sent again because its record failed: the run keeps it
(in the store's memory of the replies this process is sending) until the record goes
through, and :meth:`ReplyRun.recover` on a resume records it instead of sending it.
After a crash that memory is gone; ``recover`` then learns from Meta's confirmation of
the part (:mod:`mtdesk.actors.replies.confirm`), waiting a bounded time for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtdesk.channels.outbound import metadata_for, split_text
from mtdesk.core.events import (
    AgentReply,
    Channel,
    Message,
    Postback,
    TemplateSend,
    conversation_key,
)
from mtdesk.core.history import StoredMessage
from mtdesk.core.ports import OutboundMessage, SourceAttachment
from mtdesk.core.redis import UNAVAILABLE
from mtdesk.core.replystate import ReplyState
from mtdesk.core.retrying import retry_transient

if TYPE_CHECKING:
    from mtdesk.actors.replies.store import ReplyStore


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingReply:
    """A reply's text (split once into the channel's parts) and whom it answers."""

    tenant_id: str
    event_id: str  # the inbound event answered (the reply record's key)
    channel: Channel
    account_id: str
    user_id: str
    wa_id: str | None
    text: str
    provider: str
    model: str
    parts: tuple[str, ...]
    reason: str = ""  # recorded with ``sent`` when the text is not the model's answer
    comment_id: str | None = None  # a private reply: the comment it answers (one part)
    suggestions: tuple[str, ...] = ()  # offered under the last part
    attachment: SourceAttachment | None = None  # sent after the text
    kind: str = "reply"  # "reply": the bot's; "agent": a person's, from the console
    author: str | None = None  # kind "agent": the team member
    tag: str | None = None  # "HUMAN_AGENT": a person's reply outside the 24 h window
    template: TemplateSend | None = None  # WhatsApp: a template instead of the text

    @property
    def conversation(self) -> str:
        return conversation_key(self.channel, self.account_id, self.user_id)

    @property
    def silenced_by_person(self) -> bool:
        """Whether a person's pause (``keys.paused``) drops this reply: the bot's do."""
        return self.kind == "reply"

    @classmethod
    def of_agent(cls, tenant_id: str, event: AgentReply, text: str) -> OutgoingReply:
        """A person's reply (``text`` as stored; a template's is its description)."""
        parts = (text,) if event.template is not None else tuple(split_text(event.channel, text))
        return cls(tenant_id=tenant_id, event_id=event.event_id, channel=event.channel,
                   account_id=event.account_id, user_id=event.user_id, wa_id=event.wa_id,
                   text=text, provider="inbox", model="person", parts=parts, kind="agent",
                   author=event.author or None, tag=event.tag, template=event.template)

    @classmethod
    def of(cls, tenant_id: str, event: Message | Postback, text: str, provider: str,
           model: str, *, reason: str = "", suggestions: tuple[str, ...] = (),
           attachment: SourceAttachment | None = None) -> OutgoingReply:
        return cls(tenant_id=tenant_id, event_id=event.event_id, channel=event.channel,
                   account_id=event.account_id, user_id=event.user_id, wa_id=event.wa_id,
                   text=text, provider=provider, model=model,
                   parts=tuple(split_text(event.channel, text)), reason=reason,
                   suggestions=suggestions, attachment=attachment)

    def outbound(self) -> OutboundMessage:
        return OutboundMessage(
            tenant_id=self.tenant_id, channel=self.channel, account_id=self.account_id,
            user_id=self.user_id, wa_id=self.wa_id, text=self.text, reply_key=self.event_id,
            reply_to=self.event_id if self.channel == "whatsapp" and self.kind == "reply"
            else None, comment_id=self.comment_id, tag=self.tag, template=self.template,
            suggestions=self.suggestions, attachment=self.attachment,
        )

    def part_message(self, index: int, message_id: str, now_ms: int) -> StoredMessage:
        """The history entry of part ``index`` (the whole text is on part 0's entry)."""
        return StoredMessage(
            direction="out", message_id=message_id, kind=self.kind, channel=self.channel,
            account_id=self.account_id, user_id=self.user_id, timestamp_ms=now_ms,
            text=self.text if index == 0 else None,
            reply_to=self.event_id if self.kind == "reply" else None,
            provider=self.provider if self.kind == "reply" else None,
            model=self.model if self.kind == "reply" else None, status="sent", part=index,
            author=self.author,
        )


@dataclass(frozen=True, slots=True)
class ContextWrite:
    """``SET key value EX ttl_s``: a conversation's context, persisted with a reply's end."""

    key: str
    value: bytes
    ttl_s: int


# The context to persist with the reply's end in that state; None writes none (e.g. the
# conversation was erased meanwhile). Called when the end is recorded, maybe again after
# a Redis blip.
Context = Callable[[ReplyState], ContextWrite | None]

# A part's record is idempotent, and Meta has already accepted that part (if its record
# is lost, a resume sends it again): ride out a Redis blip (~5 s) rather than fail.
_RECORD_ATTEMPTS = 8


TAKEN_OVER = "a person took over the conversation"


class PartitionLost(Exception):
    """The partition was handed over to another shard (its fence names another epoch):
    nothing more is sent or acknowledged for it here."""


class TakenOver(Exception):
    """A person has the conversation (``keys.paused``): the bot's reply is dropped at
    its send permit, nothing more of it is sent."""


async def _no() -> bool:
    return False


def _redis_blip(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


class ReplyRun:
    """Implements the sender's ``SendPermits``: the first permit may be prepaid (taken
    with the stored text, and the person's pause checked in the same step), the rest
    come from the store's limiter. Every permit of a bot's reply checks that no person
    has taken the conversation over (:class:`TakenOver` otherwise). With ``fence`` (the
    partition's owner key and the epoch this shard holds it at), every permit not
    prepaid checks first that the partition is still this shard's
    (:class:`PartitionLost` otherwise: nothing more is sent from here, the new owner
    continues from the parts recorded). Both checks go out together, in one round trip
    on the shards' pipelined link."""

    def __init__(self, store: ReplyStore, reply: OutgoingReply, context: Context, *,
                 prepaid: int, taken_over: bool = False,
                 unrecorded: dict[int, str] | None = None,
                 fence: tuple[str, str] | None = None) -> None:
        self.reply = reply
        self._fence = fence
        self._store = store
        self._context = context
        self._prepaid = prepaid
        self._taken_over = taken_over
        # On a resume: the parts this process sent and could not record (None: this
        # process never sent this reply, e.g. it resumes another's after a crash).
        self._unrecorded = unrecorded
        # Parts Meta accepted, kept until recorded (shared with the store's memory).
        self._accepted = store.sending(reply)
        self.ended: ReplyState | None = None  # the state it ended in (recorded)
        self.context_written = False

    async def acquire(self, channel: Channel, account_id: str) -> None:
        if self._taken_over:
            raise TakenOver(TAKEN_OVER)
        if self._prepaid > 0:
            self._prepaid -= 1
            return
        pause = self.reply.silenced_by_person
        if self._fence is not None:
            held, paused = await asyncio.gather(
                self._store.holds(self._fence),
                self._store.paused(self.reply.tenant_id, self.reply.conversation) if pause
                else _no())
            if not held:
                raise PartitionLost(self.reply.event_id)
        else:
            paused = pause and await self._store.paused(self.reply.tenant_id,
                                                        self.reply.conversation)
        if paused:
            self._taken_over = True
            raise TakenOver(TAKEN_OVER)
        limiter = self._store.limiter
        if limiter is not None:
            await limiter.acquire(channel, account_id)

    async def part_sent(self, index: int, message_id: str) -> None:
        """Record part ``index`` (Meta accepted it as ``message_id``); the last part also
        ends the reply as ``sent`` with the context of that state."""
        last = index == len(self.reply.parts) - 1

        async def record() -> ContextWrite | None:
            now = self._store.now_ms()
            context = self._context(ReplyState.SENT) if last else None
            await self._store.record_part(
                self.reply, index, self.reply.part_message(index, message_id, now),
                now_ms=now, end=("sent", self.reply.reason) if last else None,
                context=context)
            return context

        # Kept until recorded: if the record fails for good, a resume in this process
        # records the part (recover) instead of sending it again.
        self._accepted[index] = message_id
        context = await retry_transient(record, attempts=_RECORD_ATTEMPTS, first_s=0.05,
                                        max_s=2.0, transient=_redis_blip)
        self._accepted.pop(index, None)
        if last:
            self.ended = ReplyState.SENT
            self.context_written = context is not None
            self._store.settled(self.reply)

    async def recover(self, start: int, *, wait_s: float,
                      look: Callable[[], Awaitable[None]] | None = None) -> int:
        """On a resume from ``start`` (the parts recorded), the first part still to send.
        Part ``start`` may have been accepted by Meta and not recorded: this process
        knows when it sent it (a Redis outage kept the record from going through);
        after a crash Meta's confirmation of it says so, waited for up to ``wait_s``.
        Such a part is recorded now (the last one ends the reply), not sent again."""
        if start >= len(self.reply.parts):
            return start
        mark = metadata_for(self.reply.event_id, start)
        confirmations = self._store.confirmations
        if self._unrecorded is not None:
            message_id = self._unrecorded.get(start) or confirmations.get(mark)
        else:
            message_id = await confirmations.wait(mark, wait_s, look=look)
        if message_id is None:
            return start
        await self.part_sent(start, message_id)
        return start + 1

    async def end(self, state: ReplyState, reason: str) -> None:
        """End the reply in ``state`` (``sent`` or ``failed``) with the context of that
        state, in one round trip; nothing when its last part already ended it."""
        if self.ended is not None:
            return
        context = self._context(state)
        await self._store.end(self.reply, state.value, reason, now_ms=self._store.now_ms(),
                              context=context)
        self.ended = state
        self.context_written = context is not None
        self._store.settled(self.reply)
