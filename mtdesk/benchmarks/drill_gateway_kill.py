"""``mtdesk drill gateway-kill``: kill -9 one ``mtdesk serve --workers 2`` worker under load.

The gateway runs as ``mtdesk serve --no-actors --workers 2`` (two processes on one port).
Some seconds into the load one worker is killed with SIGKILL. A dead worker stops the
whole serve (docs/gateway.md: its supervisor restarts it at full strength); the drill
plays that supervisor and starts it again. The load generator plays Meta: a delivery
the gateway did not acknowledge (a dropped connection, a refused one, a 503) is retried
with back-off until it is. What the killed worker acknowledged was already in Redis:
none of it may be lost, none answered twice. Recovery time: kill → the gateway
acknowledging webhooks again.

``--short``: 20 msgs/s for 8 s from 40 customers, the kill after 2 s. The full form: 300
msgs/s for 30 s from 3,000 customers, the kill after 10 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_run import BenchConfig

NAME = "gateway-kill"


def serve_workers(serve_pid: int) -> list[int]:
    """The gateway worker processes of a ``serve --workers N`` (its children that run the
    multiprocessing entry point, not its resource tracker)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid != serve_pid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if b"resource_tracker" not in cmdline:
            out.append(int(name))
    return sorted(out)


class GatewayKill(Drill):
    name = NAME
    help = "kill -9 one `serve --workers 2` worker under load"

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=8, rate=20, users=40, llm_latency_ms=50, shards=1,
                               duplicate_fraction=0.1, drain_timeout_s=120, connections=8,
                               warmup_messages=10, gateway_workers=2, retry_rejected=True,
                               kill_node_after_s=2.0)
        return BenchConfig(seconds=30, rate=300, users=3000, shards=2, drain_timeout_s=180,
                           gateway_workers=2, retry_rejected=True, kill_node_after_s=10.0)

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.cfg.kill_node_after_s is not None
        await asyncio.sleep(rig.cfg.kill_node_after_s)
        serve = rig.gateway
        workers = serve_workers(serve.pid)
        out["workers_before"] = len(workers)
        if not workers:
            raise RuntimeError("no gateway worker found to kill")
        victim = workers[0]
        rig.log(f"killing gateway worker {victim} (of {len(workers)})…")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        out["killed_worker"] = victim
        code = await asyncio.to_thread(serve.wait, 60)
        out["serve_exit_code"] = code
        out["serve_exit_s"] = round(time.monotonic() - killed_at, 2)
        rig.log(f"serve exited ({code}) {out['serve_exit_s']} s after the kill; restarting it")
        rig.start_gateway()
        accepting = await rig.wait_accepting()
        out["recovery_s"] = round(time.monotonic() - killed_at, 2) if accepting is not None \
            else None
        out["workers_after"] = len(serve_workers(rig.gateway.pid))
        rig.log(f"the gateway acknowledges webhooks again {out['recovery_s']} s after the kill")

    def summary(self, r: dict[str, Any]) -> str:
        e2e = r["e2e"]
        return (super().summary(r) + f" (kill → acknowledging again); "
                f"{e2e.get('retries', 0)} deliveries retried as Meta would, "
                f"{r['not_acknowledged']} never acknowledged")


register_drill = GatewayKill.register
