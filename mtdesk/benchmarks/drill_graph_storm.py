"""``mtdesk drill graph-storm``: the Graph API answers errors for a while, under load.

Some seconds into the load the fake Graph API answers every message send, on every
account, with Meta's errors in turn: a bare 503 (an outage), 613 (calls exceeded the rate
limit) and 130429 (WhatsApp's throughput limit), for 30 s (``--short``: 8 s, longer than
one send's own retries). The sender backs off (exponential, with jitter) and a reply it
could not get out is left pending and tried again, resuming from the parts Meta accepted;
once the storm ends everything is delivered, nothing twice. Figures: the error answers
during the storm and the send attempts per second (the back-off: far fewer than one per
message per retry step), and the recovery time (storm over → every message sent before
its end answered).

``--short``: 20 msgs/s for 14 s from 40 customers, the storm from 2 s to 10 s. The full
form: 300 msgs/s for 45 s from 3,000 customers, the storm from 5 s to 35 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_load import TOKEN
from mtdesk.benchmarks.e2e_run import BenchConfig

NAME = "graph-storm"
ERRORS = [{"code": 0, "http_status": 503}, {"code": 613, "http_status": 400},
          {"code": 130429, "http_status": 400}]


class GraphStorm(Drill):
    name = NAME
    help = "the Graph API answers 5xx, 613 and 130429 for 30 s, under load"

    @property
    def storm(self) -> tuple[float, float]:
        """(seconds into the load it starts, how long it lasts)."""
        return (2.0, 8.0) if self.short else (5.0, 30.0)

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=14, rate=20, users=40, llm_latency_ms=50, shards=1,
                               duplicate_fraction=0.1, drain_timeout_s=180, connections=8,
                               warmup_messages=10)
        return BenchConfig(seconds=45, rate=300, users=3000, shards=2, drain_timeout_s=300)

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        after, seconds = self.storm
        await asyncio.sleep(after)
        async with rig.session.get(f"{rig.graph_root}/_fake/attempts") as resp:
            out["_attempts_before"] = len(await resp.json())
        await rig.fake(rig.graph_root, "/_fake/storm", {"seconds": seconds, "errors": ERRORS})
        out["storm_started"] = time.time()
        rig.log(f"the Graph API answers {', '.join(str(e['code'] or 503) for e in ERRORS)} "
                f"for {seconds:.0f} s…")
        await asyncio.sleep(seconds)
        out["storm_ended"] = time.time()
        rig.log("the storm is over")

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.replies is not None
        start, end = out.pop("storm_started"), out.pop("storm_ended")
        async with rig.session.get(f"{rig.graph_root}/_fake/attempts",
                                   params={"since": str(out.pop("_attempts_before"))}) as resp:
            attempts = await resp.json()
        during = [a for a in attempts if start <= a["time"] <= end + 0.5]
        failed = [a for a in during if a["status"] != 200]
        per_message: dict[str, int] = {}
        for a in failed:
            body = a.get("body") or {}
            text = (body.get("text") or {}).get("body") if body.get("messaging_product") \
                else (body.get("message") or {}).get("text")
            for m in TOKEN.finditer(text or ""):
                per_message[m.group(0)] = per_message.get(m.group(0), 0) + 1
        out["storm_s"] = round(end - start, 1)
        out["storm_error_answers"] = len(failed)
        out["storm_error_codes"] = sorted({int(a["error_code"] or 0) for a in failed})
        out["storm_attempts_per_s"] = round(len(during) / max(0.1, end - start), 1)
        out["messages_refused_during_storm"] = len(per_message)
        out["most_attempts_for_one_message"] = max(per_message.values(), default=0)
        # Sent before the storm ended (message n is due n / rate after the load began).
        due_before_end = [n for n in range(int((end - rig.load_started) * rig.cfg.rate))]
        answered = [rig.replies.first[("tk", n)] for n in due_before_end
                    if ("tk", n) in rig.replies.first]
        out["recovery_s"] = round(max(answered) - end, 2) if answered and max(answered) > end \
            else 0.0

    def passed(self, result: dict[str, Any]) -> bool:
        return super().passed(result) and result.get("storm_error_answers", 0) > 0

    def summary(self, r: dict[str, Any]) -> str:
        return (super().summary(r) + f" (storm over → everything sent before it answered); "
                f"{r.get('storm_error_answers')} error answers in {r.get('storm_s')} s "
                f"({r.get('storm_attempts_per_s')} send attempts/s), at most "
                f"{r.get('most_attempts_for_one_message')} attempts for one message")


register_drill = GraphStorm.register
