"""The policy actors on Ray: the deletion worker and the retention sweep.

What a caller (the CLI, once Ray is started) may rely on:

- :class:`PolicyDeployment` ``start()`` creates two named actors in namespace
  ``"mtdesk"`` (placed by ``MTDESK_RAY_PLACEMENT``, on nodes with ``mtdesk_policy`` when
  the cluster has that resource: :mod:`mtdesk.actors.scheduling`): ``mtdesk-deleter`` (runs :class:`~mtdesk.policy.erasure.jobs.DeletionWorker`,
  consuming the job stream) and ``mtdesk-retention`` (runs
  :class:`~mtdesk.policy.retention.RetentionSweep` every ``retention_interval_s``, and on
  demand with :meth:`PolicyDeployment.run_retention`). ``ready()`` pings both; ``stop()``
  ends their loops and removes them.
- Both are restarted by Ray when they die (``max_restarts=-1``); a restarted deleter
  resumes the job it held (the job stays pending in the consumer group until finished).
- The hosts (:class:`DeletionHost`, :class:`RetentionHost`) are plain classes: they build
  their own Redis client inside the actor process from the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any

import msgspec

from mtdesk.actors import rayapi
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.redis import Redis, connect_to
from mtdesk.core.settings import Settings
from mtdesk.policy import watchdog
from mtdesk.policy.erasure.jobs import DeletionWorker
from mtdesk.policy.retention import RetentionSweep

log = logging.getLogger(__name__)

NAMESPACE = rayapi.NAMESPACE
DELETER_NAME = "mtdesk-deleter"
RETENTION_NAME = "mtdesk-retention"


class _LoopHost:
    """What both policy actors share: a Redis client made inside the actor process, one
    background loop (restarted by the next call if it ended), and a bounded stop."""

    name = ""

    def __init__(self, settings: Settings, clock: Clock | None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._redis: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    def _loop(self, redis: Redis, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        """Build this host's worker on ``redis`` and return its loop (runs until ``stop``)."""
        raise NotImplementedError

    def _info(self) -> dict[str, Any]:
        running = self._task is not None and not self._task.done()
        return {"actor": self.name, "running": running, "pid": os.getpid(),
                "node_id": rayapi.current_node_id()}

    async def ensure_started(self) -> dict[str, Any]:
        if self._task is None or self._task.done():
            self._redis = self._redis or connect_to(
                self._settings.redis_url, cluster=self._settings.redis_cluster, max_connections=8)
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._loop(self._redis, self._stop), name=self.name)
        return self._info()

    async def ping(self) -> dict[str, Any]:
        return await self.ensure_started()

    async def stop(self) -> dict[str, Any]:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(self._task, timeout=10)
        info = self._info()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        return info


class DeletionHost(_LoopHost):
    """Body of the deleter actor: one :class:`DeletionWorker` loop."""

    name = DELETER_NAME

    def __init__(self, settings: Settings, consumer: str = "deleter-1",
                 clock: Clock | None = None, claim_idle_ms: int = 60_000) -> None:
        super().__init__(settings, clock)
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._worker: DeletionWorker | None = None

    def _loop(self, redis: Redis, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        # Another consumer name after a restart would strand our pending job until
        # claim_idle_ms; the same name re-reads it at once.
        self._worker = DeletionWorker(redis, self._settings, self._clock,
                                      consumer=self._consumer, claim_idle_ms=self._claim_idle_ms)
        return self._worker.run(stop)

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "processed": self._worker.processed if self._worker else 0}

    async def run_job(self, job_id: str) -> dict[str, Any]:
        """Run one job now (idempotent beside the loop); its audit record."""
        await self.ensure_started()
        assert self._worker is not None
        return msgspec.to_builtins(await self._worker.execute(job_id))


async def _together(*loops: Coroutine[Any, Any, None]) -> None:
    await asyncio.gather(*loops)


class RetentionHost(_LoopHost):
    """Body of the retention actor: a scheduled sweep, and sweeps on demand; beside it
    the connection watchdog (:mod:`mtdesk.policy.watchdog`) on its own schedule."""

    name = RETENTION_NAME

    def __init__(self, settings: Settings, interval_s: float = 3600.0,
                 clock: Clock | None = None, pause_s: float = 0.01) -> None:
        super().__init__(settings, clock)
        self._interval_s = interval_s
        self._pause_s = pause_s
        self._sweep: RetentionSweep | None = None

    def _loop(self, redis: Redis, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        self._sweep = RetentionSweep(redis, self._settings, self._clock, pause_s=self._pause_s)
        return _together(self._sweep.run_forever(self._interval_s, stop),
                         watchdog.run_forever(redis, self._settings, self._clock, stop))

    async def run_now(self, tenant_ids: list[str] | None = None) -> dict[str, Any]:
        await self.ensure_started()
        assert self._sweep is not None
        return msgspec.to_builtins(await self._sweep.run(tenant_ids))


# The policy hosts as Ray actors (num_cpus=0: I/O bound).
DeletionActor = rayapi.actor_class(DeletionHost)
RetentionActor = rayapi.actor_class(RetentionHost)


class PolicyDeployment:
    """Creates, pings and stops the policy actors. Ray must already be initialised."""

    def __init__(self, settings: Settings, *, detached: bool = False,
                 retention_interval_s: float = 3600.0) -> None:
        self._settings = settings
        self._detached = detached
        self._interval_s = retention_interval_s
        self.deleter: Any = None
        self.retention: Any = None
        self._group: rayapi.ActorGroup | None = None

    async def start(self) -> None:
        if not rayapi.is_initialized():
            raise RuntimeError("Ray must be started first (see rayapi.init)")
        self._group = rayapi.actor_group("deletion", self._settings, 2,
                                         detached=self._detached)
        self.deleter = rayapi.create(DeletionActor, DELETER_NAME, self._group, 0,
                                     self._settings, detached=self._detached)
        self.retention = rayapi.create(RetentionActor, RETENTION_NAME, self._group, 1,
                                       self._settings, self._interval_s,
                                       detached=self._detached)
        await asyncio.gather(self.deleter.ensure_started.remote(),
                             self.retention.ensure_started.remote())
        log.info("policy actors started")

    async def ready(self, timeout_s: float = 5.0) -> bool:
        if self.deleter is None or self.retention is None:
            return False
        try:
            infos = await asyncio.wait_for(asyncio.gather(
                self.deleter.ping.remote(), self.retention.ping.remote()), timeout_s)
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return all(i.get("running") for i in infos)

    async def run_retention(self, tenant_ids: list[str] | None = None) -> dict[str, Any]:
        return await self.retention.run_now.remote(tenant_ids)

    async def stop(self) -> None:
        for actor in (self.deleter, self.retention):
            if actor is None:
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.stop.remote(), 15)
            with contextlib.suppress(Exception):
                rayapi.kill(actor)
        self.deleter = self.retention = None
        rayapi.remove_group(self._group)
        self._group = None
