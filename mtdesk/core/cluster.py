"""Where the actors run: the cluster report, its place in Redis and its metrics.

The director (the process that started the actors, see
:mod:`mtdesk.actors.cluster_report`) writes a :class:`ClusterReport` to
``keys.cluster_report()`` every few seconds with a short TTL, so every process that
serves HTTP (any gateway worker, none of which joins Ray) answers
``GET /admin/api/v1/cluster`` and exports the same figures in ``/metrics``; ``mtdesk
status`` prints it. No report (the key expired) means no director is running.

The JSON shape (public contract)::

    {"time": <unix s>, "placement": "spread"|"pack",
     "nodes": [{"node_id", "alive", "address",
                "actors": [{"kind", "name", "partitions"?, "pending"?, "lag_ms"?}]}],
     "ownership": {"epoch", "shards", "partitions": {"<shard name>": [p, …]},
                   "target"?, "moving"?, "error"?} | null}

``kind`` is ``conversation_shard``, ``retrieval_shard``, ``deletion`` or ``retention``.
``pending``: the shard's entries not yet finished (read but unacknowledged, plus not yet
read); ``lag_ms``: age of the oldest of them (0 when none). An actor that did not answer
its ping is listed under ``node_id`` ``""`` (``alive`` false): it is being restarted.
``ownership`` is the partition ownership map (:mod:`mtdesk.core.ownership`) as the report
was made: its epoch, the shard count, the partitions of each conversation shard, and while
a re-sharding runs its ``target`` count and the partition ``moving`` now; ``error``: why
the last re-sharding stopped.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from mtdesk.core import keys
from mtdesk.core.ownership import Ownership, shard_name
from mtdesk.core.redis import Redis, as_opt_bytes

ActorKind = Literal["conversation_shard", "retrieval_shard", "deletion", "retention"]
UNPLACED = ""  # node_id of actors that did not answer (restarting, or their node is gone)


class ActorInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: ActorKind
    name: str
    partitions: list[int] | None = None
    pending: int | None = None
    lag_ms: int | None = None


class NodeInfo(msgspec.Struct, kw_only=True):
    node_id: str
    alive: bool
    address: str
    actors: list[ActorInfo] = msgspec.field(default_factory=list)


class OwnershipInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    epoch: int
    shards: int
    partitions: dict[str, list[int]]
    target: int | None = None
    moving: int | None = None
    error: str = ""


class ClusterReport(msgspec.Struct, kw_only=True):
    time: float
    placement: str
    nodes: list[NodeInfo]
    ownership: OwnershipInfo | None = None

    def actors(self) -> list[tuple[NodeInfo, ActorInfo]]:
        return [(node, actor) for node in self.nodes for actor in node.actors]


def ownership_summary(current: Ownership | None) -> OwnershipInfo | None:
    """The report's ``ownership`` from the map (None: no map)."""
    if current is None:
        return None
    return OwnershipInfo(
        epoch=current.epoch, shards=current.shards, target=current.target,
        moving=current.moving, error=current.error,
        partitions={shard_name(i): ps
                    for i, ps in sorted(current.per_shard().items())})


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ClusterReport)


async def publish(redis: Redis, report: ClusterReport, ttl_s: int = 30) -> None:
    await redis.set(keys.cluster_report(), _encoder.encode(report), ex=ttl_s)


async def read(redis: Redis) -> ClusterReport | None:
    """The last report, or None when no director published one within its TTL (or it was
    written by an incompatible version)."""
    raw = as_opt_bytes(await redis.get(keys.cluster_report()))
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def to_json(report: ClusterReport) -> bytes:
    return _encoder.encode(report)


def render_metrics(report: ClusterReport | None, now: float | None = None) -> bytes:
    """Prometheus text: ``mtdesk_cluster_nodes{alive}``,
    ``mtdesk_cluster_actor_up{kind,name,node_id}``, per conversation shard
    ``mtdesk_cluster_shard_pending{name}`` / ``mtdesk_cluster_shard_lag_ms{name}`` /
    ``mtdesk_cluster_shard_partitions{name}``, ``mtdesk_cluster_ownership_epoch``,
    ``mtdesk_cluster_resharding``, and ``mtdesk_cluster_report_age_seconds``."""
    registry = CollectorRegistry(auto_describe=False)
    if report is None:
        return b""
    nodes = Gauge("mtdesk_cluster_nodes", "Ray nodes by liveness", ["alive"], registry=registry)
    up = Gauge("mtdesk_cluster_actor_up", "1 when the actor answered its last ping",
               ["kind", "name", "node_id"], registry=registry)
    pending = Gauge("mtdesk_cluster_shard_pending", "entries of the shard's partitions not yet "
                    "finished", ["name"], registry=registry)
    lag = Gauge("mtdesk_cluster_shard_lag_ms", "age of the shard's oldest unfinished entry",
                ["name"], registry=registry)
    parts = Gauge("mtdesk_cluster_shard_partitions", "partitions the shard owns", ["name"],
                  registry=registry)
    age = Gauge("mtdesk_cluster_report_age_seconds", "age of the cluster report",
                registry=registry)
    alive = sum(1 for n in report.nodes if n.alive and n.node_id != UNPLACED)
    dead = sum(1 for n in report.nodes if not n.alive and n.node_id != UNPLACED)
    nodes.labels(alive="true").set(alive)
    nodes.labels(alive="false").set(dead)
    for node, actor in report.actors():
        up.labels(kind=actor.kind, name=actor.name, node_id=node.node_id).set(
            1 if node.node_id != UNPLACED else 0)
        if actor.pending is not None:
            pending.labels(name=actor.name).set(actor.pending)
        if actor.lag_ms is not None:
            lag.labels(name=actor.name).set(actor.lag_ms)
        if actor.partitions is not None:
            parts.labels(name=actor.name).set(len(actor.partitions))
    if report.ownership is not None:
        Gauge("mtdesk_cluster_ownership_epoch", "epoch of the partition ownership map",
              registry=registry).set(report.ownership.epoch)
        Gauge("mtdesk_cluster_resharding", "1 while partitions are being handed over",
              registry=registry).set(0 if report.ownership.target is None else 1)
    age.set(max(0.0, (time.time() if now is None else now) - report.time))
    return generate_latest(registry)
