"""``mtdesk drill master-kill``: a Redis Cluster master killed (-9) under load, the
gateway acknowledging with ``MTDESK_ACK_DURABILITY=replica``.

The drill runs on a Redis Cluster of its own (3 masters with a replica each, on free
ports, no persistence: ``replica`` is what makes an acknowledgement durable). Every
webhook batch is answered 200 only once a replica has it (``WAIT 1`` per batch and
master written to). Some seconds into the load one master (not the node the product was
given as ``MTDESK_REDIS_URL``) is killed with SIGKILL. Until its replica is elected (the
cluster's node timeout, then the election) the requests with events on its slots are
answered 503 and retried as Meta retries them (the load generator does as Meta does);
the shards' reads and writes on those slots fail and are retried. Once the cluster has
failed the node over, the drill starts the dead node again, as an operator's supervisor
would (it rejoins as the new master's replica: without a replica there, ``replica``
refuses every batch on those slots), never sooner (an empty master back before its
replica took over would win, and the replica would resync from it: docs/redis.md).

Figures: messages in, answered once, lost (acknowledged and never answered),
duplicated; the gateway's answers over the run; the failover time (kill → the replica
promoted and the cluster ``ok``), the dead node back as a replica, and the first reply
and the last one after the failover.

``--short`` (what the tests run): 20 msgs/s for 10 s from 40 customers, the kill after
3 s, a node timeout of 2 s. The full form: 300 msgs/s for 30 s from 3,000 customers, the
kill after 10 s, a node timeout of 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig, answered_after
from mtdesk.benchmarks.e2e_run import BenchConfig

NAME = "master-kill"


def _replication(port: int) -> dict[str, Any]:
    """The node's INFO replication ({} when it does not answer)."""
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        return dict(client.info("replication"))
    except Exception:  # noqa: BLE001 - not answering (yet)
        return {}
    finally:
        client.close()


def _failed_over(survivor: int, dead: int) -> bool:
    """Whether the node on ``survivor`` sees the node on ``dead`` as failed (not merely
    suspected) and the cluster as ``ok`` again (every slot served)."""
    import redis

    from mtdesk.cli.localredis import cluster_ok

    client = redis.Redis(port=survivor, socket_connect_timeout=1)
    try:
        table = client.execute_command("CLUSTER NODES")  # {"host:port@bus": {"flags": …}}
    except Exception:  # noqa: BLE001 - a survivor busy or restarting: not yet
        return False
    finally:
        client.close()
    flags = next((str(v.get("flags", "")) for k, v in table.items()
                  if str(k).split("@")[0].endswith(f":{dead}")), "")
    return "fail" in flags and "fail?" not in flags and cluster_ok(survivor)


def _replica_linked(port: int) -> bool:
    """Whether the node on ``port`` is a replica whose link to its master is up."""
    info = _replication(port)
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


class MasterKill(Drill):
    name = NAME
    help = "kill -9 a Redis Cluster master under load, acknowledging with replica durability"

    def __init__(self, short: bool, rate: float | None = None) -> None:
        super().__init__(short, rate)
        self.workdir = ""
        self.ports: list[int] = []
        self.pids: dict[int, int] = {}  # port → pid of the cluster's nodes

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=10, rate=20, users=40, llm_latency_ms=50, shards=1,
                               duplicate_fraction=0.1, drain_timeout_s=240, connections=8,
                               warmup_messages=10, retry_rejected=True, kill_node_after_s=3.0,
                               cluster=True, meta_webhooks=True)
        return BenchConfig(seconds=30, rate=300, users=3000, shards=2, drain_timeout_s=300,
                           retry_rejected=True, kill_node_after_s=10.0, cluster=True,
                           meta_webhooks=True)

    @property
    def node_timeout_ms(self) -> int:
        return 2000 if self.short else 5000

    @contextlib.contextmanager
    def _own_cluster(self, workdir: str) -> Iterator[str]:
        from mtdesk.cli.localredis import local_cluster

        pids: list[int] = []
        self.workdir = os.path.join(workdir, "cluster")
        os.makedirs(self.workdir, exist_ok=True)
        with local_cluster(self.workdir, who=f"mtdesk drill {NAME}", pid_out=pids,
                           node_timeout_ms=self.node_timeout_ms) as (url, ports):
            self.ports = list(ports)
            self.pids = dict(zip(ports, pids, strict=True))
            # `mtdesk serve` refuses ``replica`` unless every master has a replica linked.
            deadline = time.monotonic() + 30
            while sum(_replica_linked(p) for p in ports) < len(ports) // 2:
                if time.monotonic() > deadline:
                    raise SystemExit(f"mtdesk drill {NAME}: the cluster's replicas did not "
                                     "link to their masters within 30 s")
                time.sleep(0.1)
            yield url

    def redis(self, workdir: str) -> contextlib.AbstractContextManager[str]:
        return self._own_cluster(workdir)

    def tune(self, env: dict[str, str], stack: contextlib.ExitStack) -> None:
        env["MTDESK_ACK_DURABILITY"] = "replica"

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        from mtdesk.cli.localredis import start_cluster_node, stop_pids

        assert rig.cfg.kill_node_after_s is not None
        masters = [p for p in self.ports
                   if (await asyncio.to_thread(_replication, p)).get("role") == "master"]
        victim = next(p for p in masters if p != self.ports[0])  # not the product's URL
        survivor = next(p for p in masters if p != victim)
        await asyncio.sleep(rig.cfg.kill_node_after_s)
        rig.log(f"killing the Redis Cluster master on port {victim} "
                f"(pid {self.pids[victim]})…")
        os.kill(self.pids[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        out["killed_master_port"] = victim
        while not await asyncio.to_thread(_failed_over, survivor, victim):
            if time.monotonic() - killed_at > 120:
                rig.log("no failover within 120 s")
                out["failover_s"] = None
                return
            await asyncio.sleep(0.1)
        out["failover_s"] = round(time.monotonic() - killed_at, 2)
        out["_failed_over_wall"] = time.time()
        rig.log(f"its replica took over {out['failover_s']} s after the kill; starting the "
                "dead node again (it rejoins as a replica)…")
        pid = await asyncio.to_thread(start_cluster_node, self.workdir, victim,
                                      node_timeout_ms=self.node_timeout_ms,
                                      who=f"mtdesk drill {NAME}")
        rig.stack.callback(stop_pids, [pid])  # before the cluster's own nodes are stopped
        out["recovery_s"] = out["failover_s"]
        out["replica_again_s"] = None  # not linked within 180 s of the kill
        while time.monotonic() - killed_at < 180:
            if await asyncio.to_thread(_replica_linked, victim):
                out["replica_again_s"] = round(time.monotonic() - killed_at, 2)
                break
            await asyncio.sleep(0.1)
        rig.log(f"the dead node is a linked replica again {out['replica_again_s']} s after "
                "the kill")

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.replies is not None
        (out["first_reply_after_failover_s"],
         out["all_answered_after_failover_s"]) = answered_after(
            rig.replies, out.pop("_failed_over_wall", None))

    def passed(self, result: dict[str, Any]) -> bool:
        return bool(result["lost"] == 0 and result["duplicated"] == 0
                    and result.get("failover_s") is not None)

    def summary(self, r: dict[str, Any]) -> str:
        statuses = r["e2e"].get("statuses", {})
        return (f"{NAME}: {r['in']} messages in, {r['answered_once']} answered once, "
                f"{r['lost']} lost, {r['duplicated']} duplicated; the gateway answered "
                f"{statuses}; the replica took over {r.get('failover_s')} s after the kill, "
                f"the dead node a replica again after {r.get('replica_again_s')} s; first "
                f"reply {r.get('first_reply_after_failover_s')} s and every message "
                f"answered {r.get('all_answered_after_failover_s')} s after the failover")


register_drill = MasterKill.register
