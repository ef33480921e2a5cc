"""``mtdesk bench ingest``: how close the webhook gets to a bare aiohttp endpoint.

One run, on this machine:

1. a bare aiohttp endpoint that only answers 200 (same uvloop + AppRunner setup as the
   gateway) is loaded at maximum rate: the ceiling;
2. the real gateway (``build_app``: signature, decode, one batched Lua round trip into
   a real Redis, a throwaway database flushed before and after, a throwaway tenant
   routed) is loaded at maximum rate;
3. the gateway is loaded at half its maximum rate (open loop) to measure ack latency.

Each server runs in its own process, and so does the load generator: a minimal HTTP/1.1
keep-alive client on raw asyncio sockets (an aiohttp client would be the bottleneck),
posting signed real-format payloads of the three channels, each with a unique message
id. At the end, the events in the streams are counted against the 200s received.

JSON keys: ``events_per_s``, ``baseline_events_per_s``, ``ratio``, ``ack_p50_ms``,
``ack_p99_ms`` (gateway at half rate), plus the other phases' figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import queue
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mtdesk.benchmarks.rawhttp import Connection
from mtdesk.core import gctune

BENCH_SECRET = "bench-app-secret"
TENANT = "bench-tenant"
ACCOUNTS = {"messenger": "900000000000001", "instagram": "17841499999999999", "whatsapp": "900000000000003"}
USERS = 2000  # distinct end users, spread over the partitions


# --- payloads ---------------------------------------------------------------------------

_MESSENGER = (
    b'{"object":"page","entry":[{"id":"%(acct)s","time":%(ts)d,"messaging":[{"sender":{"id":"%(user)s"},'
    b'"recipient":{"id":"%(acct)s"},"timestamp":%(ts)d,"message":{"mid":"m_%(mid)s",'
    b'"text":"Hi! Do you ship to Canada? \\u00e7a marche \\/ ok"}}]}]}'
)
_INSTAGRAM = (
    b'{"object":"instagram","entry":[{"id":"%(acct)s","time":%(ts)d,"messaging":[{"sender":{"id":"%(user)s"},'
    b'"recipient":{"id":"%(acct)s"},"timestamp":%(ts)d,"message":{"mid":"aWdf%(mid)s",'
    b'"text":"is this still available?"}}]}]}'
)
_WHATSAPP = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages",'
    b'"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881",'
    b'"phone_number_id":"%(acct)s"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"1650%(user)s",'
    b'"user_id":"US.%(user)s"}],"messages":[{"from":"1650%(user)s","id":"wamid.%(mid)s","timestamp":"%(tss)d",'
    b'"type":"text","text":{"body":"Does it come in another color?"},"from_user_id":"US.%(user)s"}]}}]}]}'
)
_TEMPLATES = ((_MESSENGER, ACCOUNTS["messenger"]), (_INSTAGRAM, ACCOUNTS["instagram"]), (_WHATSAPP, ACCOUNTS["whatsapp"]))


class RequestFactory:
    """Signed POSTs with unique message ids (prefix + counter), rotating the channels."""

    def __init__(self, prefix: str, secret: str = BENCH_SECRET) -> None:
        self._prefix = prefix.encode()
        self._key = secret.encode()
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        n = self._n
        template, acct = _TEMPLATES[n % 3]
        now = time.time()
        body = template % {
            b"acct": acct.encode(), b"ts": int(now * 1000), b"tss": int(now),
            b"user": str(n % USERS).encode(), b"mid": self._prefix + str(n).encode(),
        }
        sig = hmac.new(self._key, body, hashlib.sha256).hexdigest().encode()
        return (
            b"POST /webhooks/meta HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"X-Hub-Signature-256: sha256=" + sig + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body
        )


# --- the load generator (its own process) ----------------------------------------------------




@dataclass
class PhaseResult:
    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    late_sends: int = 0
    acknowledged: int = 0  # every 200, warm-up included (each is one event stored)
    # CPU seconds used during the measured window (Linux /proc; Redis from INFO, which
    # includes whatever else uses that Redis server).
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


_CLUSTER_MARK = "#cluster"  # appended to a node's URL: the gateway runs on its cluster


def _sync_client(url: str) -> Any:
    """A blocking client of ``url``'s server, or of its whole cluster when the URL ends
    in ``#cluster`` (how this module passes a Redis Cluster around)."""
    import redis as redis_sync
    from redis.cluster import RedisCluster as SyncCluster

    if url.endswith(_CLUSTER_MARK):
        return SyncCluster.from_url(url[: -len(_CLUSTER_MARK)])
    return redis_sync.Redis.from_url(url)


def _masters(r: Any) -> list[Any]:
    """The targets of a per-server command on ``r`` (:func:`_on`): every master of a
    cluster, or None for the one server."""
    from redis.cluster import RedisCluster as SyncCluster

    if isinstance(r, SyncCluster):
        return list(r.get_primaries())
    return [None]


def _on(r: Any, node: Any, *args: Any) -> Any:
    if node is None:
        return r.execute_command(*args)
    return r.execute_command(*args, target_nodes=node)


def _redis_cpu_s(redis_url: str | None) -> float:
    if redis_url is None:
        return float("nan")
    r = _sync_client(redis_url)
    try:
        total = 0.0
        for node in _masters(r):
            info = _on(r, node, "INFO", "cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total
    finally:
        r.close()


def _cpu_sample(server_pid: int, redis_url: str | None) -> dict[str, float]:
    return {
        "loadgen": time.process_time(),
        "server": _proc_cpu_s(server_pid),
        "redis": _redis_cpu_s(redis_url),
    }


async def _run_phase(
    port: int, connections: int, seconds: float, rate: float | None, prefix: str, warmup: float,
    server_pid: int = 0, redis_url: str | None = None,
) -> PhaseResult:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(connections):
        _t, proto = await loop.create_connection(Connection, "127.0.0.1", port)
        conns.append(proto)
    factory = RequestFactory(prefix)
    result = PhaseResult()
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + seconds
    interval = connections / rate if rate else 0.0
    window_end = [deadline]  # later when the window had to wait for its first answer

    async def worker(i: int, conn: Connection) -> None:
        next_at = start + (i / rate if rate else 0.0)
        while True:
            if rate:
                now = time.perf_counter()
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                elif now - next_at > 0.005:
                    if now >= measure_from:
                        result.late_sends += 1
                next_at += interval
            raw = factory.next()
            t0 = time.perf_counter()
            # The window closes at its deadline once it measured an answer: on a loaded
            # host the warm-up's last requests may outlast a short window, which would
            # otherwise measure nothing and report 0 events/s.
            if t0 >= deadline and result.ok:
                return
            try:
                status = await conn.request(raw)
            except ConnectionError:
                result.errors["connection"] = result.errors.get("connection", 0) + 1
                return
            t1 = time.perf_counter()
            if status == 200:
                result.acknowledged += 1
            if t0 < measure_from:
                continue
            result.requests += 1
            if status == 200:
                result.ok += 1
                result.latencies_ms.append((t1 - t0) * 1000)
                window_end[0] = max(window_end[0], t0)
            else:
                result.errors[str(status)] = result.errors.get(str(status), 0) + 1

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        before = _cpu_sample(server_pid, redis_url)
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        after = _cpu_sample(server_pid, redis_url)
        result.cpu_s = {k: round(after[k] - before[k], 3) for k in before}

    await asyncio.gather(sampler(), *(worker(i, c) for i, c in enumerate(conns)))
    result.seconds = min(time.perf_counter(), window_end[0]) - measure_from
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result


def _loadgen_main(port: int, connections: int, seconds: float, rate: float | None, prefix: str,
                  warmup: float, server_pid: int, redis_url: str | None, out: Any) -> None:
    _install_uvloop()
    res = asyncio.run(
        _run_phase(port, connections, seconds, rate, prefix, warmup, server_pid, redis_url)
    )
    out.put(asdict(res))


# --- the servers (each in its own process) ------------------------------------------------------


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(app: Any, ready: Any) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    gctune.settle()  # as mtdesk serve does
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ready.put(runner.addresses[0][1])
    await stop.wait()
    await runner.cleanup()


def _bare_main(ready: Any) -> None:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"EVENT_RECEIVED", content_type="text/plain")

    _install_uvloop()
    app = web.Application()
    app.router.add_post("/webhooks/meta", ok)
    asyncio.run(_serve(app, ready))


def _gateway_main(redis_url: str, durability: str, ready: Any) -> None:
    from mtdesk.cli.compose import build_app
    from mtdesk.core.secret import Secret
    from mtdesk.core.settings import Settings

    cluster = redis_url.endswith(_CLUSTER_MARK)
    settings = Settings(
        redis_url=redis_url[: -len(_CLUSTER_MARK)] if cluster else redis_url,
        redis_cluster=cluster,
        meta_app_secrets=(Secret(BENCH_SECRET),), meta_verify_token=Secret("bench"),
        # As `mtdesk serve` runs it (it refuses to start without): events are sealed.
        encryption_keys=(Secret(base64.urlsafe_b64encode(os.urandom(32)).decode()),),
        ack_durability=durability,
    )
    _install_uvloop()

    async def main() -> None:
        await _serve(build_app(settings), ready)

    asyncio.run(main())


class _Server:
    def __init__(self, target: Any, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Queue()
        self._proc = ctx.Process(target=target, args=(*args, self._ready), daemon=True)

    def __enter__(self) -> tuple[int, int]:
        """(port, pid) of the server."""
        self._proc.start()
        return int(self._ready.get(timeout=60)), int(self._proc.pid or 0)

    def __exit__(self, *exc: object) -> None:
        if self._proc.pid is not None and self._proc.is_alive():
            os.kill(self._proc.pid, signal.SIGTERM)
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


def _load(
    server: tuple[int, int], connections: int, seconds: float, rate: float | None, prefix: str,
    redis_url: str | None = None,
) -> PhaseResult:
    port, pid = server
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=_loadgen_main,
        args=(port, connections, seconds, rate, prefix, 1.0, pid, redis_url, out),
    )
    proc.start()
    give_up = time.monotonic() + seconds + 120
    while True:
        try:
            data = out.get(timeout=0.5)
            break
        except queue.Empty:
            if not proc.is_alive() or time.monotonic() > give_up:
                proc.kill()
                raise RuntimeError("the load generator died; see its traceback above") from None
    proc.join(30)
    return PhaseResult(**data)


# --- the bench ------------------------------------------------------------------------------


def _with_db(url: str, db: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _prepare_redis(url: str) -> None:
    from mtdesk.core import keys

    r = _sync_client(url)
    for node in _masters(r):
        _on(r, node, "FLUSHDB")
    for channel, acct in ACCOUNTS.items():
        r.hset(keys.account(channel, acct), mapping={"tenant": TENANT, "channel_id": f"bench-{channel}"})
    r.close()


def _count_and_flush(url: str, partitions: int) -> int:
    from mtdesk.core import keys

    r = _sync_client(url)
    total = sum(int(r.xlen(keys.inbound(p))) for p in range(partitions))
    for node in _masters(r):
        _on(r, node, "FLUSHDB")
    r.close()
    return total


def run(seconds: float, connections: int, redis_url: str, rounds: int = 2,
        durability: str = "memory") -> dict[str, Any]:
    """Alternate bare and gateway max-rate runs ``rounds`` times (this machine is shared:
    the best of each is compared), then load the gateway at half its best rate; the
    gateway's webhook 200 waits for ``durability`` (MTDESK_ACK_DURABILITY)."""
    from mtdesk.core.settings import Settings

    partitions = Settings().partitions
    _prepare_redis(redis_url)
    bares: list[PhaseResult] = []
    fulls: list[PhaseResult] = []
    try:
        with _Server(_bare_main) as bare_server, _Server(_gateway_main, redis_url, durability) as gw_server:
            for i in range(rounds):
                bares.append(_load(bare_server, connections, seconds, None, f"bare{i}_"))
                fulls.append(_load(gw_server, connections, seconds, None, f"max{i}_", redis_url))
            full = max(fulls, key=lambda r: r.rate)
            half_rate = max(full.rate / 2, 1.0)
            half = _load(gw_server, connections, seconds, half_rate, "half", redis_url)
            time.sleep(0.2)
    finally:
        stored = _count_and_flush(redis_url, partitions)
    bare = max(bares, key=lambda r: r.rate)
    ratio = full.rate / bare.rate if bare.rate else 0.0
    return {
        "durability": durability,
        "events_per_s": round(full.rate, 1),
        "baseline_events_per_s": round(bare.rate, 1),
        "ratio": round(ratio, 3),
        "ack_p50_ms": round(half.pct(0.50), 3),
        "ack_p99_ms": round(half.pct(0.99), 3),
        "half_rate_target_per_s": round(half_rate, 1),
        "half_rate_achieved_per_s": round(half.rate, 1),
        "half_rate_late_sends": half.late_sends,
        "max_rate_p50_ms": round(full.pct(0.50), 3),
        "max_rate_p99_ms": round(full.pct(0.99), 3),
        "baseline_p50_ms": round(bare.pct(0.50), 3),
        "baseline_p99_ms": round(bare.pct(0.99), 3),
        # Less sensitive to other load on a shared machine: the median of each, and the
        # ratio of server CPU per event (what bounds throughput when the server is saturated).
        "ratio_median": round(
            statistics.median(r.rate for r in fulls) / statistics.median(r.rate for r in bares), 3
        ) if bares and statistics.median(r.rate for r in bares) else 0.0,
        "cpu_ratio": round(bare.cpu_s["server"] / bare.ok / (full.cpu_s["server"] / full.ok), 3)
        if bare.ok and full.ok and full.cpu_s.get("server", 0) > 0 and bare.cpu_s.get("server", 0) > 0
        else None,
        "rounds": {
            "baseline_events_per_s": [round(r.rate, 1) for r in bares],
            "events_per_s": [round(r.rate, 1) for r in fulls],
        },
        "events_per_request": 1,
        # for plots (--report): ack latency distributions as 0th..100th percentiles
        "series": {name: [round(r.pct(q / 100), 3) for q in range(101)]
                   for name, r in (("half_rate_ack_ms_percentiles", half),
                                   ("max_rate_ack_ms_percentiles", full),
                                   ("baseline_ms_percentiles", bare))},
        "cpu_us_per_event": {
            phase: {k: round(v * 1e6 / r.ok, 1) for k, v in r.cpu_s.items() if r.ok and v == v}
            for phase, r in (("baseline", bare), ("max", full), ("half", half))
        },
        "errors": {
            "baseline": [r.errors for r in bares], "max": [r.errors for r in fulls], "half": half.errors,
        },
        # Every acknowledged event (warm-ups included) must be in the streams.
        "events_acknowledged": sum(r.acknowledged for r in (*fulls, half)),
        "events_in_streams": stored,
        "seconds": seconds,
        "connections": connections,
        "cpus": os.cpu_count(),
        "goal": {"ratio": 0.6, "ack_p99_ms_at_half_rate": 10.0},
        "meets_goal": ratio >= 0.6 and half.pct(0.99) <= 10.0,
    }


def register_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ingest",
        help="webhook throughput vs a bare aiohttp endpoint, and ack latency at half rate",
        description="Webhook throughput against a bare aiohttp endpoint on this machine, "
        "and ack latency at half the gateway's maximum rate.",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase (default 10)")
    # 64: the max-rate phases must saturate the server under test. The gateway holds each
    # request until its batch is in Redis, so with 32 connections a closed loop leaves it
    # ~4 % idle (measuring the load generator's concurrency, not the gateway); the bare
    # endpoint is saturated either way. Meta delivers a busy app's webhooks on many
    # connections at once.
    p.add_argument("--connections", type=int, default=64,
                   help="keep-alive connections of the load generator (default 64)")
    p.add_argument(
        "--rounds", type=int, default=2,
        help="alternating bare/gateway max-rate rounds; the best of each is compared (default 2)",
    )
    p.add_argument(
        "--durability", default="memory",
        help="comma-separated MTDESK_ACK_DURABILITY modes to measure, each against a bare run "
        "of its own minute (memory, fsync, replica or all; default memory). fsync and replica "
        "run on redis-servers started for them (AOF with appendfsync always; a master and "
        "its replica)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--report", metavar="DIR", help="write a report to DIR: JSON, a Markdown "
                   "table and PNG plots (rates per round, ack latency distributions)")
    p.add_argument(
        "--redis-url",
        help="Redis to use; its database is FLUSHED before and after "
        "(default: MTDESK_REDIS_URL with database 14)",
    )
    p.add_argument(
        "--cluster", action="store_true",
        help="the gateway on a Redis Cluster of the bench's own (3 masters with a replica "
        "each, on free ports; MTDESK_REDIS_CLUSTER=true), for --durability memory or "
        "replica; Redis CPU is summed over the masters")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from mtdesk.core.settings import ACK_DURABILITIES, Settings

    url = args.redis_url or _with_db(Settings.from_env().redis_url, 14)
    if args.seconds <= 0 or args.connections < 1 or args.rounds < 1:
        print("mtdesk: error: --seconds, --connections and --rounds must be positive", file=sys.stderr)
        return 2
    modes = ACK_DURABILITIES if args.durability == "all" else tuple(
        m.strip() for m in args.durability.split(",") if m.strip())
    if not modes or any(m not in ACK_DURABILITIES for m in modes):
        print(f"mtdesk: error: --durability: each must be one of {', '.join(ACK_DURABILITIES)}",
              file=sys.stderr)
        return 2
    if args.cluster and (args.redis_url or "fsync" in modes):
        print("mtdesk: error: --cluster runs a cluster of its own, for --durability "
              "memory or replica (not with --redis-url, not fsync)", file=sys.stderr)
        return 2
    reports = _run_on_cluster(args, modes) if args.cluster else _run_each(args, modes, url)
    report = dict(reports[modes[0]])
    report["modes"] = {m: {k: r[k] for k in ("ratio", "ratio_median", "events_per_s",
                                             "baseline_events_per_s", "ack_p50_ms", "ack_p99_ms",
                                             "events_acknowledged", "events_in_streams")}
                       for m, r in reports.items()}
    for m, r in reports.items():
        if len(reports) > 1:
            print(f"{m}: gateway {r['events_per_s']:.0f} events/s vs bare "
                  f"{r['baseline_events_per_s']:.0f} req/s (ratio {r['ratio']:.2f}); ack p50 "
                  f"{r['ack_p50_ms']:.2f} ms, p99 {r['ack_p99_ms']:.2f} ms at half rate")
    print(
        f"gateway {report['events_per_s']:.0f} events/s vs bare {report['baseline_events_per_s']:.0f} req/s"
        f" (ratio {report['ratio']:.2f}); at half rate ({report['half_rate_achieved_per_s']:.0f}/s)"
        f" ack p50 {report['ack_p50_ms']:.2f} ms, p99 {report['ack_p99_ms']:.2f} ms;"
        f" {report['events_in_streams']} events in streams"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if args.report:
        for path in write_report(args.report, report):
            print(f"bench ingest: wrote {path}", file=sys.stderr)
    return 0


def _run_each(args: argparse.Namespace, modes: tuple[str, ...], url: str) -> dict[str, dict[str, Any]]:
    """``memory`` on ``url``; each other mode on a redis-server started for it."""
    import tempfile

    from mtdesk.cli.localredis import local_redis_for_durability

    reports: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode == "memory":
            reports[mode] = run(args.seconds, args.connections, url, args.rounds)
            continue
        with tempfile.TemporaryDirectory(prefix=f"mtdesk-bench-{mode}-") as workdir, \
                local_redis_for_durability(workdir, mode, who="bench ingest") as own:
            reports[mode] = run(args.seconds, args.connections, own, args.rounds, durability=mode)
    return reports


def _run_on_cluster(args: argparse.Namespace, modes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each mode on one Redis Cluster of the bench's own (3 masters, a replica each)."""
    import tempfile

    from mtdesk.cli.localredis import local_cluster

    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mtdesk-bench-cluster-") as workdir, \
            local_cluster(workdir, who="bench ingest") as (cluster_url, _ports):
        for mode in modes:
            reports[mode] = run(args.seconds, args.connections, cluster_url + _CLUSTER_MARK,
                                args.rounds, durability=mode)
            reports[mode]["cluster"] = True
    return reports


def write_report(directory: str, report: dict[str, Any]) -> list[Any]:
    from mtdesk.benchmarks.report import Plot, write

    keys = ("events_per_s", "baseline_events_per_s", "ratio", "ack_p50_ms", "ack_p99_ms",
            "half_rate_achieved_per_s", "max_rate_p99_ms", "baseline_p99_ms",
            "events_acknowledged", "events_in_streams")
    rounds = report["rounds"]
    names = [str(i + 1) for i in range(len(rounds["events_per_s"]))]
    series = report.get("series", {})
    plots = [
        Plot("rounds", "Requests per second, each round", "bars", "round", "per second",
             {"bare aiohttp": (names, rounds["baseline_events_per_s"]),
              "gateway": (names, rounds["events_per_s"])}),
        Plot("latency", "Ack latency distribution", "line", "percentile", "ms",
             {"gateway at half rate": (list(range(101)), series.get("half_rate_ack_ms_percentiles", [])),
              "gateway at max rate": (list(range(101)), series.get("max_rate_ack_ms_percentiles", [])),
              "bare at max rate": (list(range(101)), series.get("baseline_ms_percentiles", []))},
             logy=True),
    ]
    return write(directory, "ingest", report, header=("figure", "value"),
                 rows=[(k.replace("_", " "), report[k]) for k in keys], plots=plots,
                 notes=[f"{report['seconds']:.0f} s per phase, {report['connections']} connections"])
