"""``mtdesk bench scale``: ``bench e2e`` at one offered rate with 1, 2 and 4 conversation
shards, on a single Ray node and on a simulated multi-node Ray cluster on this machine
(each node a raylet with its own worker processes; the shards spread over them).

Every run is a whole ``bench e2e`` (its own Redis, fakes, gateway and Ray, all stopped
afterwards), so runs do not share warm state. The report (``--report DIR``) plots the
sustained throughput and the overhead p99 against the shard count, one line per layout;
``--json`` writes every run's full e2e figures. On one machine more nodes add processes,
not cores: the multi-node line shows the cost of the layout, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any


def _counts(text: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: comma-separated whole numbers, got {text!r}") from None
    if not values or any(v < 1 or v > 64 for v in values):
        raise argparse.ArgumentTypeError(f"{name}: each between 1 and 64, got {text!r}")
    return values


def register_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scale", help="bench e2e with 1, 2, 4 shards, on one and on several Ray nodes",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--shards", type=lambda t: _counts(t, "--shards"), default=[1, 2, 4],
                   help="shard counts to run (default 1,2,4)")
    p.add_argument("--nodes", type=lambda t: _counts(t, "--nodes"), default=[1, 2],
                   help="Ray node counts: 1 = one local instance, more = a simulated cluster "
                   "(default 1,2)")
    p.add_argument("--rate", type=float, default=300.0, help="messages per second offered (default 300)")
    p.add_argument("--seconds", type=float, default=15.0, help="sending time per run (default 15)")
    p.add_argument("--users", type=int, default=3000, help="distinct customers (default 3000)")
    p.add_argument("--llm-latency-ms", type=float, default=300.0, help="fake LLM latency (default 300)")
    p.add_argument("--json", metavar="PATH", help="also write every run's figures as JSON to PATH")
    p.add_argument("--report", metavar="DIR", help="write a report to DIR: JSON, a Markdown "
                   "table and PNG plots (throughput and p99 against shard count)")
    p.set_defaults(handler=_handle)


def layout(nodes: int) -> str:
    return "one node" if nodes == 1 else f"{nodes} simulated nodes"


def run(shards: list[int], nodes: list[int], rate: float, seconds: float, users: int,
        llm_latency_ms: float, log: Any = lambda line: None) -> dict[str, Any]:
    from mtdesk.benchmarks import e2e_run

    runs = []
    for n in nodes:
        for s in shards:
            log(f"{layout(n)}, {s} shard(s): {rate:.0f} msgs/s for {seconds:.0f} s…")
            cfg = e2e_run.BenchConfig(seconds=seconds, rate=rate, users=max(users, 3),
                                      llm_latency_ms=llm_latency_ms, shards=s, nodes=n)
            report = e2e_run.run(cfg, log)
            runs.append({"nodes": n, "shards": s, "e2e": report})
    return {"rate": rate, "seconds": seconds, "users": users, "runs": runs}


def write_report(directory: str, result: dict[str, Any]) -> list[Any]:
    from mtdesk.benchmarks.report import Plot, write

    rows = []
    for r in result["runs"]:
        e = r["e2e"]
        rows.append((layout(r["nodes"]), r["shards"], e["msgs_per_s"], e["overhead_p50_ms"],
                     e["overhead_p99_ms"], e["lost"], e["duplicated"],
                     e["cpu_ms_per_msg_product"]))
    by_layout: dict[str, list[dict[str, Any]]] = {}
    for r in result["runs"]:
        by_layout.setdefault(layout(r["nodes"]), []).append(r)
    throughput = {k: ([r["shards"] for r in v], [r["e2e"]["msgs_per_s"] for r in v])
                  for k, v in by_layout.items()}
    p99 = {k: ([r["shards"] for r in v], [r["e2e"]["overhead_p99_ms"] for r in v])
           for k, v in by_layout.items()}
    plots = [Plot("throughput", f"Sustained throughput at {result['rate']:.0f} msgs/s offered",
                  "line", "conversation shards", "messages / s", throughput),
             Plot("p99", "Overhead p99 against shard count", "line", "conversation shards",
                  "ms", p99)]
    return write(directory, "scale", result,
                 header=("layout", "shards", "msgs/s", "overhead p50 ms", "overhead p99 ms",
                         "lost", "duplicated", "product CPU ms/msg"),
                 rows=rows, plots=plots,
                 notes=[f"{result['rate']:.0f} msgs/s offered for {result['seconds']:.0f} s per "
                        f"run from {result['users']} customers"])


def _handle(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.seconds <= 0 or args.users < 3 or args.llm_latency_ms < 0:
        print("mtdesk: error: --rate, --seconds, --users (≥ 3), --llm-latency-ms: out of range",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = run(args.shards, args.nodes, args.rate, args.seconds, args.users,
                 args.llm_latency_ms,
                 log=lambda line: print(f"bench scale: {line}", file=sys.stderr, flush=True))
    for r in result["runs"]:
        e = r["e2e"]
        print(f"{layout(r['nodes'])}, {r['shards']} shard(s): {e['msgs_per_s']:.1f} msgs/s, "
              f"overhead p99 {e['overhead_p99_ms']:.1f} ms, {e['lost']} lost, "
              f"{e['duplicated']} duplicated")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    if args.report:
        for path in write_report(args.report, result):
            print(f"bench scale: wrote {path}", file=sys.stderr)
    return 0
