"""The one module that touches Ray: conversation shards as Ray actors, and their director.

What a caller (the CLI, the only place that calls ``ray.init``) may rely on:

- :func:`ray_init_kwargs` gives the arguments for ``ray.init``: join
  ``MTDESK_RAY_ADDRESS`` when set, else start a local instance (``ray.init()`` picks free
  ports; note that ``ray start --head`` defaults to port 6379, which is Redis's).
- :class:`Deployment` ``start()`` creates ``settings.shards`` named actors
  (``mtdesk-shard-{i}`` in namespace ``"mtdesk"``), gives them the ``settings.partitions``
  partitions round-robin (shard ``i`` owns every ``p`` with ``p % S == i``), and starts
  each one's loop; ``ready()`` says whether every shard answered a ping; ``stop()`` drains
  and removes them. Actors live as long as the driver unless ``detached=True``.
  Synchronous callers use ``start_blocking()`` / ``stop_blocking()`` (watchdog thread).
- A shard that dies (killed, crashed, its node lost) is restarted by Ray
  (``max_restarts=-1``, ``max_task_retries=-1``); the director's watchdog pings every
  shard each ``watch_interval_s`` and a ping starts the loop of a restarted actor, which
  resumes from its consumer's pending entries. Nothing lost; the reply state makes sure
  nothing is answered twice.
- Ray calls are control calls only (start, ping, stop, stats): messages travel through
  the Redis streams in batches, never one actor call per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from mtdesk.actors.conversation_shard import ConversationShard, ShardServices
from mtdesk.actors.services import build_shard_services
from mtdesk.core.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "mtdesk"
ServicesFactory = Callable[[Settings], Awaitable[ShardServices]]


def ray_init_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for ``ray.init``: join ``settings.ray_address`` or start a local one."""
    if settings.ray_address:
        return {"address": settings.ray_address, "namespace": NAMESPACE,
                "log_to_driver": False}
    # No address: a fresh local instance on free ports (never Redis's 6379).
    return {"address": "local", "namespace": NAMESPACE, "include_dashboard": False,
            "log_to_driver": False}


def assign_partitions(partitions: int, shards: int) -> list[list[int]]:
    """Round-robin: shard ``i`` owns every partition ``p`` with ``p % shards == i``."""
    return [[p for p in range(partitions) if p % shards == i] for i in range(shards)]


def conversation_shard_name(index: int) -> str:
    return f"mtdesk-shard-{index}"


def _wait_names_free(count: int, timeout_s: float = 10.0) -> None:
    """Wait until killed shards' names are released, so a quick restart (which looks
    actors up by name) gets fresh actors rather than dying ones."""
    deadline = time.monotonic() + timeout_s
    for index in range(count):
        while time.monotonic() < deadline:
            try:
                ray.get_actor(conversation_shard_name(index), namespace=NAMESPACE)
            except ValueError:
                break
            time.sleep(0.05)


class ShardHost:
    """The body of a shard actor: builds the services inside the actor process and runs
    one :class:`ConversationShard`. Every call first makes sure the shard runs, so a
    restarted actor resumes on the first call it gets (the director's ping)."""

    def __init__(
        self, settings: Settings, index: int, partitions: list[int],
        factory: ServicesFactory | None = None, shard_options: dict[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._index = index
        self._partitions = partitions
        self._factory = factory or build_shard_services
        self._options = shard_options or {}
        self._shard: ConversationShard | None = None
        self._services: ShardServices | None = None
        self._lock: asyncio.Lock | None = None

    async def ensure_started(self) -> dict[str, Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._shard is None:
                self._services = await self._factory(self._settings)
                shard = ConversationShard(self._index, self._partitions, self._services,
                                          **self._options)
                await shard.start()
                self._shard = shard
        return self._shard.ping()

    async def ping(self) -> dict[str, Any]:
        info = await self.ensure_started()
        info["pid"] = os.getpid()
        return info

    async def stop(self, drain_timeout_s: float = 10.0) -> dict[str, Any]:
        if self._shard is None:
            return {"shard": self._index, "running": False}
        shard, self._shard = self._shard, None
        await shard.stop(drain_timeout_s=drain_timeout_s)
        if self._services is not None:
            await self._services.aclose()
        info = shard.ping()
        return info


# The one place ray.remote is applied. num_cpus=0: shards are I/O bound and may outnumber
# the cores; the operator sizes them with MTDESK_SHARDS.
ShardActor = ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)(ShardHost)


class Deployment:
    """Creates, watches and stops the shard actors. Ray must already be initialised."""

    def __init__(
        self, settings: Settings, *, factory: ServicesFactory | None = None,
        shard_options: dict[str, Any] | None = None, detached: bool = False,
        watch_interval_s: float = 1.0,
    ) -> None:
        self._settings = settings
        self._factory = factory
        self._shard_options = shard_options
        self._detached = detached
        self._watch_interval_s = watch_interval_s
        self.actors: list[Any] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._healthy: list[bool] = []
        self._thread: threading.Thread | None = None
        self._stop_thread = threading.Event()

    def _create_actors(self) -> None:
        s = self._settings
        if not ray.is_initialized():
            raise RuntimeError("ray.init() must be called first (see ray_init_kwargs)")
        count = min(s.shards, s.partitions)  # a shard without a partition has no work
        if count < s.shards:
            log.warning("MTDESK_SHARDS=%d exceeds MTDESK_PARTITIONS=%d; starting %d shards",
                        s.shards, s.partitions, count)
        for index, partitions in enumerate(assign_partitions(s.partitions, count)):
            options: dict[str, Any] = {"name": conversation_shard_name(index), "namespace": NAMESPACE,
                                       "get_if_exists": True}
            if self._detached:
                options["lifetime"] = "detached"
            actor = ShardActor.options(**options).remote(
                s, index, partitions, self._factory, self._shard_options)
            self.actors.append(actor)
        self._healthy = [True] * len(self.actors)

    async def start(self) -> None:
        """Create the shards, start every loop, then watch them (in this event loop)."""
        self._create_actors()
        await asyncio.gather(*(a.ensure_started.remote() for a in self.actors))
        self._watchdog = asyncio.create_task(self._watch(), name="mtdesk-shard-watchdog")
        log.info("shards started: %d shards, %d partitions", len(self.actors),
                 self._settings.partitions)

    def start_blocking(self, timeout_s: float = 120.0) -> None:
        """:meth:`start` for synchronous callers (the CLI): the watchdog is a thread."""
        self._create_actors()
        ray.get([a.ensure_started.remote() for a in self.actors], timeout=timeout_s)
        self._stop_thread = threading.Event()
        self._thread = threading.Thread(target=self._watch_blocking, name="mtdesk-shard-watchdog",
                                        daemon=True)
        self._thread.start()

    def _watch_blocking(self) -> None:
        while not self._stop_thread.wait(self._watch_interval_s):
            for index, actor in enumerate(list(self.actors)):
                try:
                    ray.get(actor.ping.remote(), timeout=max(5.0, self._watch_interval_s * 5))
                    ok = True
                except Exception:
                    ok = False
                if index < len(self._healthy) and ok != self._healthy[index]:
                    log.warning("shard %s is %s", index, "back" if ok else "not answering")
                    self._healthy[index] = ok

    def stop_blocking(self, drain_timeout_s: float = 10.0) -> None:
        """:meth:`stop` for synchronous callers."""
        if self._thread is not None:
            self._stop_thread.set()
            self._thread.join(timeout=self._watch_interval_s * 10 + 10)
            self._thread = None
        refs = [a.stop.remote(drain_timeout_s) for a in self.actors]
        with contextlib.suppress(Exception):
            ray.get(refs, timeout=drain_timeout_s + 5)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        _wait_names_free(len(self.actors))
        self.actors = []

    async def ping_all(self, timeout_s: float = 5.0) -> list[dict[str, Any] | None]:
        async def one(actor: Any) -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(actor.ping.remote(), timeout_s)
            except Exception:
                return None

        return list(await asyncio.gather(*(one(a) for a in self.actors)))

    async def ready(self, timeout_s: float = 5.0) -> bool:
        """Every shard answered a ping (and so is running)."""
        if not self.actors:
            return False
        return all(info is not None for info in await self.ping_all(timeout_s))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval_s)
            infos = await self.ping_all(timeout_s=max(5.0, self._watch_interval_s * 5))
            for index, info in enumerate(infos):
                ok = info is not None
                if ok != self._healthy[index]:
                    log.warning("shard %s is %s", index, "back" if ok else "not answering")
                self._healthy[index] = ok

    async def stop(self, drain_timeout_s: float = 10.0, *, wait_names: bool = True) -> None:
        """Drain and remove the shards. ``wait_names``: wait until their names are free so a
        restart in this process gets fresh actors (not wanted when the driver is exiting:
        it asks Ray, which may be dying with us)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None

        async def one(actor: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.stop.remote(drain_timeout_s), drain_timeout_s + 5)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

        await asyncio.gather(*(one(a) for a in self.actors))
        if wait_names:
            await asyncio.to_thread(_wait_names_free, len(self.actors))
        self.actors = []
