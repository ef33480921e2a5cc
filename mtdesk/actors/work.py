"""What a shard hands its conversations: the work items and the services they share.

- :class:`WorkItem` — one inbound stream entry, decoded once by the shard.
- :class:`EventLedger` — how a conversation hands an item back: ``done`` (fully handled:
  the shard acknowledges it), ``failed`` (handling raised: left pending, retried on
  reclaim, a poison event after a few), ``release`` (not handled: cancelled, or being
  answered elsewhere; left pending), and ``idle`` (a conversation's worker stopped: a
  shard waiting for capacity may go on).
- :class:`ConversationServices` — everything the conversations of one shard share,
  built once per shard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mtdesk.actors.media import MediaDesk
from mtdesk.actors.mentions import Mentions
from mtdesk.actors.profiles import Profiles
from mtdesk.actors.ratelimit import SendPermits
from mtdesk.actors.replies import ReplyStore
from mtdesk.actors.stats import ShardMetrics
from mtdesk.actors.tenantview import TenantView
from mtdesk.actors.turns import PromptBuilder, build_prompt
from mtdesk.core.analytics import Tally
from mtdesk.core.clock import Clock
from mtdesk.core.events import Channel, Event
from mtdesk.core.history import MessageStore
from mtdesk.core.ports import ChatModel, OutboundMessage, Retriever, SourceAttachment
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings


@dataclass(slots=True)
class WorkItem:
    """One inbound stream entry, decoded once by the shard."""

    partition: int
    entry_id: str
    tenant_id: str
    event: Event
    received_ms: int  # gateway receive time (field r)
    stale: bool = False  # field s: older than max_event_age_s: record, don't answer
    dispatched: float = field(default_factory=time.monotonic)


class EventLedger(Protocol):
    def done(self, item: WorkItem) -> None: ...

    def release(self, item: WorkItem) -> None: ...

    def failed(self, item: WorkItem) -> None: ...

    def idle(self) -> None: ...

    def fence(self, partition: int) -> tuple[str, str] | None:
        """The partition's owner key and the epoch this shard holds it at (None: not
        fenced), checked by the reply's send permit."""
        ...

    def lost(self, partition: int) -> None:
        """A fence refused this shard: let the partition go at once."""
        ...

    async def look_ahead(self, partition: int, after: str) -> None:
        """Note Meta's confirmations of our sends that wait in the partition's stream
        after entry ``after``, not read yet (a resumed reply asks: docs/delivery.md)."""
        ...


class ReplySender(Protocol):
    """The Graph sender as a conversation uses it (:class:`~mtdesk.actors.sender.GraphSender`)."""

    def deliver(
        self, message: OutboundMessage, parts: Sequence[str], *, start: int = 0,
        permits: SendPermits | None = None,
    ) -> AsyncGenerator[tuple[int, str], None]: ...

    async def signal(self, channel: Channel, account_id: str, bodies: Sequence[bytes]) -> bool:
        ...

    async def send_attachment(
        self, message: OutboundMessage, attachment: SourceAttachment, part: int
    ) -> str: ...


@dataclass
class ConversationServices:
    """What every conversation of a shard shares (built once per shard)."""

    redis: Redis
    settings: Settings
    clock: Clock
    store: MessageStore
    replies: ReplyStore
    tenants: TenantView
    sender: ReplySender
    chat_model: ChatModel
    metrics: ShardMetrics
    ledger: EventLedger
    retriever: Retriever | None = None
    prompt_builder: PromptBuilder = build_prompt
    # At most this many conversations handle an event at once (the shard's
    # max_concurrent_conversations); the others wait with their events queued.
    slots: asyncio.Semaphore | None = None
    # The analytics counted by the shard's conversations, written every second.
    tally: Tally = field(default_factory=Tally)
    # Fetches, keeps and describes the media customers send (None: described unseen).
    media: MediaDesk | None = None
    # Keeps the inbox cards' names and pictures (None: the inbox shows the person's id).
    profiles: Profiles | None = None
    # Reads what Instagram @mentions say, after they are recorded (None: ids only).
    mentions: Mentions | None = None
