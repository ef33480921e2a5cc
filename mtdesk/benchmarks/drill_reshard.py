"""``mtdesk drill reshard``: conversation shards 2 → 3 → 1 while the load runs.

The drill is ``bench e2e`` (the real gateway, shards and Redis; the fake LLM and Graph API
as real servers; every reply matched to its message). A few seconds into the load the
operator API is asked for 3 conversation shards (``POST /admin/api/v1/cluster/shards``,
as ``mtdesk shards set 3`` does); once the director reports the handover done, for 1.
Partitions are handed over one at a time while messages keep arriving. The figures:
messages in, answered once, lost, duplicated; each handover's duration, partitions moved
and epochs; the reply overhead's p99 over the seconds the handovers ran (the highest
per-second p99 among them) beside the same figure for the seconds before the first
handover (the baseline, same run) and the whole run's.

``--short`` (what the tests run): 12 partitions, 20 msgs/s for 30 s from 60 customers.
The full form: 64 partitions, 300 msgs/s for 75 s from 3,000 customers. ``--spares N``
(default 1): the deployment's warm spare shards (``MTDESK_SHARD_SPARES``), so the
2 → 3 step takes a running shard; ``--spares 0`` starts its process under the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from mtdesk.benchmarks.drill import ADMIN_TOKEN, Drill, Rig
from mtdesk.benchmarks.e2e_run import BenchConfig

NAME = "reshard"
STEPS = (3, 1)


class Reshard(Drill):
    name = NAME
    help = "conversation shards 2 -> 3 -> 1 under load: every message answered once"

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=30, rate=20, users=60, llm_latency_ms=50, shards=2,
                               duplicate_fraction=0.1, drain_timeout_s=120, connections=8,
                               warmup_messages=10)
        return BenchConfig(seconds=75, rate=300, users=3000, shards=2, drain_timeout_s=180)

    @property
    def partitions(self) -> int:
        return 12 if self.short else 64

    @property
    def first_after_s(self) -> float:
        return 3.0 if self.short else 10.0

    spares = 1

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--spares", type=int, default=1, choices=range(0, 9), metavar="N",
                            help="warm spare shards (MTDESK_SHARD_SPARES, 0-8; default 1)")

    def apply(self, args: argparse.Namespace) -> None:
        self.spares = args.spares

    def tune(self, env: dict[str, str], stack: contextlib.ExitStack) -> None:
        env["MTDESK_PARTITIONS"] = str(self.partitions)
        env["MTDESK_SHARD_SPARES"] = str(self.spares)

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        await asyncio.sleep(self.first_after_s)
        steps: list[dict[str, Any]] = []
        out["handovers"] = steps
        for count in STEPS:
            before = await rig.admin("GET", "/cluster/shards", ADMIN_TOKEN)
            started = time.time()
            rig.log(f"asking for {count} conversation shard(s)…")
            await rig.admin("POST", "/cluster/shards", ADMIN_TOKEN, {"conversation": count})
            after = await self._wait_done(rig, count, started)
            ended = time.time()
            own_before, own_after = before["ownership"] or {}, (after or {}).get("ownership") or {}
            moved = _moved(own_before.get("partitions", {}), own_after.get("partitions", {}))
            steps.append({
                "to": count, "done": after is not None,
                "started_s": round(started - rig.load_started, 2),
                "ended_s": round(ended - rig.load_started, 2),
                "duration_s": round(ended - started, 2), "partitions_moved": moved,
                "epoch_before": own_before.get("epoch"), "epoch_after": own_after.get("epoch"),
                "error": own_after.get("error", ""),
            })
            rig.log(f"{count} shard(s) after {ended - started:.1f} s, {moved} partitions moved")
            if after is None:
                return
            await asyncio.sleep(2.0)  # the load runs on the new count a while
        out["shards_after"] = STEPS[-1]

    async def _wait_done(self, rig: Rig, count: int, since: float,
                         timeout_s: float = 300.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await rig.admin("GET", "/cluster/shards", ADMIN_TOKEN)
            own = state.get("ownership") or {}
            if own.get("shards") == count and own.get("target") is None:
                return dict(state)
            await asyncio.sleep(0.2)
        return None

    def result(self, report: dict[str, Any]) -> dict[str, Any]:
        out = super().result(report)
        steps = out.get("handovers") or []
        windows = [(s["started_s"], s["ended_s"]) for s in steps]
        rows = report.get("overhead_by_second", [])
        during = [row for row in rows if any(a - 1 <= row[0] <= b for a, b in windows)]
        out["handover_messages"] = sum(row[1] for row in during)
        out["handover_overhead_p99_ms"] = max((row[3] for row in during), default=None)
        # The same run before the first handover (from its second second): the baseline.
        first = windows[0][0] if windows else 0.0
        before = [row for row in rows if 1 <= row[0] < first - 1]
        out["before_overhead_p99_ms"] = max((row[3] for row in before), default=None)
        out["overhead_p99_ms"] = report.get("overhead_p99_ms")
        out["spares"] = self.spares
        return out

    def passed(self, result: dict[str, Any]) -> bool:
        steps = result.get("handovers") or []
        return (super().passed(result) and len(steps) == len(STEPS)
                and all(s["done"] for s in steps))

    def summary(self, r: dict[str, Any]) -> str:
        steps = "; ".join(f"to {s['to']} in {s['duration_s']} s ({s['partitions_moved']} "
                          "partitions moved)" for s in r.get("handovers") or [])
        return (f"{NAME}: {r['in']} messages in, {r['answered_once']} answered once, "
                f"{r['lost']} lost, {r['duplicated']} duplicated; {steps or 'no handover'} "
                f"({r.get('spares', 0)} warm spare); "
                f"overhead p99 {r.get('handover_overhead_p99_ms')} ms during the handovers, "
                f"{r.get('before_overhead_p99_ms')} ms before them "
                f"({r.get('overhead_p99_ms')} ms over the run)")


def _moved(before: dict[str, list[int]], after: dict[str, list[int]]) -> int:
    owner = {p: name for name, ps in before.items() for p in ps}
    return sum(1 for name, ps in after.items() for p in ps if owner.get(p) != name)


register_drill = Reshard.register
