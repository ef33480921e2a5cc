"""``mtdesk status``: the Ray nodes and which actor runs where, with each conversation
shard's partitions, unfinished entries and lag (the report ``/admin/api/v1/cluster``
answers; see :mod:`mtdesk.core.cluster`)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mtdesk.cli.cmd_shards import render_retrieval
from mtdesk.cli.store_session import run_with_store
from mtdesk.core import cluster, retrieval_layout
from mtdesk.core.cluster import ClusterReport
from mtdesk.core.redis import Redis
from mtdesk.core.retrieval_layout import RetrievalLayout
from mtdesk.core.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="where the actors run: Ray nodes, shards, queue lag",
        description="The last cluster report of the running deployment (published every few "
        "seconds by the process that started the actors): each Ray node, alive or not, and "
        "the actors on it; conversation shards with their partitions, unfinished entries "
        "and the age of the oldest; the partition ownership (epoch, partitions per shard, "
        "a re-sharding under way); the retrieval shards' generation and count. Exit "
        "status 1 when no deployment reports.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_status)


def render(report: ClusterReport, now: float | None = None) -> str:
    age = max(0.0, (time.time() if now is None else now) - report.time)
    alive = sum(1 for n in report.nodes if n.alive)
    lines = [f"{alive} node(s) alive, placement {report.placement}, report {age:.0f} s old"]
    for node in report.nodes:
        if node.node_id == cluster.UNPLACED:
            head = "not answering (restarting or their node is lost)"
        else:
            head = f"node {node.node_id[:12]} {node.address} {'alive' if node.alive else 'DEAD'}"
        lines.append(head)
        for a in node.actors:
            extra = ""
            if a.partitions is not None:
                extra = (f"  partitions {len(a.partitions)}, pending {a.pending or 0}, "
                         f"lag {a.lag_ms or 0} ms")
            lines.append(f"  {a.kind:<18} {a.name}{extra}")
    own = report.ownership
    if own is not None:
        head = f"partition ownership: epoch {own.epoch}, {own.shards} conversation shard(s)"
        if own.target is not None:
            head += f"; re-sharding to {own.target}"
            if own.moving is not None:
                head += f", handing over partition {own.moving}"
        lines.append(head)
        if own.error:
            lines.append(f"  last re-sharding stopped: {own.error}")
        for name, parts in own.partitions.items():
            lines.append(f"  {name:<18} {' '.join(str(p) for p in parts)}")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings
                  ) -> tuple[ClusterReport | None, RetrievalLayout | None]:
        return await cluster.read(redis), await retrieval_layout.read(redis)

    report, layout = run_with_store(job)
    if report is None:
        print("mtdesk: no cluster report: no deployment is running (mtdesk serve starts the "
              "actors), or it cannot reach this Redis (MTDESK_REDIS_URL)", file=sys.stderr)
        return 1
    if args.json:
        print(cluster.to_json(report).decode())
    else:
        # The retrieval shards' generation and count (a live re-sharding under way).
        print(render(report) + ("\n" + render_retrieval(layout) if layout is not None else ""))
    return 0
