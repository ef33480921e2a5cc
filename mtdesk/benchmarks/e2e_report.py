"""``bench e2e``'s figures as a person reads them (``--report DIR``), and the per-stage
latencies it reads from the deployment's own ``/metrics``.

Per stage (``mtdesk_shard_stage_seconds``: queue, llm, send, end_to_end; docs/shards.md)
the bench scrapes the histogram buckets before and after the load; the difference is the
load's own distribution (the shards publish their histograms every few seconds, so the
"before" may predate the warm-up's last messages), and :func:`stage_quantiles` reads
p50/p90/p99 from it (each the upper bound of the bucket it falls in: a histogram knows no
more).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mtdesk.benchmarks.report import Plot, write

Buckets = dict[str, dict[float, float]]  # stage → upper bound (s) → cumulative count


async def scrape_stages(session: Any, base: str) -> Buckets:
    """The stage histograms' buckets summed over the shards ({} when unavailable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with session.get(f"{base}/metrics") as resp:
            text = await resp.text()
    except Exception:  # noqa: BLE001 - a report without stages rather than no report
        return {}
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mtdesk_shard_stage_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                stage = sample.labels.get("stage", "")
                le = float(sample.labels["le"])
                per = out.setdefault(stage, {})
                per[le] = per.get(le, 0.0) + float(sample.value)
    return out


async def scrape_settled(session: Any, base: str, before: Buckets, expected: int, *,
                         timeout_s: float = 12.0) -> Buckets:
    """The stage histograms once the shards have published at least ``expected`` more
    end-to-end observations than ``before`` (they publish every few seconds, so a scrape
    right after the last reply may not hold it yet), or what they show after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = await scrape_stages(session, base)
        if (_total(after, "end_to_end") - _total(before, "end_to_end") >= expected
                or time.monotonic() > deadline):
            return after
        await asyncio.sleep(0.5)


def _total(buckets: Buckets, stage: str) -> float:
    return max(buckets.get(stage, {}).values(), default=0.0)  # cumulative: the +Inf bucket


def stage_quantiles(after: Buckets, before: Buckets) -> dict[str, dict[str, float]]:
    """stage → {"count", "p50_ms", "p90_ms", "p99_ms"} of what happened between the two."""
    out: dict[str, dict[str, float]] = {}
    for stage, buckets in after.items():
        prior = before.get(stage, {})
        bounds = sorted(buckets)
        counts = [buckets[b] - prior.get(b, 0.0) for b in bounds]
        total = counts[-1] if counts else 0.0
        if total <= 0:
            continue
        figures: dict[str, float] = {"count": total}
        for q in (50, 90, 99):
            need = total * q / 100
            bound = next((b for b, c in zip(bounds, counts, strict=True) if c >= need), bounds[-1])
            figures[f"p{q}_ms"] = round(bound * 1000, 1) if bound != float("inf") else -1.0
        out[stage] = figures
    return out


ROWS = (("messages", "messages"), ("answered once", "replied_once"), ("lost", "lost"),
        ("duplicated", "duplicated"), ("offered msgs/s", "offered_rate"),
        ("sustained msgs/s", "msgs_per_s"), ("overhead p50 ms", "overhead_p50_ms"),
        ("overhead p99 ms", "overhead_p99_ms"), ("e2e p99 ms", "e2e_p99_ms"),
        ("ack p99 ms", "ack_p99_ms"), ("first contacts (share)", "first_contact_share"),
        ("overhead p99 ms, first contacts", "overhead_first_contact_p99_ms"),
        ("overhead p99 ms, known customers", "overhead_known_p99_ms"),
        ("product CPU ms/msg", "cpu_ms_per_msg_product"),
        ("Redis commands/msg", "redis_calls_per_msg"),
        ("Redis CPU µs/msg", "redis_cpu_us_per_msg"),
        ("busy cores (machine)", "machine_busy_cores"))


PLOTS = ("throughput", "latency", "stages")


def plots(report: dict[str, Any], label: str = "e2e") -> list[Plot]:
    series = report.get("series", {})
    sent = series.get("sent_per_s", [])
    answered = series.get("answered_per_s", [])
    out = [Plot("throughput", "Messages per second over the run", "line", "second of the run",
                "messages / s", {"sent": ([x for x, _ in sent], [y for _, y in sent]),
                                 "answered": ([x for x, _ in answered], [y for _, y in answered])})]
    pct = series.get("overhead_ms_percentiles", [])
    if pct:
        out.append(Plot("latency", "Overhead latency distribution (send → reply, minus the "
                        "fakes' latency)", "line", "percentile", "ms",
                        {label: (list(range(len(pct))), pct)}, logy=True))
    stages = report.get("stage_ms", {})
    if stages:
        names = sorted(stages)
        out.append(Plot("stages", "Latency per stage (shards' histograms)", "bars", "stage",
                        "ms", {f"p{q}": (names, [max(stages[n][f'p{q}_ms'], 0.0) for n in names])
                               for q in (50, 90, 99)}, logy=True))
    return out


def write_report(directory: str, report: dict[str, Any],
                 only: list[str] | None = None) -> list[Any]:
    """``only``: the names of :data:`PLOTS` to draw (default all)."""
    rows = [(name, report.get(key, "")) for name, key in ROWS]
    for stage, f in sorted(report.get("stage_ms", {}).items()):
        rows.append((f"stage {stage} p50 / p99 ms", f"{f['p50_ms']} / {f['p99_ms']}"))
    if report.get("drill", {}).get("recovery_s") is not None:
        rows.append(("drill, recovery s", report["drill"]["recovery_s"]))
    cfg = report.get("config", {})
    notes = [f"config: {', '.join(f'{k} {v}' for k, v in cfg.items())}"] if cfg else []
    return write(directory, "e2e", report, header=("figure", "value"), rows=rows,
                 plots=[p for p in plots(report) if only is None or p.name in only],
                 notes=notes)
