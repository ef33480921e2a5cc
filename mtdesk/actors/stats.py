"""Shard metrics: prometheus-client inside the actor process, and a snapshot in Redis so
the gateway process's ``/metrics`` can export every shard's numbers.

Each shard owns a :class:`ShardMetrics` (its own ``CollectorRegistry``, every series
labelled ``shard``) and publishes :meth:`ShardMetrics.snapshot` as msgpack to
``keys.shard_stats(index)`` every few seconds with a short TTL (a dead shard's numbers
vanish). The gateway calls :func:`read_shard_stats` then :func:`render_shard_stats` and
appends the text to its own exposition, or registers a :class:`ShardStatsCollector`
whose ``refresh`` it awaits before ``generate_latest``.

Series (all with label ``shard``):

- ``mtdesk_shard_stage_seconds{stage}`` histogram: ``queue`` (gateway receive → shard
  pick-up), ``llm``, ``send``, ``end_to_end`` (gateway receive → reply sent).
- ``mtdesk_shard_replies_total{outcome}``: sent, fallback, no_knowledge, failed,
  outside_window, taken_over, skipped,
  duplicate, echo, handoff, human, receipt, status, recorded.
- ``mtdesk_shard_graph_errors_total{code}``: Graph errors that ended a reply.
- ``mtdesk_shard_active_conversations``, ``mtdesk_shard_inflight_events``.
- the actor process's own ``mtdesk_*`` series (the Graph sender's errors by code and
  latency, the LLM calls), with a ``shard`` label added.
- ``mtdesk_queue_lag_entries{partition}`` / ``mtdesk_queue_pending_entries{partition}``
  from ``XINFO GROUPS`` (entries not yet read / read but not acknowledged).
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterable, Iterator
from typing import Self, cast

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from mtdesk.core import keys
from mtdesk.core.redis import Redis, read_many, scan_pages


class PerRegistry:
    """Base of a set of collectors made once per registry (prometheus-client refuses a
    second registration of a name): ``Sub.for_registry(registry)`` returns the set."""

    _instances: dict[tuple[type, int], PerRegistry] = {}

    def __init__(self, registry: CollectorRegistry) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def for_registry(cls, registry: CollectorRegistry = REGISTRY) -> Self:
        key = (cls, id(registry))
        metrics = PerRegistry._instances.get(key)
        if metrics is None:
            metrics = PerRegistry._instances[key] = cls(registry)
        return cast(Self, metrics)

STAGES = ("queue", "llm", "send", "end_to_end")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Sample(msgspec.Struct, array_like=True):
    name: str
    labels: dict[str, str]
    value: float


class Family(msgspec.Struct, array_like=True):
    name: str
    type: str
    help: str
    samples: list[Sample]


class ShardStats(msgspec.Struct, kw_only=True):
    shard: int
    time: float
    partitions: list[int]
    active_conversations: int
    families: list[Family]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ShardStats)


class ShardMetrics:
    """The counters a shard updates; cheap to call on the hot path."""

    def __init__(self, shard: int) -> None:
        self.shard = str(shard)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._stage = Histogram("mtdesk_shard_stage_seconds", "Latency per stage of a message",
                                ["shard", "stage"], buckets=_BUCKETS, registry=r)
        self._replies = Counter("mtdesk_shard_replies", "Inbound events by outcome",
                                ["shard", "outcome"], registry=r)
        self._graph = Counter("mtdesk_shard_graph_errors", "Graph errors that ended a reply",
                              ["shard", "code"], registry=r)
        self._active = Gauge("mtdesk_shard_active_conversations", "Conversations in memory",
                             ["shard"], registry=r)
        self._inflight = Gauge("mtdesk_shard_inflight_events", "Events read, not yet acked",
                               ["shard"], registry=r)
        self._lag = Gauge("mtdesk_queue_lag_entries", "Entries not yet read by the shards",
                          ["shard", "partition"], registry=r)
        self._pending = Gauge("mtdesk_queue_pending_entries", "Entries read, not acknowledged",
                              ["shard", "partition"], registry=r)
        self.active = 0

    def observe(self, stage: str, seconds: float) -> None:
        self._stage.labels(self.shard, stage).observe(max(0.0, seconds))

    def outcome(self, outcome: str, n: int = 1) -> None:
        self._replies.labels(self.shard, outcome).inc(n)

    def graph_error(self, code: int) -> None:
        self._graph.labels(self.shard, str(code)).inc()

    def set_active(self, active: int, inflight: int) -> None:
        self.active = active
        self._active.labels(self.shard).set(active)
        self._inflight.labels(self.shard).set(inflight)

    def set_queue(self, partition: int, lag: int | None, pending: int) -> None:
        if lag is not None:
            self._lag.labels(self.shard, str(partition)).set(lag)
        self._pending.labels(self.shard, str(partition)).set(pending)

    def count(self, outcome: str) -> float:
        """Current value of one outcome counter (tests, the bench)."""
        value = self.registry.get_sample_value(
            "mtdesk_shard_replies_total", {"shard": self.shard, "outcome": outcome})
        return value or 0.0

    def snapshot(
        self, *, time: float, partitions: list[int],
        process_registries: Iterable[CollectorRegistry] = (),
    ) -> ShardStats:
        """This shard's series, plus the ``mtdesk_*`` series of ``process_registries``
        (the actor process's sender/LLM metrics, e.g. Graph errors by code) labelled
        with this shard."""
        families = [
            Family(m.name, m.type, m.documentation,
                   [Sample(s.name, dict(s.labels), float(s.value)) for s in m.samples])
            for m in self.registry.collect()
        ]
        for registry in process_registries:
            for m in registry.collect():
                if not m.name.startswith("mtdesk_") or m.name.startswith("mtdesk_shard_"):
                    continue
                families.append(Family(m.name, m.type, m.documentation, [
                    Sample(s.name, {**s.labels, "shard": self.shard}, float(s.value))
                    for s in m.samples]))
        return ShardStats(shard=int(self.shard), time=time, partitions=partitions,
                          active_conversations=self.active, families=families)


async def publish_shard_stats(
    redis: Redis, metrics: ShardMetrics, partitions: list[int], *,
    process_registries: Iterable[CollectorRegistry] = (), ttl_s: int = 30,
) -> ShardStats:
    """Refresh queue lag/pending of ``partitions`` (XINFO GROUPS) and publish a snapshot
    to ``keys.shard_stats(shard)`` with ``ttl_s``."""
    pipe = redis.pipeline(transaction=False)
    for p in partitions:
        pipe.xinfo_groups(keys.inbound(p))
    for p, groups in zip(partitions, await pipe.execute(raise_on_error=False), strict=True):
        if isinstance(groups, Exception):
            continue
        for group in groups:
            name = group.get("name", b"")
            if (name.decode() if isinstance(name, bytes) else name) == keys.SHARD_GROUP:
                lag = group.get("lag")
                metrics.set_queue(p, int(lag) if lag is not None else None,
                                  int(group.get("pending", 0)))
    stats = metrics.snapshot(time=_time.time(), partitions=partitions,
                             process_registries=process_registries)
    await redis.set(keys.shard_stats(stats.shard), _encoder.encode(stats), ex=ttl_s)
    return stats


async def read_shard_stats(redis: Redis, shards: int | None = None) -> list[ShardStats]:
    """Every live shard's last snapshot, ordered by shard index. ``shards``: read exactly
    shards 0..shards-1 with one MGET (what /metrics and /readyz do: a SCAN would walk the
    whole keyspace on every scrape); None finds them all with SCAN (tools, tests)."""
    found: list[bytes | str] = []
    if shards is not None:
        found = [keys.shard_stats(i) for i in range(shards)]
    else:
        async for page in scan_pages(redis, match=keys.shard_stats_pattern(), count=200):
            found.extend(page)
    if not found:
        return []
    raw = await read_many(redis, found)
    out = []
    for data in raw:
        if data is None:
            continue
        try:
            out.append(_decoder.decode(data))
        except msgspec.DecodeError:
            continue  # a snapshot from another version: skip rather than break /metrics
    return sorted(out, key=lambda s: s.shard)


async def live_shards(redis: Redis, *, max_age_s: float = 20.0,
                      now: float | None = None, shards: int | None = None) -> list[int]:
    """Indexes of the shards that published a snapshot in the last ``max_age_s`` seconds
    (for ``/readyz`` in processes that have no Ray handle: compare with
    ``settings.shards``). Shards publish on start and every few seconds."""
    current = _time.time() if now is None else now
    return [s.shard for s in await read_shard_stats(redis, shards)
            if current - s.time <= max_age_s]


def _merged(stats: Iterable[ShardStats]) -> Iterator[Metric]:
    by_name: dict[str, Metric] = {}
    for snapshot in stats:
        for fam in snapshot.families:
            metric = by_name.get(fam.name)
            if metric is None:
                metric = by_name[fam.name] = Metric(fam.name, fam.help, fam.type)
            for s in fam.samples:
                metric.add_sample(s.name, s.labels, s.value)
    yield from by_name.values()


class ShardStatsCollector(Collector):
    """Register on the gateway's registry; ``await collector.refresh(redis)`` before
    rendering (``collect`` is synchronous and serves the last refresh)."""

    def __init__(self) -> None:
        self._stats: list[ShardStats] = []

    async def refresh(self, redis: Redis) -> list[ShardStats]:
        self._stats = await read_shard_stats(redis)
        return self._stats

    def collect(self) -> Iterator[Metric]:
        yield from _merged(self._stats)


def render_shard_stats(stats: list[ShardStats]) -> bytes:
    """Prometheus text exposition of all shards' snapshots, merged per metric family."""
    registry = CollectorRegistry(auto_describe=False)
    collector = ShardStatsCollector()
    collector._stats = list(stats)
    registry.register(collector)
    return generate_latest(registry)
