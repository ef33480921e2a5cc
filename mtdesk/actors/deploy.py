"""Conversation shards as Ray actors, and their director.

What a caller (the CLI, which starts Ray through :mod:`mtdesk.actors.rayapi`) may rely on:

- :func:`ray_init_kwargs` gives the arguments for ``ray.init`` (the same function as
  :func:`mtdesk.actors.rayapi.init_kwargs`, which starts Ray).
- :class:`Deployment` ``start()`` creates ``settings.shards`` named actors
  (``mtdesk-shard-{i}`` in namespace ``"mtdesk"``), placed over the Ray nodes by
  ``MTDESK_RAY_PLACEMENT`` (see :mod:`mtdesk.actors.scheduling`), gives them the
  ``settings.partitions`` partitions round-robin (shard ``i`` owns every ``p`` with
  ``p % S == i``), and starts each one's loop; ``ready()`` says whether every shard
  answered a ping; ``stop()`` drains and removes them. Actors live as long as the driver
  unless ``detached=True``. Synchronous callers use ``start_blocking()`` /
  ``stop_blocking()`` (watchdog thread).
- A shard that dies (killed, crashed, its node lost) is restarted by Ray on a live node
  (``max_restarts=-1``, ``max_task_retries=-1``); the director's watchdog pings every
  shard each ``watch_interval_s`` and a ping starts the loop of a restarted actor, which
  resumes from its consumer's pending entries. Nothing lost; the reply state makes sure
  nothing is answered twice.
- A ping says the shard's ``node_id``, ``pid``, ``partitions`` and its figures.
- Ray calls are control calls only (start, ping, stop, stats): messages travel through
  the Redis streams in batches, never one actor call per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from mtdesk.actors import rayapi
from mtdesk.actors.conversation_shard import ConversationShard, ShardServices
from mtdesk.actors.services import build_shard_services
from mtdesk.core.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = rayapi.NAMESPACE
ServicesFactory = Callable[[Settings], Awaitable[ShardServices]]
ray_init_kwargs = rayapi.init_kwargs


def assign_partitions(partitions: int, shards: int) -> list[list[int]]:
    """Round-robin: shard ``i`` owns every partition ``p`` with ``p % shards == i``."""
    return [[p for p in range(partitions) if p % shards == i] for i in range(shards)]


def conversation_shard_name(index: int) -> str:
    return f"mtdesk-shard-{index}"


def _wait_names_free(count: int, timeout_s: float = 10.0) -> None:
    rayapi.wait_names_free([conversation_shard_name(i) for i in range(count)], timeout_s)


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
        info["node_id"] = rayapi.current_node_id()
        info["partitions"] = list(self._partitions)
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


# num_cpus=0 (rayapi's default): shards are I/O bound and may outnumber the cores; the
# operator sizes them with MTDESK_SHARDS.
ShardActor = rayapi.actor_class(ShardHost)


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
        self.partitions: list[list[int]] = []  # the partitions of each actor, by index
        self._group: rayapi.ActorGroup | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._healthy: list[bool] = []
        self._thread: threading.Thread | None = None
        self._stop_thread = threading.Event()

    def _create_actors(self) -> None:
        s = self._settings
        if not rayapi.is_initialized():
            raise RuntimeError("Ray must be started first (see rayapi.init)")
        count = min(s.shards, s.partitions)  # a shard without a partition has no work
        if count < s.shards:
            log.warning("MTDESK_SHARDS=%d exceeds MTDESK_PARTITIONS=%d; starting %d shards",
                        s.shards, s.partitions, count)
        self.partitions = assign_partitions(s.partitions, count)
        self._group = rayapi.actor_group("conversation_shard", s, count,
                                         detached=self._detached)
        for index, partitions in enumerate(self.partitions):
            actor = rayapi.create(ShardActor, conversation_shard_name(index), self._group,
                                  index, s, index, partitions, self._factory,
                                  self._shard_options, detached=self._detached)
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
        rayapi.get([a.ensure_started.remote() for a in self.actors], timeout_s)
        self._stop_thread = threading.Event()
        self._thread = threading.Thread(target=self._watch_blocking, name="mtdesk-shard-watchdog",
                                        daemon=True)
        self._thread.start()

    def _watch_blocking(self) -> None:
        while not self._stop_thread.wait(self._watch_interval_s):
            for index, actor in enumerate(list(self.actors)):
                try:
                    rayapi.get(actor.ping.remote(), max(5.0, self._watch_interval_s * 5))
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
            rayapi.get(refs, drain_timeout_s + 5)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                rayapi.kill(actor)
        _wait_names_free(len(self.actors))
        rayapi.remove_group(self._group)
        self._group = None
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
                rayapi.kill(actor)

        await asyncio.gather(*(one(a) for a in self.actors))
        if wait_names:
            await asyncio.to_thread(_wait_names_free, len(self.actors))
            rayapi.remove_group(self._group)  # not when exiting: Ray may be going with us
            self._group = None
        self.actors = []
