"""Build a shard's services from :class:`Settings`, inside the actor process.

``await build_shard_services(settings)`` opens what a shard talks to — the Redis client,
one aiohttp session, the Graph sender with the shared Redis rate limiter, the token
vault's credentials, and the model router (OpenAI-compatible providers plus an offline
model for ``provider: "extractive"``) — and returns a
:class:`~mtdesk.actors.conversation_shard.ShardServices` whose ``aclose()`` closes them all.

The offline model and the retriever are injectable so the composition root can wire the
knowledge base (e.g. a ``KnowledgeRetriever``); without them the offline model is the
knowledge base's :class:`~mtdesk.retrieval.extractive.ExtractiveModel` (with no retriever
it answers the bot's ``fallback_message``) and there is no retrieval.
:class:`CannedReply` is a fixed offline answer for demos without a knowledge base.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from mtdesk.actors.conversation_shard import ShardServices
from mtdesk.actors.credentials import VaultCredentials
from mtdesk.actors.llm import ModelRouter, ProviderChatModel, Transcriber
from mtdesk.actors.media import MediaDesk
from mtdesk.actors.ratelimit import SendRateLimiter
from mtdesk.actors.sender import GraphSender
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.history import MessageStore
from mtdesk.core.media import MediaStore
from mtdesk.core.pipelined import connect_shared
from mtdesk.core.ports import BotConfig, ChatMessage, ChatModel, Completion, Passage, Retriever
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.policy.vault import TokenVault
from mtdesk.retrieval.extractive import ExtractiveModel

CANNED_TEXT = (
    "Thanks for your message! This assistant is running offline for now; "
    "a person will follow up soon."
)


class CannedReply:
    """The offline answer until the knowledge base's extractive model is wired:
    the best passage's answer when one is given, else a fixed polite text."""

    async def complete(
        self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage], *,
        language: str | None = None,
    ) -> Completion:
        if passages:
            best = passages[0]
            return Completion(text=best.answer or best.text, provider="extractive",
                              model="canned")
        return Completion(text=CANNED_TEXT, provider="extractive", model="canned")


async def build_shard_services(
    settings: Settings,
    *,
    offline_model: ChatModel | None = None,
    retriever: Retriever | None = None,
    clock: Clock | None = None,
    sender_options: dict[str, Any] | None = None,
    media_options: dict[str, Any] | None = None,
) -> ShardServices:
    """Everything one shard needs, opened in the running event loop."""
    # Plain commands of all the shard's conversations share one pipelined connection.
    redis = connect_shared(settings.redis_url, cluster=settings.redis_cluster)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
    )
    clock = clock or SystemClock()
    credentials = VaultCredentials(redis, TokenVault.from_settings(settings), clock=clock)
    limiter = SendRateLimiter(redis, settings, clock=clock)
    sender = GraphSender(settings, credentials, limiter, session, **(sender_options or {}))
    providers = ProviderChatModel(settings)
    model = ModelRouter(providers, offline_model or ExtractiveModel())
    transcriber = Transcriber.from_settings(settings)
    # One cache of data keys for everything the shard seals (events, history, media…).
    cipher = TenantCipher.from_settings(redis, settings)
    media = MediaDesk(
        sender, credentials, MediaStore(redis, cipher=cipher),
        MessageStore(redis, retention_days=settings.retention_days, cipher=cipher),
        transcriber=transcriber,
        **{"max_bytes": settings.media_max_bytes, "timeout_s": settings.media_fetch_timeout_s,
           "retries": settings.media_retries, **(media_options or {})})
    services = ShardServices(redis=redis, sender=sender, chat_model=model, settings=settings,
                             clock=clock, retriever=retriever, limiter=limiter,
                             forget_credentials=credentials.forget_tenant, media=media,
                             cipher=cipher)
    services.closers = [redis.aclose, session.close, model.aclose, media.aclose, cipher.aclose]
    if transcriber is not None:
        services.closers.append(transcriber.aclose)
    return services
