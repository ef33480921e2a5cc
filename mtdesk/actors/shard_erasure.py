"""What a conversation shard does with erasure notices (``keys.ERASURE_NOTICES``, see
:mod:`mtdesk.policy.erasure.notices`): :class:`ShardErasure` drops what the shard holds
of erased data, so it is neither served nor written back.

- A notice drops the conversations it covers (a reply under way finishes without writing
  its context). A ``tenant`` notice also drops the tenant's cached configuration and,
  when the retriever holds knowledge in memory (:class:`~mtdesk.core.ports.ErasableRetriever`,
  e.g. the in-process fallback when no retrieval actors run), the tenant's index.
- A notice sent while the subscription was down is lost, so after every (re)subscription
  :meth:`ShardErasure.prune` checks what is held against Redis: conversations of a
  tenant whose account erasure began (``keys.erased``), settled conversations whose
  stored context is gone (erased, or expired), and the retriever's tenants whose
  knowledge is gone (:meth:`~mtdesk.retrieval.search.KnowledgeRetriever.prune`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from mtdesk.actors.conversation import Conversation
from mtdesk.actors.tenantview import TenantView
from mtdesk.core import keys
from mtdesk.core.errors import MTDeskError
from mtdesk.core.ports import ErasableRetriever, Retriever
from mtdesk.core.redis import Redis
from mtdesk.policy.erasure.notices import Notice, TenantNotice, erased_tenant, notice_covers

log = logging.getLogger(__name__)

_PAGE = 1000  # EXISTS per pipelined round trip


class ShardErasure:
    """Works on the shard's own conversation table (slot → conversation)."""

    def __init__(
        self, convs: OrderedDict[str, Conversation], redis: Redis, tenants: TenantView,
        retriever: Retriever | None, *, shard: int = 0,
        forget_credentials: Callable[[str], None] | None = None,
    ) -> None:
        self._forget_credentials = forget_credentials
        self._convs = convs
        self._redis = redis
        self._tenants = tenants
        self._retriever = retriever if isinstance(retriever, ErasableRetriever) else None
        self._shard = shard

    async def on_notice(self, notice: Notice) -> None:
        self.forget(notice)
        tenant = erased_tenant(notice)
        if tenant is not None and self._retriever is not None:
            try:
                await self._retriever.forget(tenant)
            except MTDeskError as exc:  # retrieval actors forget on the notice themselves
                log.warning("retriever could not forget an erased tenant (%s)", type(exc).__name__)

    def forget(self, notice: Notice) -> int:
        """Drop the conversations ``notice`` covers; returns how many."""
        tenant = erased_tenant(notice)
        if tenant is not None:
            self._tenants.forget_tenant(tenant)
            # A token cached by an earlier call (a read mark, a send) must not carry a
            # reply out after the account is gone.
            if self._forget_credentials is not None:
                self._forget_credentials(tenant)
        dropped = 0
        for slot, conv in list(self._convs.items()):
            if notice_covers(notice, conv.tenant_id, conv.key):
                self._drop(slot, conv)
                dropped += 1
        return dropped

    async def prune(self) -> int:
        """What a missed notice would have dropped (see the module); returns the
        conversations dropped. Redis errors propagate (the caller subscribes again and
        calls this again)."""
        dropped = 0
        tenants = sorted({conv.tenant_id for conv in self._convs.values()})
        marks = await self._exist([keys.erased(t) for t in tenants])
        for tenant, erased in zip(tenants, marks, strict=True):
            if erased:
                dropped += self.forget(TenantNotice(tenant))
        settled = [(slot, conv) for slot, conv in self._convs.items() if conv.settled]
        stored = await self._exist([keys.context(c.tenant_id, c.key) for _, c in settled])
        for (slot, conv), exists in zip(settled, stored, strict=True):
            if not exists and self._convs.get(slot) is conv and conv.settled:
                self._drop(slot, conv)
                dropped += 1
        if dropped:
            log.warning("dropped conversations erased while erasure notices could not arrive",
                        extra={"shard": self._shard, "conversations": dropped})
        if self._retriever is not None:
            await self._retriever.prune()
        return dropped

    def _drop(self, slot: str, conv: Conversation) -> None:
        conv.forgotten = True  # never written back, even by a reply under way
        conv.context = type(conv.context)()
        if conv.idle:
            del self._convs[slot]

    async def _exist(self, names: list[str]) -> list[bool]:
        found: list[bool] = []
        for start in range(0, len(names), _PAGE):
            pipe = self._redis.pipeline(transaction=False)
            for name in names[start : start + _PAGE]:
                pipe.exists(name)
            found += [bool(n) for n in await pipe.execute()]
        return found
