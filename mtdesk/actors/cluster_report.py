"""The director's view of the cluster: which node runs which actor, and each conversation
shard's queue figures, published to Redis for ``/admin/api/v1/cluster``, ``/metrics`` and
``mtdesk status`` (the shape is :mod:`mtdesk.core.cluster`'s).

:class:`ClusterReporter` is given the actors the director started (name, kind, handle);
:meth:`ClusterReporter.collect` asks each where it runs (an actor that does not answer
within the timeout is listed as unplaced: it is being restarted), reads the node table and
the partitions' consumer-group state (one pipelined round trip, plus one for partitions
with unread entries), and :meth:`ClusterReporter.run` publishes that every
``interval_s`` until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mtdesk.actors import rayapi
from mtdesk.core import cluster, keys, ownership
from mtdesk.core.cluster import ActorInfo, ActorKind, ClusterReport, NodeInfo
from mtdesk.core.redis import Redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watched:
    kind: ActorKind
    name: str
    handle: Any
    partitions: tuple[int, ...] | None = None


def _id_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


async def queue_figures(redis: Redis, partitions: Sequence[int],
                        now_ms: int) -> dict[int, tuple[int, int]]:
    """Per partition: (entries not finished, age in ms of the oldest of them)."""
    if not partitions:
        return {}
    pipe = redis.pipeline(transaction=False)
    for p in partitions:
        pipe.xinfo_groups(keys.inbound(p))
        pipe.xpending(keys.inbound(p), keys.SHARD_GROUP)
    replies = await pipe.execute(raise_on_error=False)
    out: dict[int, tuple[int, int]] = {}
    unread: dict[int, str] = {}
    for i, p in enumerate(partitions):
        groups, summary = replies[2 * i], replies[2 * i + 1]
        pending, oldest = 0, None
        if not isinstance(summary, Exception) and summary:
            pending = int(summary.get("pending") or 0)
            if pending and summary.get("min"):
                oldest = _id_ms(summary["min"])
        lag = 0
        if not isinstance(groups, Exception):
            for g in groups:
                name = g.get("name", b"")
                if (name.decode() if isinstance(name, bytes) else name) == keys.SHARD_GROUP:
                    lag = int(g.get("lag") or 0)
                    last = g.get("last-delivered-id", b"0-0")
                    if lag:
                        unread[p] = last.decode() if isinstance(last, bytes) else str(last)
        out[p] = (pending + lag, max(0, now_ms - oldest) if oldest is not None else 0)
    if unread:
        pipe = redis.pipeline(transaction=False)
        for p, last in unread.items():
            pipe.xrange(keys.inbound(p), min=f"({last}", max="+", count=1)
        for (p, _), entries in zip(unread.items(), await pipe.execute(raise_on_error=False),
                                   strict=True):
            if isinstance(entries, Exception) or not entries:
                continue
            count, age = out[p]
            out[p] = (count, max(age, now_ms - _id_ms(entries[0][0])))
    return out


class ClusterReporter:
    def __init__(self, redis: Redis, placement: str, *, interval_s: float = 5.0,
                 ping_timeout_s: float = 5.0) -> None:
        self._redis = redis
        self._placement = placement
        self._interval_s = interval_s
        self._ping_timeout_s = ping_timeout_s
        self.watched: list[Watched] = []

    def unwatch(self, kind: ActorKind) -> None:
        self.watched = [w for w in self.watched if w.kind != kind]

    def watch(self, kind: ActorKind, name: str, handle: Any,
              partitions: Sequence[int] | None = None) -> None:
        self.watched.append(Watched(kind, name, handle,
                                    tuple(partitions) if partitions is not None else None))

    async def _where(self, w: Watched) -> str:
        try:
            return str(await asyncio.wait_for(rayapi.node_of(w.handle), self._ping_timeout_s))
        except Exception:  # noqa: BLE001 - dead, restarting or its node gone: unplaced
            return cluster.UNPLACED

    async def collect(self) -> ClusterReport:
        watched = list(self.watched)  # re-sharding may re-list the shards meanwhile
        where = await asyncio.gather(*(self._where(w) for w in watched))
        table = await asyncio.to_thread(rayapi.nodes)
        now_ms = int(time.time() * 1000)
        partitions = sorted({p for w in watched for p in (w.partitions or ())})
        figures = await queue_figures(self._redis, partitions, now_ms)
        nodes = {n["node_id"]: NodeInfo(node_id=n["node_id"], alive=n["alive"],
                                        address=n["address"]) for n in table}
        for w, node_id in zip(watched, where, strict=True):
            info = ActorInfo(kind=w.kind, name=w.name)
            if w.partitions is not None:
                info.partitions = list(w.partitions)
                mine = [figures[p] for p in w.partitions if p in figures]
                info.pending = sum(c for c, _ in mine)
                info.lag_ms = max((a for _, a in mine), default=0)
            node = nodes.get(node_id)
            if node is None:
                node = nodes[node_id] = NodeInfo(node_id=node_id, alive=False, address="")
            node.actors.append(info)
        ordered = sorted(nodes.values(), key=lambda n: (n.node_id == cluster.UNPLACED,
                                                        not n.alive, n.address, n.node_id))
        return ClusterReport(time=now_ms / 1000, placement=self._placement, nodes=ordered,
                             ownership=cluster.ownership_summary(
                                 await ownership.read(self._redis)))

    async def publish_once(self) -> ClusterReport:
        report = await self.collect()
        await cluster.publish(self._redis, report, ttl_s=max(30, int(self._interval_s * 6)))
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Publish every ``interval_s`` until ``stop``; a failed round is logged and retried."""
        while not stop.is_set():
            try:
                await self.publish_once()
            except Exception as exc:  # noqa: BLE001 - Redis or Ray briefly away: next round
                log.warning("cluster report not published (%s)", type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
