"""Bursts: one person's messages answered together, by one reply.

A burst is the message being answered (its head) and the person's further messages
already queued behind it (they arrived while the previous reply was being made) or, with
``settings.burst_window_ms``, arriving within that window. :func:`claim_burst` claims
the head's reply and marks every member ``answered`` by it, atomically; the model then
sees their texts as one user message. A member answered elsewhere meanwhile is
acknowledged, not answered again; a second copy of an event already in the burst (a
redelivery) likewise. Whatever goes wrong, no member is stranded: unclaimed ones go back
to the front of the queue, in order.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mtdesk.actors.admission import admit
from mtdesk.actors.turns import user_text
from mtdesk.core.events import Message, Postback

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation
    from mtdesk.actors.work import WorkItem


def can_claim_alone(conv: Conversation) -> bool:
    """True when :func:`collect` would find nothing to add right now: no burst window and
    no message of this person queued next. The head can then be claimed in the same
    round trip as its admission."""
    if conv.services.settings.burst_window_ms > 0:
        return False
    return not (conv.queue and _is_message(conv.queue[0]))


def _is_message(item: WorkItem) -> bool:
    return isinstance(item.event, Message | Postback)


async def claim_burst(conv: Conversation, head: WorkItem) -> list[WorkItem] | None:
    """Collect the burst behind ``head`` and claim it. Returns the burst (head first,
    then the members claimed), or None when the head is being answered elsewhere (the
    whole burst was released: looked at again on redelivery)."""
    members = await collect(conv, {head.event.event_id})
    try:
        claimed = await conv.services.replies.claim(
            head.tenant_id, head.event.event_id, [b.event.event_id for b in members],
            now_ms=conv.now_ms(),
        )
    except BaseException:
        conv.requeue(members)
        raise
    ledger = conv.services.ledger
    if claimed is None:
        ledger.release(head)
        for b in members:
            ledger.release(b)
        return None
    keep = set(claimed)
    for b in members:
        if b.event.event_id not in keep:
            ledger.done(b)  # already answered elsewhere
    return [head, *(b for b in members if b.event.event_id in keep)]


def texts_of(burst: list[WorkItem]) -> list[str]:
    """What the person wrote, one text per message of the burst, in order."""
    return [user_text(b.event) for b in burst if isinstance(b.event, Message | Postback)]


async def stored_texts(conv: Conversation, event_ids: tuple[str, ...]) -> list[str]:
    """The stored texts of inbound events (by their history entries), in order: a burst
    claimed before a crash gets its members' texts back."""
    if not event_ids:
        return []
    s = conv.services
    records = await s.replies.load_many(conv.tenant_id, list(event_ids))
    texts = []
    for record in records:
        if record.stored:
            found = await s.store.read(conv.tenant_id, conv.key, start=record.stored,
                                       end=record.stored, join_status=False)
            if found and found[0].text:
                texts.append(found[0].text)
    return texts


async def collect(conv: Conversation, seen: set[str]) -> list[WorkItem]:
    """The person's further messages already queued, and, with ``burst_window_ms``, those
    arriving within it, each admitted (stored once; skipped ones acknowledged)."""
    window_s = conv.services.settings.burst_window_ms / 1000
    deadline = time.monotonic() + window_s
    burst: list[WorkItem] = []
    try:
        return await _collect_into(conv, burst, seen, deadline)
    except BaseException:
        conv.requeue(burst)
        raise


async def _collect_into(
    conv: Conversation, burst: list[WorkItem], seen: set[str], deadline: float
) -> list[WorkItem]:
    s = conv.services
    queue = conv.queue
    while True:
        while queue and _is_message(queue[0]):
            nxt = queue[0]
            if nxt.event.event_id in seen:
                queue.popleft()
                s.metrics.outcome("duplicate")
                s.ledger.done(nxt)
                continue
            reason, record, _ = await admit(conv, nxt)
            if reason or record.done:
                queue.popleft()
                s.metrics.outcome("skipped" if reason else "duplicate")
                s.ledger.done(nxt)
                continue
            if record.state:  # resumable/generating: its own turn, after this burst
                return burst
            seen.add(nxt.event.event_id)
            burst.append(queue.popleft())
            conv.answering[nxt.event.event_id] = nxt  # an edit of it now revises the answer
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (queue and not _is_message(queue[0])):
            return burst
        await asyncio.sleep(min(remaining, 0.05))
