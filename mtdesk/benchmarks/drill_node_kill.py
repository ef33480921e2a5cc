"""``mtdesk drill node-kill``: kill -9 a Ray node holding conversation shards under load.

The drill is ``bench e2e`` (the real gateway, shards and Redis; the fake LLM and Graph API
as real servers; every reply matched to its message) on a simulated two-node Ray cluster
on this machine (:func:`mtdesk.actors.rayapi.local_cluster`), with the shards spread over
both nodes (``MTDESK_RAY_PLACEMENT=spread``, the default). A few seconds into the load
every process of the worker node holding the most conversation shards is killed at once.
Ray restarts those shards on the surviving node; each resumes its partitions' pending
entries. The figures: messages in, answered once, lost, duplicated, and the recovery time
(kill → every shard answering on a live node).

``--short`` (what the tests run): 2 shards, 20 msgs/s for 8 s, the node killed after 2 s,
a node declared dead after 3 s of silence. The full form: 300 msgs/s for 30 s from 3,000
customers, killed after 10 s, Ray's own failure detection.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_run import BenchConfig

NAME = "node-kill"


def _shard_nodes(shards: int, timeout_s: float = 5.0) -> dict[str, str]:
    """Shard name → the node it runs on; shards not answering within ``timeout_s`` are
    left out (restarting, or their node is gone)."""
    from mtdesk.actors import rayapi
    from mtdesk.actors.deploy import conversation_shard_name

    out: dict[str, str] = {}
    for i in range(shards):
        handle = rayapi.find(conversation_shard_name(i))
        if handle is None:
            continue
        try:
            info = rayapi.get(handle.ping.remote(), timeout_s)
        except Exception:  # noqa: BLE001 - not answering (yet): left out
            continue
        out[conversation_shard_name(i)] = str(info["node_id"])
    return out


class NodeKill(Drill):
    name = NAME
    help = "kill -9 a Ray node holding conversation shards, under load"

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=8, rate=20, users=40, llm_latency_ms=50, shards=2,
                               duplicate_fraction=0.1, drain_timeout_s=120, connections=8,
                               warmup_messages=10, nodes=2, kill_node_after_s=2.0,
                               node_failure_s=3.0, meta_webhooks=True)
        return BenchConfig(seconds=30, rate=300, users=3000, shards=2, drain_timeout_s=180,
                           nodes=2, kill_node_after_s=10.0, meta_webhooks=True)

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        """After ``kill_node_after_s`` kill the worker node with the most conversation
        shards, then time until every shard answers again on a live node."""
        cfg, cluster, log = rig.cfg, rig.cluster, rig.log
        assert cfg.kill_node_after_s is not None and cluster is not None
        out["placement_before"] = before = await asyncio.to_thread(_shard_nodes, cfg.shards)
        await asyncio.sleep(cfg.kill_node_after_s)
        workers = set(cluster.worker_node_ids())
        counts = {n: sum(1 for v in before.values() if v == n) for n in workers}
        victim = max(sorted(counts), key=lambda n: counts[n])
        out["killed_node"] = victim
        out["killed_node_shards"] = sorted(k for k, v in before.items() if v == victim)
        log(f"killing node {victim[:12]} "
            f"(shards {', '.join(out['killed_node_shards']) or 'none'})…")
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill_node, victim)
        while True:
            after = await asyncio.to_thread(_shard_nodes, cfg.shards, 2.0)
            if len(after) == cfg.shards and victim not in after.values():
                break
            if time.monotonic() - killed_at > 300:
                break
            await asyncio.sleep(0.25)
        out["placement_after"] = after
        out["recovery_s"] = round(time.monotonic() - killed_at, 2)
        log(f"every shard answers again after {out['recovery_s']} s")

    def summary(self, r: dict[str, Any]) -> str:
        shards = ", ".join(r.get("killed_node_shards", [])) or "no shard"
        return (f"{NAME}: {r['in']} messages in, {r['answered_once']} answered once, "
                f"{r['lost']} lost, {r['duplicated']} duplicated; the killed node held "
                f"{shards}; every shard answering on a live node {r['recovery_s']} s "
                "after the kill")


register_drill = NodeKill.register
