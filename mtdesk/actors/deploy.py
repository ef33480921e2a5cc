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
- ``settings.shard_spares`` warm spares (``spares``): shards started with no partition,
  named after the active ones (``mtdesk-shard-{S}``, …). A re-sharding that adds shards
  takes them first, so it starts no process while traffic waits; the spares are made
  again in the background once the handover is done. Shrinking keeps the shards it
  emptied as the spares (their processes stay) and stops the rest.
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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from mtdesk.actors import rayapi
from mtdesk.actors.conversation_shard import ConversationShard, ShardServices
from mtdesk.actors.services import build_shard_services
from mtdesk.core import gctune, keys, ownership
from mtdesk.core.redis import Redis, connect_to
from mtdesk.core.settings import Settings
from mtdesk.retrieval.language import detect_language

log = logging.getLogger(__name__)

NAMESPACE = rayapi.NAMESPACE
ServicesFactory = Callable[[Settings], Awaitable[ShardServices]]
ray_init_kwargs = rayapi.init_kwargs
T = TypeVar("T")


def assign_partitions(partitions: int, shards: int) -> list[list[int]]:
    """Round-robin: shard ``i`` owns every partition ``p`` with ``p % shards == i``."""
    return [[p for p in range(partitions) if p % shards == i] for i in range(shards)]


def conversation_shard_name(index: int) -> str:
    return ownership.shard_name(index)


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
                # A restarted actor holds what the ownership map gives it now, not what
                # it was created with (partitions move while the deployment runs).
                held = await _held_now(self._services, self._index)
                if held is not None:
                    self._partitions = sorted(held)
                await _warm(self._services)
                shard = ConversationShard(self._index, self._partitions, self._services,
                                          epochs=held, **self._options)
                await shard.start()
                self._shard = shard
                # Start-up is over: what it built is kept out of the collector's scans
                # (a full collection over it held messages up for tens of ms).
                gctune.settle()
        return self._shard.ping()

    async def release(self, partitions: list[int], timeout_s: float = 30.0) -> dict[str, Any]:
        """Hand ``partitions`` over (see :meth:`ConversationShard.release_partitions`)."""
        await self.ensure_started()
        assert self._shard is not None
        out = await self._shard.release_partitions(partitions, timeout_s=timeout_s)
        self._partitions = list(self._shard.partitions)
        return out

    async def take(self, held: dict[int, int]) -> dict[str, Any]:
        """Take partitions over at their epochs (:meth:`ConversationShard.take_partitions`)."""
        await self.ensure_started()
        assert self._shard is not None
        out = await self._shard.take_partitions(held)
        self._partitions = list(self._shard.partitions)
        return out

    async def ping(self) -> dict[str, Any]:
        info = await self.ensure_started()
        info["pid"] = os.getpid()
        info["node_id"] = rayapi.current_node_id()
        info["partitions"] = list(self._shard.partitions if self._shard else self._partitions)
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


async def _held_now(services: ShardServices, index: int) -> dict[int, int] | None:
    """What the ownership map says shard ``index`` holds (partition → epoch), None when
    there is no map (a deployment of an older version, or a test's bare shard)."""
    current = await ownership.read(services.redis)
    if current is None or len(current.owners) != services.settings.partitions:
        return None
    return current.held(index)


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
        self._grown: list[rayapi.ActorGroup] = []  # places of shards added while running
        self._resharding = asyncio.Lock()
        self.ownership: ownership.Ownership | None = None
        # Warm spares: started shards without a partition, indexes len(actors) onwards.
        self.spares: list[Any] = []
        self._refill: asyncio.Task[None] | None = None
        self._starting: list[Any] = []  # created, not yet running (stop() removes them)
        self.on_spares: Callable[[], None] | None = None  # told when spares were made

    def _create_actors(self) -> None:
        s = self._settings
        if not rayapi.is_initialized():
            raise RuntimeError("Ray must be started first (see rayapi.init)")
        count = min(s.shards, s.partitions)  # a shard without a partition has no work
        if count < s.shards:
            log.warning("MTDESK_SHARDS=%d exceeds MTDESK_PARTITIONS=%d; starting %d shards",
                        s.shards, s.partitions, count)
        self.ownership = _run_in_thread(_publish_initial(s, count))
        self.partitions = [self.ownership.partitions_of(i) for i in range(count)]
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
        await self._fill_spares()
        self._watchdog = asyncio.create_task(self._watch(), name="mtdesk-shard-watchdog")
        log.info("shards started: %d shards, %d partitions", len(self.actors),
                 self._settings.partitions)

    def start_blocking(self, timeout_s: float = 120.0) -> None:
        """:meth:`start` for synchronous callers (the CLI): the watchdog is a thread."""
        self._create_actors()
        rayapi.get([a.ensure_started.remote() for a in self.actors], timeout_s)
        _run_in_thread(self._fill_spares())
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
        every = [*self.actors, *self.spares]
        refs = [a.stop.remote(drain_timeout_s) for a in every]
        with contextlib.suppress(Exception):
            rayapi.get(refs, drain_timeout_s + 5)
        for actor in every:
            with contextlib.suppress(Exception):
                rayapi.kill(actor)
        _wait_names_free(len(every))
        for group in [self._group, *self._grown]:
            rayapi.remove_group(group)
        self._group, self._grown = None, []
        self.actors, self.spares = [], []

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
                if index >= len(self._healthy):  # shards removed meanwhile
                    break
                if ok != self._healthy[index]:
                    log.warning("shard %s is %s", index, "back" if ok else "not answering")
                self._healthy[index] = ok
            # A spare Ray restarted (its node lost) is warm again before it is needed.
            await asyncio.gather(*(_ping_quietly(a) for a in list(self.spares)))

    async def stop(self, drain_timeout_s: float = 10.0, *, wait_names: bool = True) -> None:
        """Drain and remove the shards. ``wait_names``: wait until their names are free so a
        restart in this process gets fresh actors (not wanted when the driver is exiting:
        it asks Ray, which may be dying with us)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        starting = list(self._starting)  # a refill cancelled now leaves these behind
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refill
            self._refill = None

        async def one(actor: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.stop.remote(drain_timeout_s), drain_timeout_s + 5)
            with contextlib.suppress(Exception):
                rayapi.kill(actor)

        every = [*self.actors, *self.spares, *starting]
        await asyncio.gather(*(one(a) for a in every))
        if wait_names:
            await asyncio.to_thread(_wait_names_free, len(every))
            for group in [self._group, *self._grown]:  # not when exiting (Ray may be going)
                rayapi.remove_group(group)
            self._group, self._grown = None, []
        self.actors, self.spares = [], []

    # --- live re-sharding -------------------------------------------------------------
    async def reshard(
        self, shards: int, *, release_timeout_s: float = 30.0, answer_timeout_s: float = 120.0,
        on_step: Callable[[ownership.Ownership], Awaitable[None]] | None = None,
    ) -> ownership.Ownership:
        """Change the number of conversation shards to ``shards`` while they run.

        New shards are started first (placed like the others); then partitions move one
        at a time, the fewest that balance the shards (:func:`ownership.plan`): the old
        owner releases it (stops reading it, its conversations finish or persist, its
        acknowledgements are flushed), the epoch grows and fences the partition, the map
        is written, and the new owner takes it (claims every entry left pending on it,
        in order, before reading new ones). Shards left without a partition are stopped
        last. A shard that does not answer (restarting) is asked again for up to
        ``answer_timeout_s``; then the re-sharding stops where it is, its reason in the
        map's ``error``. ``on_step`` runs after every write of the map."""
        s = self._settings
        shards = max(1, min(shards, s.partitions))
        async with self._resharding:
            redis = connect_to(s.redis_url, cluster=s.redis_cluster, max_connections=4)
            try:
                return await self._reshard(redis, shards, release_timeout_s,
                                           answer_timeout_s, on_step)
            finally:
                await redis.aclose()
                if len(self.spares) < self._settings.shard_spares and (
                        self._refill is None or self._refill.done()):
                    self._refill = asyncio.create_task(self._refill_spares(),
                                                       name="mtdesk-shard-spares")

    async def _reshard(
        self, redis: Redis, shards: int, release_timeout_s: float, answer_timeout_s: float,
        on_step: Callable[[ownership.Ownership], Awaitable[None]] | None,
    ) -> ownership.Ownership:
        current = await ownership.read(redis) or self.ownership
        assert current is not None, "start() first"

        async def publish() -> None:
            await ownership.write(redis, current)
            self.ownership = current
            self.partitions = [current.partitions_of(i) for i in range(len(self.actors))]
            if on_step is not None:
                await on_step(current)

        if shards == len(self.actors) and current.target is None:
            return current
        log.info("re-sharding: %d → %d conversation shards", len(self.actors), shards)
        current.target, current.error = shards, ""
        if shards > len(self.actors):
            await self._grow(shards)
        await publish()
        target = ownership.plan(current.owners, shards)
        for partition, source, dest in ownership.moves(current.owners, target):
            current.moving = partition
            await publish()
            try:
                await self._ask(source, "release", answer_timeout_s, release_timeout_s + 10,
                                [partition], release_timeout_s)
            except TimeoutError:
                current.moving, current.target = None, None
                current.error = (f"shard {source} did not release partition {partition} "
                                 f"within {answer_timeout_s:.0f} s")
                await publish()
                raise
            current.epoch += 1
            await ownership.fence(redis, partition, current.epoch)
            current.owners[partition] = dest
            current.epochs[partition] = current.epoch
            await publish()
            # The map names the new owner now: a restart of it takes the partition too.
            with contextlib.suppress(TimeoutError):
                await self._ask(dest, "take", answer_timeout_s, 60.0,
                                {partition: current.epoch})
        current.moving = None
        if shards < len(self.actors):
            await self._shrink(shards)
        current.shards, current.target = shards, None
        await publish()
        log.info("re-sharding done: %d conversation shards, epoch %d", shards, current.epoch)
        return current

    async def _ask(self, index: int, method: str, within_s: float, call_timeout_s: float,
                   *args: Any) -> Any:
        """Call ``method`` on shard ``index`` until it answers (a restarting actor does
        once Ray has it back), up to ``within_s``."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                ref = getattr(self.actors[index], method).remote(*args)
                return await asyncio.wait_for(ref, call_timeout_s)
            except Exception as exc:  # noqa: BLE001 - dead or restarting: ask again
                if time.monotonic() > deadline:
                    raise TimeoutError(f"shard {index} did not answer {method}") from exc
                log.warning("shard %d did not answer %s (%s); asking again", index, method,
                            type(exc).__name__)
                await asyncio.sleep(0.5)

    async def _start_shards(self, first: int, count: int) -> list[Any]:
        """Start shards ``first`` … ``first + count - 1`` with no partition, placed like
        the others (a place group of their own), and wait until each runs."""
        s = self._settings
        names = [conversation_shard_name(i) for i in range(first, first + count)]
        await asyncio.to_thread(rayapi.wait_names_free, names, 30.0)
        group = await asyncio.to_thread(rayapi.actor_group, "conversation_shard", s, count,
                                        detached=self._detached)
        self._grown.append(group)
        added = [rayapi.create(ShardActor, name, group, k, s, first + k, [], self._factory,
                               self._shard_options, detached=self._detached)
                 for k, name in enumerate(names)]
        self._starting.extend(added)
        try:
            await asyncio.gather(*(a.ensure_started.remote() for a in added))
        finally:
            self._starting = [a for a in self._starting if a not in added]
        return added

    async def _fill_spares(self) -> None:
        """Start the spares missing (``settings.shard_spares``), after the active shards
        and the spares there are."""
        missing = self._settings.shard_spares - len(self.spares)
        if missing > 0:
            first = len(self.actors) + len(self.spares)
            self.spares.extend(await self._start_shards(first, missing))
            log.info("warm spare shards: %d (mtdesk-shard-%d onwards)", len(self.spares),
                     len(self.actors))
            if self.on_spares is not None:
                self.on_spares()

    async def _refill_spares(self) -> None:
        """After a re-sharding took spares: make them again, between re-shardings."""
        try:
            async with self._resharding:
                await self._fill_spares()
        except Exception as exc:  # noqa: BLE001 - the next re-sharding tries again
            log.warning("warm spare shards not started (%s: %s)", type(exc).__name__, exc)

    async def _grow(self, shards: int) -> None:
        first = len(self.actors)
        added, self.spares = self.spares[:shards - first], self.spares[shards - first:]
        if added:
            log.info("re-sharding took %d warm spare shard(s)", len(added))
        # The spares are the next indexes: what they do not cover comes after them.
        if len(added) < shards - first:
            added += await self._start_shards(first + len(added), shards - first - len(added))
        self.actors.extend(added)
        self._healthy.extend([True] * len(added))
        self.partitions.extend([] for _ in added)

    async def _shrink(self, shards: int) -> None:
        emptied = self.actors[shards:]
        self.actors = self.actors[:shards]
        self._healthy = self._healthy[:shards]
        self.partitions = self.partitions[:shards]
        # The shards just emptied become the spares (their indexes follow the active
        # ones'); the spares beyond those, and the emptied past the count, stop.
        pool = [*emptied, *self.spares]
        keep = self._settings.shard_spares
        self.spares, leaving = pool[:keep], pool[keep:]

        async def one(actor: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.stop.remote(5.0), 15.0)
            with contextlib.suppress(Exception):
                rayapi.kill(actor)

        await asyncio.gather(*(one(a) for a in leaving))


async def _warm(services: ShardServices) -> None:
    """What a shard would otherwise load on its first message, loaded now: the language
    model (~0.15 s of a core here, more on a busy machine) and the providers' SDK
    clients. A spare or a shard added by a re-sharding pays it before it holds a
    partition, not a customer waiting on it."""
    warm = getattr(services.chat_model, "warm", None)
    if callable(warm):
        warm()
    await asyncio.to_thread(detect_language, "warming the language model up")


async def _ping_quietly(actor: Any, timeout_s: float = 5.0) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(actor.ping.remote(), timeout_s)


def _run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on a loop of its own (callers may be inside a loop)."""
    box: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            box.append(asyncio.run(coro))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=body, name="mtdesk-ownership")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


async def _publish_initial(settings: Settings, count: int) -> ownership.Ownership:
    """The ownership map a deployment starts with: the last one's owners re-balanced over
    ``count`` shards (round-robin for the first), each partition fenced at a new epoch;
    the operator's wanted count becomes ``count`` (the environment wins at start)."""
    redis = connect_to(settings.redis_url, cluster=settings.redis_cluster, max_connections=4)
    try:
        last = await ownership.read(redis)
        if last is not None and len(last.owners) == settings.partitions:
            owners = ownership.plan(last.owners, count)
            epoch = last.epoch + 1
        else:
            owners = ownership.round_robin(settings.partitions, count)
            epoch = (last.epoch + 1) if last is not None else 1
        current = ownership.Ownership(epoch=epoch, owners=owners,
                                      epochs=[epoch] * settings.partitions, shards=count)
        pipe = redis.pipeline(transaction=False)
        for p in range(settings.partitions):
            pipe.set(keys.partition_owner(p), str(epoch))
        await pipe.execute()
        await ownership.write(redis, current)
        await ownership.request(redis, count)
        return current
    finally:
        await redis.aclose()
