"""``mtdesk bench e2e``: the whole message path under an open-loop load, each reply checked.

Process layout (every part in its own process(es), as in production):

- Redis: a ``redis-server`` of the bench's own on a free port (or ``--redis-url``, whose
  database is FLUSHED before and after);
- the fake LLM (OpenAI-compatible, ``--llm-latency-ms``, default 300) and the fake Graph
  API (``--graph-latency-ms``, default 0), each a process;
- the gateway and admin API: ``mtdesk serve --no-actors``;
- Ray with the conversation shards (``--shards``) and the retrieval shards as actors,
  started in this process by :class:`~mtdesk.cli.backend.Backend`;
- the load generator (:mod:`mtdesk.benchmarks.e2e_load`), a process.

A tenant is provisioned through the admin API over HTTP on all three channels (two
accounts per channel) with bot provider ``openai`` pointed at the fake LLM. After a short
warm-up, ``--rate`` messages/s are sent for ``--seconds`` from ``--users`` customers, a
fraction delivered twice; then the bench drains (waits until every message is answered or
``--drain-timeout``). The fake LLM echoes each message's unique token into the reply, so
every reply recorded by the fake Graph API is matched to the message(s) it answers
(several messages of one person may be answered together by one reply).

JSON keys: ``messages``, ``replied_once``, ``lost``, ``duplicated``, ``msgs_per_s``
(answered messages / time from first send to last reply), ``offered_rate``,
``e2e_p50_ms``/``e2e_p99_ms`` (send → reply accepted by the Graph API),
``overhead_p50_ms``/``overhead_p99_ms`` (the same minus the two fakes' latency knobs),
``ack_p50_ms``/``ack_p99_ms`` (webhook answered), queue lag, CPU per message by
component, ``first_contact_share`` (messages whose sender had not written before) with
the overhead of each kind, and more.

``--new-customers F``: F of the messages come from customers never seen before, the rest
from the ``--users`` customers, who each write once before the load (not measured).
``--cluster``: a Redis Cluster of the bench's own (3 masters, 1 replica each) instead
of one server; Redis' commands and CPU are summed over the masters, the replicas' CPU is
``cpu_s["redis_replicas"]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

GOAL = {"msgs_per_s": 300.0, "overhead_p99_ms": 50.0}


def register_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "e2e",
        help="customers on all three channels → gateway → shards → fake LLM → fake Graph API",
        description="End-to-end: signed webhooks at an open-loop rate from simulated customers "
        "on Messenger, Instagram and WhatsApp, through the gateway, the conversation shards "
        "(Ray actors), a fake LLM and a fake Graph API; every reply is matched to its message.",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="sending time (default 20)")
    p.add_argument("--rate", type=float, default=300.0, help="messages per second offered (default 300)")
    p.add_argument("--users", type=int, default=3000,
                   help="distinct customers, spread over the three channels (default 3000)")
    p.add_argument("--llm-latency-ms", type=float, default=300.0, help="fake LLM latency (default 300)")
    p.add_argument("--graph-latency-ms", type=float, default=0.0, help="fake Graph API latency (default 0)")
    p.add_argument("--shards", type=int, default=2, help="conversation shards (default 2)")
    p.add_argument("--duplicates", type=float, default=0.05,
                   help="fraction of messages delivered twice, as Meta retries (default 0.05)")
    p.add_argument("--drain-timeout", type=float, default=60.0,
                   help="seconds to wait for the last replies after sending (default 60)")
    p.add_argument("--connections", type=int, default=64,
                   help="load generator keep-alive connections (default 64)")
    p.add_argument("--meta-webhooks", action="store_true",
                   help="the fake Graph API posts Meta's echo / status of every message sent "
                   "back to the gateway, as Meta does (default off; see docs/benchmarks.md)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--report", metavar="DIR", help="write a report to DIR: JSON, a Markdown "
                   "table and PNG plots (throughput over time, latency distribution, stages)")
    p.add_argument("--redis-url", help="use this Redis (its database is FLUSHED before and "
                   "after) instead of starting a redis-server of the bench's own")
    p.add_argument("--new-customers", type=float, metavar="FRACTION",
                   help="this share of the messages (0..1) from customers never seen before "
                   "(a new conversation each); the --users customers then each write once "
                   "before the load, so the rest are from customers already known")
    p.add_argument("--cluster", action="store_true",
                   help="run against a Redis Cluster of the bench's own (3 masters with a "
                   "replica each, on free ports; MTDESK_REDIS_CLUSTER=true); Redis commands "
                   "and CPU are summed over the masters")
    p.add_argument("--plots", metavar="NAMES",
                   help="with --report: only these plots, comma-separated, of "
                   "throughput,latency,stages (default all)")
    p.add_argument("--redis-cost", type=float, metavar="SECONDS",
                   help="capture the commands Redis runs for SECONDS of the load and replay "
                        "them on a fresh Redis of their own: Redis' CPU per message away "
                        "from the machine's other work (redis_cost in the JSON; see "
                        "docs/redis.md)")
    p.add_argument("--profile", metavar="DIR",
                   help="record py-spy profiles (raw collapsed stacks) of the gateway and the "
                   "shards during the load into DIR")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from mtdesk.benchmarks.e2e_run import BenchConfig, run

    checks = [("--seconds", args.seconds > 0), ("--rate", args.rate > 0),
              ("--users", args.users >= 3), ("--shards", args.shards >= 1),
              ("--duplicates", 0 <= args.duplicates <= 1), ("--drain-timeout", args.drain_timeout > 0),
              ("--connections", args.connections >= 1),
              ("--llm-latency-ms", args.llm_latency_ms >= 0),
              ("--graph-latency-ms", args.graph_latency_ms >= 0),
              ("--new-customers", args.new_customers is None or 0 <= args.new_customers <= 1),
              ("--redis-cost", args.redis_cost is None or args.redis_cost > 0)]
    for name, ok in checks:
        if not ok:
            print(f"mtdesk: error: {name}: out of range", file=sys.stderr)
            return 2
    if args.cluster and args.redis_url:
        print("mtdesk: error: --cluster: starts a cluster of its own; not with --redis-url",
              file=sys.stderr)
        return 2
    plots = None
    if args.plots is not None:
        from mtdesk.benchmarks.e2e_report import PLOTS

        plots = [name.strip() for name in args.plots.split(",") if name.strip()]
        unknown = [name for name in plots if name not in PLOTS]
        if unknown or not plots:
            print(f"mtdesk: error: --plots: {', '.join(unknown) or 'none named'}: not one of "
                  f"{','.join(PLOTS)}", file=sys.stderr)
            return 2
    cfg = BenchConfig(
        seconds=args.seconds, rate=args.rate, users=args.users,
        llm_latency_ms=args.llm_latency_ms, graph_latency_ms=args.graph_latency_ms,
        shards=args.shards, duplicate_fraction=args.duplicates,
        drain_timeout_s=args.drain_timeout, connections=args.connections,
        redis_url=args.redis_url, profile_dir=args.profile,
        new_fraction=args.new_customers, cluster=args.cluster, meta_webhooks=args.meta_webhooks,
    )
    # SIGTERM unwinds like Ctrl-C, so everything the bench started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cost = None
    if args.redis_cost is not None:
        if args.cluster:
            print("mtdesk: error: --redis-cost: one Redis only, not with --cluster", file=sys.stderr)
            return 2
        from mtdesk.benchmarks.redis_cost import RedisCost

        cost = RedisCost(args.redis_cost)
    report = run(cfg, log=lambda line: print(f"bench e2e: {line}", file=sys.stderr, flush=True),
                 drill=cost)
    if cost is not None:
        report["redis_cost"] = report.pop("drill", {})
    print(summary(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if args.report:
        from mtdesk.benchmarks.e2e_report import write_report

        for path in write_report(args.report, report, only=plots):
            print(f"bench e2e: wrote {path}", file=sys.stderr)
    return 0


def summary(r: dict[str, Any]) -> str:
    return (
        f"{r['messages']} messages at {r['offered_rate']:.0f}/s offered: "
        f"{r['replied_once']} answered once, {r['lost']} lost, {r['duplicated']} duplicated; "
        f"sustained {r['msgs_per_s']:.1f} msgs/s; e2e p50 {r['e2e_p50_ms']:.1f} ms, "
        f"p99 {r['e2e_p99_ms']:.1f} ms; overhead p50 {r['overhead_p50_ms']:.1f} ms, "
        f"p99 {r['overhead_p99_ms']:.1f} ms; first contacts "
        f"{r.get('first_contact_share', 0.0) * 100:.0f}% of messages (goal ≥ {GOAL['msgs_per_s']:.0f} msgs/s, "
        f"p99 ≤ {GOAL['overhead_p99_ms']:.0f} ms: {'met' if r['meets_goal'] else 'NOT met'})"
        + (f"; Redis {r['redis_calls_per_msg']:.1f} commands and "
           f"{r['redis_cpu_us_per_msg']:.0f} µs of CPU per message "
           f"(~{r['msgs_per_s_per_redis_core']:.0f} msgs/s per Redis core)"
           if "redis_cpu_us_per_msg" in r and "redis_calls_per_msg" in r else "")
        + ("; Redis Cluster of 3 masters (figures summed over them)"
           if r.get("config", {}).get("redis_cluster") else "")
        + (f"; replayed alone, Redis spends {r['redis_cost']['replay_cpu_us_per_msg']:.0f} µs "
           f"of CPU per message"
           if "replay_cpu_us_per_msg" in r.get("redis_cost", {}) else "")
    )
