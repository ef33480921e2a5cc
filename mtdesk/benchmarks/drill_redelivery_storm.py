"""``mtdesk drill redelivery-storm``: every event three times, then a day's backlog.

Meta delivers at least once: a slow acknowledgement, a blip, a webhook re-subscribed
after an outage all bring events again, sometimes many. Under load every message is
delivered three times, the copies within one second of the first (from any gateway
connection, racing each other); none may be answered twice. Then Meta replays a day's
backlog: every message of the load again, as it was, and messages never seen before,
written between 24 hours ago and just past ``MTDESK_MAX_EVENT_AGE_S`` (6 h by default).
Nothing of the backlog may be answered: the load's messages were answered already, and
a person who wrote hours ago is not answered now (the stale ones are recorded in the
history only; the gateway counts them as ``stale``). Figures: deliveries, replies to the
backlog (must be 0), the gateway's duplicate and stale counts.

``--short``: 20 msgs/s for 6 s from 40 customers, a backlog of the load plus 100 old
messages. The full form: 300 msgs/s for 30 s from 3,000 customers, plus 3,000.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_run import BenchConfig

NAME = "redelivery-storm"
DAY_MS = 24 * 3600 * 1000
_EVENTS = re.compile(r'^mtdesk_gateway_events_total\{([^}]*)\}\s+([0-9.e+]+)$', re.MULTILINE)


async def gateway_events(rig: Rig) -> dict[str, float]:
    """The gateway's ``mtdesk_gateway_events_total`` by outcome (enqueued, duplicate,
    stale, …), summed over channels and kinds."""
    async with rig.session.get(f"{rig.base}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for labels, value in _EVENTS.findall(text):
        outcome = re.search(r'outcome="([^"]*)"', labels)
        if outcome:
            out[outcome.group(1)] = out.get(outcome.group(1), 0.0) + float(value)
    return out


class RedeliveryStorm(Drill):
    name = NAME
    help = "every event delivered three times within a second, then a day's backlog replayed"

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=6, rate=20, users=40, llm_latency_ms=50, shards=1,
                               duplicate_fraction=1.0, redelivery_copies=2,
                               redelivery_window_s=1.0, drain_timeout_s=120, connections=8,
                               warmup_messages=10)
        return BenchConfig(seconds=30, rate=300, users=3000, shards=2, drain_timeout_s=180,
                           duplicate_fraction=1.0, redelivery_copies=2, redelivery_window_s=1.0)

    @property
    def old_messages(self) -> int:
        return 100 if self.short else 3000

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.replies is not None
        max_age_ms = int(rig.env.get("MTDESK_MAX_EVENT_AGE_S", str(6 * 3600))) * 1000
        now_ms = int(time.time() * 1000)
        total = int(rig.cfg.seconds * rig.cfg.rate)
        # The load again, dated as Meta dates a replay: when each was first written (a
        # day ago, as far as the product can tell: the same message ids).
        backlog = [rig.message(n, "tk", timestamp_ms=now_ms - DAY_MS + n) for n in range(total)]
        # Never seen, written between a day ago and a minute past the age limit.
        span = DAY_MS - max_age_ms - 60_000
        old = self.old_messages
        backlog += [rig.message(n, "bl", timestamp_ms=now_ms - DAY_MS + n * span // old)
                    for n in range(old)]
        before = await gateway_events(rig)
        sends_before = rig.replies.sends
        rig.log(f"replaying a day's backlog: the load's {total} messages and {old} never "
                f"seen, {max_age_ms // 3_600_000} h to 24 h old…")
        statuses = await rig.webhooks(backlog, connections=8)
        # Give a reply, were there one, time to go out (the shards answer in ~0.1 s).
        await asyncio.sleep(3.0 if self.short else 10.0)
        await rig.replies.poll(rig.session)
        after = await gateway_events(rig)
        out["backlog"] = len(backlog)
        out["backlog_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        out["replies_to_backlog"] = rig.replies.sends - sends_before
        out["stale_answered"] = rig.replies.answered("bl", range(old))
        out["gateway_stale"] = int(after.get("stale", 0) - before.get("stale", 0))
        out["gateway_duplicate_in_backlog"] = int(after.get("duplicate", 0)
                                                 - before.get("duplicate", 0))
        out["gateway_duplicate_total"] = int(after.get("duplicate", 0))
        out["max_event_age_s"] = max_age_ms // 1000

    def passed(self, result: dict[str, Any]) -> bool:
        return (super().passed(result) and result["replies_to_backlog"] == 0
                and result["stale_answered"] == 0
                and result["backlog_statuses"] == {"200": result["backlog"]})

    def summary(self, r: dict[str, Any]) -> str:
        e2e = r["e2e"]
        return (super().summary(r) + f"; {e2e['redeliveries']} redeliveries within 1 s; "
                f"a backlog of {r['backlog']} replayed ({r['gateway_stale']} stale, "
                f"{r['gateway_duplicate_in_backlog']} duplicates): {r['replies_to_backlog']} "
                "replies to it")


register_drill = RedeliveryStorm.register
