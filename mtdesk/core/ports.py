"""Small typed interfaces between the parts, so each is built and tested with fakes.

The conversation shard talks to the outside world only through these.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

from mtdesk.core.events import Channel, TemplateSend


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str  # "system" | "user" | "assistant"
    content: str
    # Pictures shown with this message (``data:`` URLs), for a bot whose model takes
    # images; only ever on the message being answered, never kept in the context.
    images: tuple[str, ...] = ()


class Passage(msgspec.Struct, frozen=True, kw_only=True):
    """A retrieved piece of the tenant's knowledge."""

    text: str
    source: str  # source name shown to the model and in citations
    score: float
    answer: str | None = None  # set for a Q&A pair: the stored answer
    chunk_id: str = ""
    source_id: str = ""  # the knowledge source it comes from


class SourceAttachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A picture or document a knowledge source sends with the answers made from it
    (``PUT /admin/api/v1/knowledge/{id}/attachment``), by its public https URL."""

    type: str  # "image" | "document"
    url: str
    filename: str | None = None


class BotConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tenant's bot, as ``PUT /admin/api/v1/bot`` sets it."""

    provider: str = "extractive"
    model: str = ""
    system_prompt: str = "You are a helpful customer support assistant."
    temperature: float = 0.3
    max_tokens: int = 512
    fallback: tuple[str, ...] = ()  # further "provider:model" tried in order
    grounding: str = "knowledge_only"  # or "general"
    fallback_message: str = "Sorry, I don't know the answer to that yet. A person will follow up."
    min_score: float = 0.35
    enabled: bool = True
    greeting: str | None = None
    # The model's context window in tokens; 0: known per model family, else a safe
    # default (mtdesk.retrieval.prompt.context_window). The prompt is cut to fit it.
    context_tokens: int = 0
    # Mark the person's message read when it is taken up for an answer (Messenger and
    # Instagram still show typing without it; WhatsApp shows typing only with a read).
    read_receipts: bool = True
    # Instagram comments on the business's media: "off" (recorded only) or "private"
    # (answered with one private message to the commenter, Meta's Private Replies).
    comment_replies: str = "off"
    # The model takes images (OpenAI-compatible image content parts): a picture the
    # customer sends is shown to it; otherwise it is told what was sent.
    vision: bool = False
    # Sent (once per conversation) when a voice note arrives and no transcriber is set.
    voice_reply: str = ("Sorry, I can't listen to voice messages yet. "
                        "Could you write your question instead?")
    # Offer the answers of related Q&A pairs as tap-to-send suggestions (quick replies,
    # WhatsApp buttons or a list).
    suggestions: bool = True


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    provider: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Follow-up questions to offer the person (the knowledge base's related Q&A).
    suggestions: tuple[str, ...] = ()
    # The picture or document of the knowledge source the answer comes from.
    attachment: SourceAttachment | None = None


class ChatModel(Protocol):
    async def complete(
        self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage], *,
        language: str | None = None,
    ) -> Completion:
        """Answer; tries the bot's fallback chain. Raises ProviderError when all fail.
        ``language``: the customer's (ISO 639-1 code), to answer in; None: not known."""
        ...


class Retriever(Protocol):
    async def search(self, tenant_id: str, query: str, k: int = 5) -> list[Passage]: ...

    async def has_knowledge(self, tenant_id: str) -> bool:
        """True when the tenant has any indexed knowledge (else searches find nothing)."""
        ...


@runtime_checkable
class ErasableRetriever(Retriever, Protocol):
    """A retriever that holds tenants' knowledge in memory, so erasure must empty it."""

    async def forget(self, tenant_id: str) -> None:
        """Drop everything held of the tenant (its account was erased)."""
        ...

    async def prune(self) -> list[str]:
        """Drop the tenants held whose erasure began or whose knowledge is gone from
        Redis (a missed erasure notice); returns them."""
        ...


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    message_ids: tuple[str, ...]  # Graph message ids, one per part sent


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    channel: Channel
    account_id: str
    user_id: str
    wa_id: str | None = None
    text: str
    reply_key: str  # the inbound event id this answers; put in metadata, used for idempotency
    reply_to: str | None = None  # WhatsApp context message id
    comment_id: str | None = None  # a private reply: the Instagram comment it answers
    # A person's reply outside the 24 h window (Messenger/Instagram): ``HUMAN_AGENT``.
    tag: str | None = None
    # WhatsApp: an approved template instead of the text (the text describes it).
    template: TemplateSend | None = None
    # Offered under the last part as taps (quick replies, WhatsApp buttons or a list).
    suggestions: tuple[str, ...] = ()
    # Sent after the text (a knowledge source's picture or document).
    attachment: SourceAttachment | None = None


class Sender(Protocol):
    async def send(self, message: OutboundMessage) -> SendResult:
        """Send (splitting as the channel needs). Raises GraphError."""
        ...


class ChannelCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """What the Graph sender needs for one connected account, token decrypted just now."""

    tenant_id: str
    channel_id: str
    channel: Channel
    account_id: str
    access_token: object  # a mtdesk.core.secret.Secret; never logged, never stored plain


class CredentialSource(Protocol):
    async def credentials(self, channel: Channel, account_id: str) -> ChannelCredentials:
        """Decrypts the account's token at the moment of sending. Raises NotFound."""
        ...

    async def mark_disconnected(self, channel: Channel, account_id: str, reason: str) -> None:
        """Graph error 190: the token is no longer valid."""
        ...
