"""The reply to a message: admitted, generated (knowledge gating), sent, recorded.

:func:`answer` handles one message or postback. Its reply record (the state machine in
:mod:`mtdesk.core.replystate`) decides what happens on every delivery: a terminal record
is acknowledged, a stored text is resumed from the parts Meta already accepted, a reply
whose model call was under way is generated again, anything else is answered, together
with the person's queued messages (:mod:`mtdesk.actors.bursts`).

The first reply of a new conversation starts with the bot's greeting, as part of the
reply's stored text, so it is never sent twice. A ``knowledge_only`` LLM bot whose
tenant has knowledge but none of it scoring ``min_score`` answers its fallback message
without a model (outcome ``no_knowledge``; docs/retrieval.md); a failed model answers
the fallback message too (outcome ``fallback``), and then the conversation is handed to
a person (the bot pauses in it: the inbox card's status is ``human``; a hand-off in the
analytics). The model is told the customer's
language (:mod:`mtdesk.retrieval.language`, kept on the conversation's context) to
answer in it whatever the knowledge's language. The text is split into the channel's
parts once, and a :class:`~mtdesk.actors.replies.ReplyRun` records each part Meta
accepted before the next is sent, then the reply's end with the conversation's context.

While the answer is made the person sees their message read and typing
(:mod:`mtdesk.actors.typing`; only once it is decided that a reply follows). Before any
part goes out, Meta's customer service window is checked (:mod:`mtdesk.actors.window`):
outside it nothing is sent and the reply ends ``failed`` with the reason; so do the
Graph errors that say the same (131047, 131049, 10/2018278), outcome ``outside_window``.
Every send permit of the bot's reply checks that no person has taken the conversation
over (``keys.paused``: a reply from the console, or an echo from Meta's own inbox): if
one has, the rest of the answer is dropped, not sent (``failed``,
``a person took over the conversation``; outcome ``taken_over``).
Nor does anything go when another app took the thread meanwhile (handover protocol),
or when every message answered was unsent. An edit or unsend of a message of the burst
arriving while the model works drops that answer: the revised texts are answered,
once (outcome ``revised`` counts the dropped ones). A WhatsApp number shared with the
Business app is paced at 20 messages/s.
A retriable Graph error that outlasts the sender's retries (an outage, a rate-limit
storm) does not end the reply: it is tried again from the parts Meta accepted, with
back-off, for up to ``settings.send_retry_for_s`` (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Final

import msgspec

from mtdesk.actors.admission import UNSENT_FIRST, admit
from mtdesk.actors.bursts import can_claim_alone, claim_burst, stored_texts, texts_of
from mtdesk.actors.records import thread_lost
from mtdesk.actors.replies import (
    TAKEN_OVER,
    ContextWrite,
    OutgoingReply,
    ReplyRun,
    ReplyState,
    TakenOver,
)
from mtdesk.actors.suggest import suggestions_for
from mtdesk.actors.turns import customer_words, encode_context
from mtdesk.actors.typing import start_typing
from mtdesk.actors.window import OUTSIDE_WINDOW, open_until, send_refusal
from mtdesk.core import keys
from mtdesk.core.errors import GraphError, MTDeskError, ProviderError
from mtdesk.core.events import Attachment, Message, Postback
from mtdesk.core.ports import BotConfig, ChatMessage, Completion, Passage, SourceAttachment
from mtdesk.core.replystate import on_delivery
from mtdesk.policy.threads import OWNED_ELSEWHERE
from mtdesk.retrieval.extractive import is_extractive
from mtdesk.retrieval.language import answer_language
from mtdesk.retrieval.prompt import shown_passages

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation
    from mtdesk.actors.work import WorkItem

log = logging.getLogger(__name__)

# The reply's reason when it is not the model's answer (its outcome says which).
_DONE_REASONS = {"fallback": "model failed: fallback message",
                 "voice_reply": "voice note not heard: the bot's voice reply",
                 "no_knowledge": "no knowledge: fallback message"}


class _Silent(Exception):
    """Nothing may be sent (``reason`` says why); the reply ends failed."""

    def __init__(self, reason: str, outcome: str = "outside_window") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome


def greeted(bot: BotConfig, text: str) -> str:
    """``text`` after the bot's greeting (a paragraph of its own), if it has one."""
    greeting = (bot.greeting or "").strip()
    return f"{greeting}\n\n{text}" if greeting else text


async def answer(conv: Conversation, item: WorkItem, event: Message | Postback) -> None:
    s = conv.services
    reason, record, claimed_now = await admit(conv, item, claim=can_claim_alone(conv))
    move = on_delivery(record.phase)
    # The window as admission left it (this message included); taken now, since an
    # erasure meanwhile empties the context and the reply under way still goes.
    window = open_until(conv.context.window_until_ms, conv.context.last_inbound_ms)
    if reason or move == "done":
        s.metrics.outcome("skipped" if reason else "duplicate")
        s.ledger.done(item)
        return
    if move == "resume":  # a restart mid-send: finish the same reply
        # The taps stored with the text still go with the last part.
        reply = OutgoingReply.of(item.tenant_id, event, record.text, record.provider,
                                 record.model, suggestions=record.suggestions)
        await send_reply(conv, [item], reply, start=record.parts_sent, window=window)
        return
    # From here until the answer is made, an edit or unsend of the burst's messages
    # revises what is answered (records.edit_queued / unsend_queued).
    conv.answering = {event.event_id: item}
    try:
        await _answer(conv, item, event, record.members, move, claimed_now, window)
    finally:
        conv.answering = {}


async def _answer(
    conv: Conversation, item: WorkItem, event: Message | Postback, members: tuple[str, ...],
    move: str, claimed_now: bool, window: int,
) -> None:
    s = conv.services
    stored: list[str] = []
    if claimed_now:  # claimed with its admission: a burst of one
        burst = [item]
    elif move == "generate":
        # A crash while the model was answering: the burst was claimed then, so its
        # members' texts come back from history (their entries follow in the stream
        # and will be acknowledged as answered by this one).
        burst = [item]
        stored = await stored_texts(conv, members)
    else:
        claimed = await claim_burst(conv, item)
        if claimed is None:  # someone else is answering it: look again on redelivery
            return
        burst = claimed

    # What the person's media says (transcripts, descriptions), by message.
    said: dict[str, str] = {}

    def texts_now() -> list[str]:
        live = [b for b in burst if b.event.event_id not in conv.unsent]
        return [said.get(b.event.event_id) or t
                for b, t in zip([b for b in live if isinstance(b.event, Message | Postback)],
                                texts_of(live), strict=True)] + stored

    try:
        bot = await s.tenants.bot(item.tenant_id)
        latest = burst[-1].event
        typing = start_typing(s.sender, bot, latest if isinstance(latest, Message | Postback)
                              else event, interval_s=s.settings.typing_interval_s)
        try:
            images: list[str] = []
            made: tuple[list[str], Completion, str] | None
            if s.media is not None:  # the burst's media fetched, heard, put in words
                prepared = await s.media.prepare(conv, bot, [b.event for b in burst])
                said.update(prepared.said)
                images = prepared.images
                if prepared.voice_reply:  # nothing but voice notes, nobody to hear them
                    made = (texts_now(), Completion(text=bot.voice_reply, provider="voice_reply",
                                                    model="none"), "voice_reply")
                else:
                    made = await _generate_current(conv, bot, texts_now, images)
            else:
                made = await _generate_current(conv, bot, texts_now, images)
        finally:
            await typing.stop()
        if made is None:  # every message of the burst was unsent meanwhile
            await _drop_unsent(conv, burst)
            return
        texts, completion, outcome = made
        s.tally.tokens(item.tenant_id, event.channel, conv.now_ms(),
                       completion.prompt_tokens, completion.completion_tokens)
        # The greeting is part of the reply's stored text: a resumed send continues
        # the same text, so it is never sent twice.
        text = greeted(bot, completion.text) if conv.context.new else completion.text
        conv.context.turns = conv.bounded(
            [*conv.context.turns, *(ChatMessage("user", t) for t in texts)])
        reply = OutgoingReply.of(item.tenant_id, event, text, completion.provider,
                                 completion.model, reason=_DONE_REASONS.get(outcome, ""),
                                 suggestions=completion.suggestions,
                                 attachment=completion.attachment)
        await send_reply(conv, burst, reply, start=0, window=window, outcome=outcome, begin=True)
    except BaseException:
        # The head is retried (or left pending); its members go back in front of the
        # queue, in order, so none is stranded (they are answered_by the head now).
        conv.requeue(burst[1:])
        raise


async def _generate_current(
    conv: Conversation, bot: BotConfig, texts_now: Callable[[], list[str]],
    images: list[str] | None = None,
) -> tuple[list[str], Completion, str] | None:
    """The answer to what the burst says now: an edit or unsend of one of its messages
    arriving while the model works (``Conversation.revise``) cancels that answer, and
    the revised texts are answered instead (once). None when nothing is left."""
    while True:
        conv.revised = False
        texts = texts_now()
        if not texts:
            return None
        making = asyncio.ensure_future(_generate(conv, bot, texts, images))
        conv.making = making
        try:
            completion, outcome = await making
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not conv.revised or (current is not None and current.cancelling()):
                raise  # the conversation itself is being cancelled
        else:
            if not conv.revised:
                return texts, completion, outcome
        finally:
            conv.making = None
        conv.services.metrics.outcome("revised")  # the stale answer is dropped


async def _drop_unsent(conv: Conversation, burst: list[WorkItem]) -> None:
    """Nothing of the burst is left to answer: its reply ends without a send."""
    s = conv.services
    head = burst[0]
    await s.replies.finish(head.tenant_id, head.event.event_id, ReplyState.FAILED.value,
                           now_ms=conv.now_ms(), reason=UNSENT_FIRST)
    s.metrics.outcome("unsent")
    for b in burst:
        s.ledger.done(b)


async def _generate(
    conv: Conversation, bot: BotConfig, texts: list[str], images: list[str] | None = None,
) -> tuple[Completion, str]:
    """The answer and its outcome: ``sent`` (the model's), ``fallback`` (the model
    failed) or ``no_knowledge`` (see :func:`_search`: no model asked). ``images``
    (``data:`` URLs) go with the message answered, for a bot whose model takes them."""
    s = conv.services
    passages: list[Passage] = []
    # The customer's language, kept on the conversation: a short "ok" does not flip it.
    language = answer_language(conv.context.language, customer_words(texts))
    if language is not None and language != conv.context.language:
        conv.context.language = language
        conv.mark_dirty()
    started = time.monotonic()
    try:
        async with asyncio.timeout(s.settings.llm_timeout_s):
            if s.retriever is not None:
                passages, silent = await _search(conv, bot, "\n".join(texts))
                if silent:
                    return Completion(text=bot.fallback_message, provider="fallback",
                                      model="no knowledge"), "no_knowledge"
            prompt = s.prompt_builder(bot, list(conv.context.turns), texts, passages)
            if images and bot.vision and prompt and prompt[-1].role == "user":
                last = prompt[-1]
                prompt[-1] = ChatMessage(last.role, last.content, tuple(images))
            completion = await s.chat_model.complete(bot, prompt, passages, language=language)
        s.metrics.observe("llm", time.monotonic() - started)
        if bot.suggestions:
            completion = msgspec.structs.replace(
                completion, suggestions=suggestions_for(bot, passages, texts))
        attachment = await _attachment_of(conv, bot, passages)
        if attachment is not None:
            completion = msgspec.structs.replace(completion, attachment=attachment)
        return completion, "sent"
    except (ProviderError, TimeoutError) as exc:
        s.metrics.observe("llm", time.monotonic() - started)
        log.warning("model failed, sending the bot's fallback message",
                    extra={"tenant": conv.tenant_id, "error": type(exc).__name__})
        return Completion(text=bot.fallback_message, provider="fallback",
                          model=str(getattr(exc, "provider", "timeout"))), "fallback"


async def _attachment_of(
    conv: Conversation, bot: BotConfig, passages: list[Passage]
) -> SourceAttachment | None:
    """The picture or document of the knowledge source of the best passage shown (the
    one the answer most likely comes from), if it has one. Never fails the answer."""
    shown = shown_passages(bot, passages)
    if not shown or not shown[0].source_id:
        return None
    try:
        raw = await conv.services.redis.hget(keys.kb_source(conv.tenant_id, shown[0].source_id),
                                             "attachment")
        return msgspec.json.decode(raw, type=SourceAttachment) if raw else None
    except Exception as exc:  # noqa: BLE001 - the text answer goes out regardless
        log.warning("knowledge attachment not read",
                    extra={"tenant": conv.tenant_id, "error": type(exc).__name__})
        return None


async def _send_attachment(conv: Conversation, reply: OutgoingReply) -> None:
    """After the text went: the knowledge source's picture or document, recorded in the
    history as the reply's next part. Best effort (a failure is logged and counted; the
    reply stays sent): not resent after a restart."""
    s = conv.services
    attachment = reply.attachment
    if attachment is None or conv.forgotten:
        return
    part = len(reply.parts)
    try:
        message_id = await s.sender.send_attachment(reply.outbound(), attachment, part)
    except MTDeskError as exc:
        s.metrics.outcome("attachment_failed")
        log.warning("knowledge attachment not sent",
                    extra={"tenant": reply.tenant_id, "error": type(exc).__name__})
        return
    entry = msgspec.structs.replace(
        reply.part_message(part, message_id, conv.now_ms()),
        attachments=(Attachment(type=attachment.type, url=attachment.url,
                                filename=attachment.filename),))
    try:
        await s.store.append(reply.tenant_id, entry, now_ms=conv.now_ms())
    except Exception as exc:  # noqa: BLE001 - sent; the reply is done either way
        log.warning("knowledge attachment sent but not recorded",
                    extra={"tenant": reply.tenant_id, "error": type(exc).__name__})


async def _search(conv: Conversation, bot: BotConfig, query: str) -> tuple[list[Passage], bool]:
    """The passages for ``query``, and whether the knowledge has nothing for it: a
    ``knowledge_only`` LLM bot, no passage at ``bot.min_score``, and the tenant HAS a
    knowledge base (without one, the model is asked under the no-knowledge rule). The
    offline extractive model judges its passages itself."""
    # A broken knowledge base degrades the answer, it does not drop the message.
    retriever = conv.services.retriever
    assert retriever is not None
    try:
        passages = await retriever.search(conv.tenant_id, query)
        silent = (bot.grounding != "general" and not is_extractive(bot)
                  and not shown_passages(bot, passages)
                  and await retriever.has_knowledge(conv.tenant_id))
        return passages, silent
    except Exception as exc:
        log.warning("retrieval failed; answering without passages",
                    extra={"tenant": conv.tenant_id, "error": type(exc).__name__})
        conv.services.metrics.outcome("retrieval_failed")
        return [], False


async def _deliver(conv: Conversation, reply: OutgoingReply, run: ReplyRun, *, start: int,
                   window: int) -> None:
    """Send the reply's parts from ``start`` on, recording each. A retriable Graph error
    that outlasts the sender's own retries (an outage, a throttling storm: 5xx, 613,
    130429) is tried again, resuming after the parts Meta accepted, with back-off, for up
    to ``settings.send_retry_for_s``; then, or at once for any other error, it raises."""
    s = conv.services
    give_up = time.monotonic() + s.settings.send_retry_for_s
    delay = 1.0
    while True:
        if conv.now_ms() >= window:
            # The window closed while the answer was made (or before a resumed send).
            raise _Silent(OUTSIDE_WINDOW)
        try:
            async with aclosing(s.sender.deliver(reply.outbound(), reply.parts, start=start,
                                                 permits=run)) as accepted:
                async for index, message_id in accepted:
                    conv.context.replied = True  # the person got something: no greeting again
                    await run.part_sent(index, message_id)
            return
        except GraphError as exc:
            wait = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter
            if (not exc.retriable or send_refusal(exc) is not None or conv.forgotten
                    or time.monotonic() + wait > give_up):
                raise
            start = max(start, exc.parts_sent)
            s.metrics.outcome("send_retried")
            log.info("reply not sent yet, trying again", extra={
                "tenant": reply.tenant_id, "code": exc.code, "in_s": round(wait, 2)})
            await asyncio.sleep(wait)
            delay = min(30.0, delay * 2)


async def send_reply(
    conv: Conversation, burst: list[WorkItem], reply: OutgoingReply, *, start: int,
    window: int, outcome: str = "sent", begin: bool = False,
) -> None:
    """Send ``reply`` from part ``start`` on (``begin``: store its text first), record
    every part and the end, acknowledge the burst. Nothing is sent from ``window`` (epoch
    ms: when Meta's customer service window ends) on, and nothing more of a bot's reply
    once a person has taken the conversation over (checked at every send permit)."""
    s = conv.services
    turns = conv.context.turns
    sent_turns = conv.bounded([*turns, ChatMessage("assistant", reply.text)])

    def context_at(state: ReplyState) -> ContextWrite | None:
        # The context persisted with the reply's end: with the assistant turn once sent.
        if conv.forgotten:  # erased meanwhile: the state still moves, no context write
            return None
        updated = msgspec.structs.replace(
            conv.context, turns=sent_turns if state is ReplyState.SENT else turns)
        return ContextWrite(keys.context(conv.tenant_id, conv.key),
                            encode_context(updated, conv.sealer, conv.key), s.store.ttl_s)

    if reply.channel == "whatsapp" and s.replies.limiter is not None and \
            await s.tenants.coexistence(reply.tenant_id, reply.channel, reply.account_id):
        s.replies.limiter.pace_coexistence(reply.channel, reply.account_id)
    fence = s.ledger.fence(burst[0].partition)
    if begin:
        run = await s.replies.begin(reply, now_ms=conv.now_ms(), context=context_at,
                                    fence=fence)
    else:
        run = s.replies.resume(reply, context=context_at, fence=fence)
        # A part Meta accepted before the resume (a record that failed, a crash between
        # Meta's answer and the record) is recorded now, not sent again.
        item = burst[0]
        recovered = await run.recover(
            start, wait_s=s.settings.send_confirm_wait_s,
            look=lambda: s.ledger.look_ahead(item.partition, item.entry_id))
        if recovered > start:
            conv.context.replied = True
            s.metrics.outcome("part_recovered")
            start = recovered
    started = time.monotonic()
    try:
        if start >= len(reply.parts):
            pass  # every part went out before the resume: the last one's record ended it
        elif conv.now_ms() >= window:
            # The window closed while the answer was made (or before a resumed send).
            raise _Silent(OUTSIDE_WINDOW)
        elif start == 0 and thread_lost(conv):
            # Another app took the thread while the answer was made.
            raise _Silent(OWNED_ELSEWHERE, "another_app")
        elif start == 0 and all(b.event.event_id in conv.unsent for b in burst):
            raise _Silent(UNSENT_FIRST, "unsent")
        else:
            await _deliver(conv, reply, run, start=start, window=window)
        state, reason = ReplyState.SENT, reply.reason
    except _Silent as silent:
        outcome = silent.outcome
        state, reason = ReplyState.FAILED, silent.reason
    except TakenOver:  # a person has the conversation: the rest of the answer is dropped
        outcome = "taken_over"
        state, reason = ReplyState.FAILED, TAKEN_OVER
    except GraphError as exc:
        outcome = "failed"
        s.metrics.graph_error(exc.code)
        refusal = send_refusal(exc)
        if exc.code == 190:  # the sender marked the channel disconnected
            s.tenants.forget_channel(reply.tenant_id, reply.channel, reply.account_id)
        log.warning("reply not sent", extra={"tenant": reply.tenant_id, "code": exc.code})
        if refusal is not None:  # shown on the message, never counted as sent
            outcome = "outside_window"
        state, reason = ReplyState.FAILED, refusal or f"graph error {exc.code}"
    except MTDeskError as exc:
        if exc.retriable:
            raise
        outcome = "failed"  # e.g. the channel was removed: NotFound
        state, reason = ReplyState.FAILED, type(exc).__name__
    # The turns are taken only once the end is recorded: a retry after a Redis blip must
    # not add the assistant turn twice.
    await run.end(state, reason)
    conv.context.turns = sent_turns if run.ended is ReplyState.SENT else turns
    if run.context_written:
        conv.mark_clean()
    s.metrics.observe("send", time.monotonic() - started)
    s.metrics.outcome(outcome)
    _tally(conv, burst, reply, run.ended, reason)
    if run.ended is ReplyState.SENT and outcome == "fallback":
        await _hand_to_a_person(conv, reply)
    if run.ended is ReplyState.SENT and reply.attachment is not None:
        await _send_attachment(conv, reply)
    for b in burst:
        s.metrics.observe("end_to_end", time.time() - b.received_ms / 1000)
        s.ledger.done(b)


FALLBACK_PAUSE: Final = b"fallback"  # the pause marker's value: set by the model's failure


async def _hand_to_a_person(conv: Conversation, reply: OutgoingReply) -> None:
    """Every model failed and the fallback message went ("a person will follow up"):
    the conversation is a person's now. The bot pauses in it as after a hand-off
    (``keys.paused`` for ``settings.handoff_pause_s``: the inbox card says ``human``, the
    bot answers nothing until a person hands it back or the pause ends), counted once as
    a hand-off. ``MTDESK_HANDOFF_PAUSE_S=0`` (hand-offs off) leaves the bot answering."""
    s = conv.services
    pause_s = s.settings.handoff_pause_s
    if pause_s <= 0 or conv.forgotten:
        return
    now = conv.now_ms()
    if await s.redis.set(keys.paused(conv.tenant_id, conv.key), FALLBACK_PAUSE, ex=pause_s,
                         nx=True):
        s.tally.add(conv.tenant_id, reply.channel, now, "handoff")
    conv.context.paused_until_ms = max(conv.context.paused_until_ms, now + pause_s * 1000)
    conv.mark_dirty()
    s.metrics.outcome("handoff")


def _tally(conv: Conversation, burst: list[WorkItem], reply: OutgoingReply,
           ended: ReplyState | None, reason: str) -> None:
    """The reply's analytics: sent (with the time from the customer's first message of
    the burst to now) or failed (by reason)."""
    tally, now = conv.services.tally, conv.now_ms()
    if reason == TAKEN_OVER:  # dropped for a person, who is counted by their reply
        return
    if ended is ReplyState.SENT and reply.kind != "reply":
        return  # a person's reply from the console: counted when it was queued
    if ended is ReplyState.SENT:
        first = min((b.event.timestamp_ms for b in burst), default=0)
        tally.bot_reply(reply.tenant_id, reply.channel, now, conv.key,
                        now - first if first > 0 else None)
    elif ended is ReplyState.FAILED:
        tally.failure(reply.tenant_id, reply.channel, now, reason)
