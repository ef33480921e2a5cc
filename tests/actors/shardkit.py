"""Test harness for the conversation shard tests: real Redis, the fake Graph API and the
fake LLM as real local servers, a provisioned tenant, and helpers to push events into
the inbound streams exactly as the gateway does."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from mtdesk.actors.conversation_shard import ConversationShard, ShardServices
from mtdesk.actors.services import build_shard_services
from mtdesk.actors.turns import ConversationContext, decode_context
from mtdesk.core import keys
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.events import Event, Message, encode_event, partition_of
from mtdesk.core.history import MessageStore
from mtdesk.core.ports import BotConfig, Retriever
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.secret import Secret
from mtdesk.core.settings import ProviderConfig, Settings
from mtdesk.core.tenants import Bots, Channels, Tenants
from mtdesk.fakes.graph import FakeGraphAPI
from mtdesk.fakes.llm import FakeLLM
from mtdesk.policy.vault import TokenVault

TOKEN = "EAAB-test-token"
APP_ID = "APP1"
ACCOUNTS = {"messenger": "1001", "instagram": "1002", "whatsapp": "1003"}


def make_settings(redis_url: str, graph: FakeGraphAPI, llm: FakeLLM, **overrides: object) -> Settings:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    fields: dict[str, object] = dict(
        redis_url=redis_url,
        graph_api_base=graph.base_url,
        providers={"openai": ProviderConfig(name="openai", base_url=llm.base_url)},
        encryption_keys=(Secret(key),),
        meta_app_id=APP_ID,
        partitions=4,
        shards=1,
        llm_timeout_s=5.0,
    )
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


@dataclass
class Desk:
    """One provisioned tenant plus the fakes; ``shard()`` builds a plain shard."""

    redis: Redis
    settings: Settings
    graph: FakeGraphAPI
    llm: FakeLLM
    tenant_id: str = ""
    channel_ids: dict[str, str] = field(default_factory=dict)
    shards: list[tuple[ConversationShard, ShardServices]] = field(default_factory=list)
    _n: int = 0

    async def provision(self, bot: BotConfig | None = None) -> None:
        clock = SystemClock()
        record, _key = await Tenants(self.redis, clock).create("Acme", "ops@acme.test")
        self.tenant_id = record.id
        vault = TokenVault.from_settings(self.settings)
        channels = Channels(self.redis, clock, vault.encrypt)
        for channel, account in ACCOUNTS.items():
            ch = await channels.connect(self.tenant_id, channel, account, TOKEN)
            self.channel_ids[channel] = ch.id
            self.graph.register(account, TOKEN, channel=channel)
        await Bots(self.redis, self.cipher()).put(self.tenant_id, bot or BotConfig(
            provider="openai", model="gpt-test", system_prompt="You are Acme's assistant."))

    async def shard(self, index: int = 0, partitions: list[int] | None = None,
                    settings: Settings | None = None, retriever: Retriever | None = None,
                    sender_options: dict[str, object] | None = None,
                    clock: Clock | None = None, media_options: dict[str, object] | None = None,
                    **options: object) -> ConversationShard:
        settings = settings or self.settings
        services = await build_shard_services(
            settings, retriever=retriever, clock=clock,
            sender_options=sender_options or {"base_delay_s": 0.01, "max_attempts": 3},
            media_options=media_options)
        shard = ConversationShard(index, partitions if partitions is not None
                                  else list(range(settings.partitions)), services,
                                  block_ms=100, **options)  # type: ignore[arg-type]
        self.shards.append((shard, services))
        return shard

    def cipher(self) -> TenantCipher:
        """The tenants' data keys, as a process of this desk holds them."""
        return TenantCipher.from_settings(self.redis, self.settings)

    def store(self) -> MessageStore:
        """The message store as the shards see it (sealed text opened)."""
        return MessageStore(self.redis, cipher=self.cipher())

    async def stored_context(self, conversation: str) -> ConversationContext | None:
        """The conversation's context as stored, opened with the tenant's data key."""
        raw = await self.redis.get(keys.context(self.tenant_id, conversation))
        if raw is None:
            return None
        key = await TenantCipher.from_settings(self.redis, self.settings).key(self.tenant_id)
        return decode_context(raw, key, conversation)

    async def close(self) -> None:
        for shard, services in self.shards:
            await shard.stop(drain_timeout_s=5)
            await services.aclose()

    def message(self, text: str | None, *, user: str = "U1", channel: str = "messenger",
                mid: str | None = None, **kw: object) -> Message:
        self._n += 1
        return Message(event_id=mid or f"m.{user}.{self._n}.{time.time_ns()}",
                       channel=channel, account_id=ACCOUNTS[channel],  # type: ignore[arg-type]
                       user_id=user, timestamp_ms=int(time.time() * 1000), text=text,
                       **kw)  # type: ignore[arg-type]

    async def answering(self, text: str, *, user: str = "U1",
                        **fields: object) -> tuple[ConversationShard, Message]:
        """A started shard whose model is held answering ``text`` from ``user``."""
        shard = await self.shard()
        await shard.start()
        self.llm.hold()
        message = self.message(text, user=user, **fields)
        await self.push(message)
        await eventually(lambda: self.llm.waiting == 1)
        return shard, message

    async def push(self, event: Event, *, stale: bool = False) -> str:
        """XADD the event to its partition as the gateway does (no dedup)."""
        fields = {b"e": encode_event(event), b"t": self.tenant_id.encode(),
                  b"r": str(int(time.time() * 1000)).encode()}
        if stale:
            fields[b"s"] = b"1"
        p = partition_of(event.conversation, self.settings.partitions)
        entry = await self.redis.xadd(keys.inbound(p), fields)  # type: ignore[arg-type]
        return entry.decode()

    def texts_to(self, user: str) -> list[str]:
        out = []
        for s in self.graph.sends:
            body = s.body
            to = (body.get("recipient") or {}).get("id") if "messaging_product" not in body \
                else body.get("to") or body.get("recipient")
            if to == user:
                out.append(s.text or "")
        return out

    async def pending(self) -> int:
        total = 0
        for p in range(self.settings.partitions):
            try:
                info = await self.redis.xpending(keys.inbound(p), keys.SHARD_GROUP)
            except Exception:
                continue
            total += int(info["pending"])
        return total

    async def stream_lengths(self) -> int:
        return sum([await self.redis.xlen(keys.inbound(p)) for p in range(self.settings.partitions)])


async def eventually(check: Callable[[], object], *, within: float = 15.0) -> None:
    """Wait until ``check()`` (sync or async) is truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def desk(redis: Redis, redis_url: str, *, bot: BotConfig | None = None,
               **overrides: object) -> AsyncIterator[Desk]:
    async with FakeGraphAPI() as graph, FakeLLM() as llm:
        d = Desk(redis, make_settings(redis_url, graph, llm, **overrides), graph, llm)
        await d.provision(bot)
        try:
            yield d
        finally:
            await d.close()
