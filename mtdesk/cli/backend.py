"""What runs beside the HTTP server: Ray and the actors (the composition root's half of it).

:class:`Backend` initialises Ray (joining ``MTDESK_RAY_ADDRESS`` or starting a local
instance on free ports), then creates, in order: the retrieval shards (FAISS), the
conversation shards (wired to the knowledge base: retrieval through the retrieval
actors, the extractive model for provider ``extractive``), and the policy actors
(deletion worker, retention sweep). Their async control calls and watchdogs run on one
event loop in a thread of their own, so both ``mtdesk serve`` (with any number of
gateway workers) and ``mtdesk demo`` drive it from plain synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from mtdesk.core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def knowledge_shard_services(settings: Settings) -> Any:
    """A conversation shard's services with the knowledge base wired in. Runs inside the
    shard's actor process (Ray pickles this function by reference)."""
    from mtdesk.actors.rayapi import NAMESPACE
    from mtdesk.actors.retrieval_deploy import following_retriever
    from mtdesk.actors.services import build_shard_services
    from mtdesk.core.redis import connect_to
    from mtdesk.core.sealing import TenantCipher
    from mtdesk.retrieval.extractive import ExtractiveModel
    from mtdesk.retrieval.store import KnowledgeStore

    # Default cap: every conversation in flight may look its tenant's knowledge up at once
    # (16 made retrieval fail under load in bench e2e; the bot then answers without it).
    redis = connect_to(settings.redis_url, cluster=settings.redis_cluster)
    store = KnowledgeStore(redis, cipher=TenantCipher.from_settings(redis, settings))
    # The retrieval actors of the generation the stored layout names; the retriever
    # follows later generations (live re-sharding of retrieval shards).
    retriever = await following_retriever(store, settings, namespace=NAMESPACE)
    services = await build_shard_services(settings, offline_model=ExtractiveModel(),
                                          retriever=retriever)
    services.closers.append(store.redis.aclose)
    return services


class Backend:
    """Ray plus every actor of a deployment. ``start()`` blocks until all answer."""

    def __init__(self, settings: Settings, *, policy: bool = True) -> None:
        self.settings = settings
        self._policy_enabled = policy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="mtdesk-backend", daemon=True)
        self.shards: Any = None
        self.policy: Any = None
        self.retrieval_deployment: Any = None
        self._retrieval_redis: Any = None
        self._owns_ray = False
        self._report_stop: asyncio.Event | None = None
        self._report_task: asyncio.Future[None] | None = None
        self._reporter: Any = None
        self._follow_task: asyncio.Future[None] | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 180.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> None:
        from mtdesk.actors import rayapi
        from mtdesk.actors.deploy import Deployment
        from mtdesk.actors.policy_deploy import PolicyDeployment
        self._owns_ray = rayapi.init(self.settings)
        self._thread.start()
        self._run(self._start_retrieval())
        self.shards = Deployment(self.settings, factory=knowledge_shard_services)
        self.shards.on_spares = self._watch_shards
        self._run(self.shards.start())
        if self._policy_enabled:
            self.policy = PolicyDeployment(self.settings)
            self._run(self.policy.start())
        self._run(self._start_reporter())
        log.info("backend started: %d conversation shards, %d retrieval shards",
                 self.settings.shards, len(self.retrieval))

    async def _start_retrieval(self) -> None:
        """The retrieval shards of the stored layout (generation and count; none stored:
        generation 0 with ``MTDESK_RETRIEVAL_SHARDS``), once every one answers."""
        from mtdesk.actors import rayapi
        from mtdesk.actors.retrieval_deploy import RetrievalDeployment
        from mtdesk.core.redis import connect_to

        self._retrieval_redis = connect_to(self.settings.redis_url,
                                           cluster=self.settings.redis_cluster, max_connections=4)
        self.retrieval_deployment = RetrievalDeployment(
            self.settings, self._retrieval_redis, namespace=rayapi.NAMESPACE)
        await self.retrieval_deployment.start()

    @property
    def retrieval(self) -> list[Any]:
        """The retrieval shard actors serving now."""
        deployment = self.retrieval_deployment
        return list(deployment.handles) if deployment is not None else []

    async def _start_reporter(self) -> None:
        """Publish where every actor runs (core/cluster.py) until :meth:`stop`."""
        from mtdesk.actors.cluster_report import ClusterReporter
        from mtdesk.actors.policy_deploy import DELETER_NAME, RETENTION_NAME
        from mtdesk.core.redis import connect_to

        redis = connect_to(self.settings.redis_url, cluster=self.settings.redis_cluster,
                           max_connections=4)
        reporter = ClusterReporter(redis, self.settings.ray_placement)
        self._reporter = reporter
        self._watch_shards()
        self._watch_retrieval()
        if self.policy is not None:
            reporter.watch("deletion", DELETER_NAME, self.policy.deleter)
            reporter.watch("retention", RETENTION_NAME, self.policy.retention)
        with contextlib.suppress(Exception):  # best effort: the loop below retries
            await reporter.publish_once()
        self._report_stop = asyncio.Event()

        async def run() -> None:
            assert self._report_stop is not None
            try:
                await reporter.run(self._report_stop)
            finally:
                await redis.aclose()

        self._report_task = asyncio.ensure_future(run())
        self._follow_task = asyncio.ensure_future(self._follow_requests(redis))

    def _watch_shards(self) -> None:
        """(Re)list the conversation shards in the cluster report, as they are now."""
        from mtdesk.actors.deploy import conversation_shard_name

        reporter = self._reporter
        if reporter is None or self.shards is None:
            return
        reporter.unwatch("conversation_shard")
        for i, (handle, parts) in enumerate(zip(self.shards.actors, self.shards.partitions,
                                                strict=True)):
            reporter.watch("conversation_shard", conversation_shard_name(i), handle, parts)
        first = len(self.shards.actors)  # warm spares: shards with no partition
        for k, handle in enumerate(self.shards.spares):
            reporter.watch("conversation_shard", conversation_shard_name(first + k), handle, [])

    def _watch_retrieval(self) -> None:
        """(Re)list the retrieval shards serving now in the cluster report."""
        reporter, deployment = self._reporter, self.retrieval_deployment
        if reporter is None or deployment is None:
            return
        reporter.unwatch("retrieval_shard")
        for name, handle in zip(deployment.names(), deployment.handles, strict=True):
            reporter.watch("retrieval_shard", name, handle)

    async def _follow_requests(self, redis: Any, interval_s: float = 1.0) -> None:
        """Re-shard when an operator asks for another conversation or retrieval shard count
        (``mtdesk shards set N [--retrieval M]``, ``POST /admin/api/v1/cluster/shards``:
        core/ownership.py, core/retrieval_layout.py)."""
        from mtdesk.actors.autoscale import LagRule
        from mtdesk.core import ownership

        s = self.settings
        rule = (LagRule(min_shards=s.shards_min, max_shards=min(s.shards_max, s.partitions),
                        lag_ms=s.shards_lag_ms, after_s=s.shards_scale_after_s)
                if s.shards_max > 0 else None)
        assert self._report_stop is not None
        while not self._report_stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._report_stop.wait(), interval_s)
            if self._report_stop.is_set():
                return
            try:
                if rule is not None:
                    await self._autoscale(redis, rule)
                wanted = await ownership.read_request(redis)
                if wanted is None:
                    continue
                if wanted.conversation != len(self.shards.actors):
                    await self.reshard(wanted.conversation)
                if (wanted.retrieval is not None and self.retrieval_deployment is not None
                        and wanted.retrieval != self.retrieval_deployment.layout.shards):
                    await self.reshard_retrieval(wanted.retrieval)
            except Exception as exc:  # noqa: BLE001 - logged; the map says why, retried
                log.warning("re-sharding stopped (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(5 * interval_s)

    async def _autoscale(self, redis: Any, rule: Any) -> None:
        """Ask for the count the lag rule wants (as an operator's request would)."""
        import time

        from mtdesk.core import cluster, ownership

        report = await cluster.read(redis)
        if report is None:
            return
        lag = max((a.lag_ms or 0 for _, a in report.actors()
                   if a.kind == "conversation_shard"), default=0)
        wanted = rule.observe(len(self.shards.actors), lag, time.monotonic())
        if wanted is not None and wanted != len(self.shards.actors):
            log.info("autoscaling: %d → %d conversation shards (lag %d ms)",
                     len(self.shards.actors), wanted, lag)
            await ownership.request(redis, wanted)

    async def reshard(self, shards: int) -> Any:
        async def step(_current: Any) -> None:
            # The shards as they are now in the next report (every 5 s): a report made at
            # every step would ping every actor three times per partition moved.
            self._watch_shards()

        return await self.shards.reshard(shards, on_step=step)

    async def reshard_retrieval(self, shards: int) -> Any:
        """A new generation of ``shards`` retrieval shards, warmed, then serving; the old
        one killed after its grace period (actors/retrieval_deploy.py)."""
        async def switched(_layout: Any) -> None:
            self._watch_retrieval()

        return await self.retrieval_deployment.reshard(shards, on_switch=switched)

    async def _ready(self) -> bool:
        ok = await self.shards.ready() if self.shards else False
        if ok and self.policy is not None:
            ok = await self.policy.ready()
        return bool(ok)

    def ready(self) -> bool:
        return self._run(self._ready(), timeout_s=30)

    def run_retention(self, tenant_ids: list[str] | None = None) -> dict[str, Any]:
        if self.policy is None:
            raise RuntimeError("policy actors are not running")
        return self._run(self.policy.run_retention(tenant_ids))

    def stop(self, budget_s: float = 20.0) -> None:
        """Drain and stop the actors within ``budget_s``, then shut Ray down.

        The graceful part is bounded: on SIGTERM to the whole process group (systemd,
        Ctrl-C) Ray's own processes die with us, and waiting on them would hang. Cutting
        it short loses nothing: unacknowledged entries are resumed by the next start.
        """
        from mtdesk.actors import rayapi

        async def graceful() -> None:
            if self._report_stop is not None and self._report_task is not None:
                self._report_stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._report_task, 5)
            if self._follow_task is not None:
                self._follow_task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(self._follow_task, 5)
            stops = ([self.shards.stop(drain_timeout_s=budget_s / 2, wait_names=False)]
                     if self.shards else [])
            if self.policy is not None:
                stops.append(self.policy.stop())
            await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), budget_s)
            if self._retrieval_redis is not None:
                with contextlib.suppress(Exception):
                    await self._retrieval_redis.aclose()

        if self._thread.is_alive():
            try:
                self._run(graceful(), timeout_s=budget_s + 1)
            except Exception as exc:  # timeout or a dead Ray: shutdown below ends them
                log.warning("actors did not stop gracefully (%s)", type(exc).__name__)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if self._owns_ray:
            # Ends every actor this driver started (retrieval shards included).
            with contextlib.suppress(Exception):
                rayapi.shutdown()
