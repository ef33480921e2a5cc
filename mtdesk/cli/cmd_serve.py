"""``mtdesk serve``: the Ray deployment of the actors, then the HTTP server (webhooks,
health, metrics, admin).

Settings are read from the environment once and validated (a missing or malformed
variable stops with a message naming it, exit 2). ``--workers N`` runs N gateway
processes on one port with SO_REUSEPORT: the gateway needs no Ray, so it scales by
processes; ``/metrics`` then aggregates all workers (prometheus multiprocess mode).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable

from mtdesk.core import gctune
from mtdesk.core.settings import Settings


def start_backend(settings: Settings) -> Callable[[], None]:
    """Start (or join) Ray and the actors before the HTTP server; returns their stopper.
    The gateway workers never need Ray: they only share Redis with the actors."""
    from mtdesk.cli.backend import Backend

    backend = Backend(settings)
    print("mtdesk: starting Ray and the actors…", flush=True)
    try:
        backend.start()
    except BaseException:  # a stop signal (or a failure) half-way: stop what did start
        _stop_quietly(backend.stop)
        raise
    print(f"mtdesk: {settings.shards} conversation shards, {settings.retrieval_shards} "
          "retrieval shards, deletion and retention actors running", flush=True)
    return backend.stop


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP server (Meta webhooks, health, metrics, admin)",
        description="Run MT Desk's HTTP server. Configuration comes from MTDESK_* variables.",
    )
    p.add_argument("--host", help="listen address (default: MTDESK_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: MTDESK_PORT or 8080)")
    p.add_argument(
        "--workers", type=int, default=1,
        help="gateway processes sharing the port with SO_REUSEPORT (default 1)",
    )
    p.add_argument(
        "--no-actors", action="store_true",
        help="HTTP only: the actors run elsewhere (another `mtdesk serve` joined to the same "
             "Redis and Ray cluster); scale gateways and shards separately",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.require_serve()
    asyncio.run(prepare_store(settings))
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if args.workers < 1:
        print("mtdesk: error: --workers: must be at least 1", file=sys.stderr)
        return 2
    _stop_on_signals()
    try:
        stop_backend = (lambda: None) if args.no_actors else start_backend(settings)
    except KeyboardInterrupt:
        return 0
    _stop_on_signals()  # again: Ray's core library installs a SIGTERM handler that aborts
    try:
        if args.workers == 1:
            run_worker(settings, host, port, reuse_port=False, metrics_dir=None)
        else:
            _run_workers(settings, host, port, args.workers)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_quietly(stop_backend)
    return 0


async def prepare_store(settings: Settings) -> None:
    """Before anything else runs: keys of an older layout renamed (single Redis), and
    the acknowledgement durability asked for checked against every master (a
    ConfigError naming MTDESK_ACK_DURABILITY stops serve with exit 2)."""
    from mtdesk.core import layout
    from mtdesk.core.durability import ack_wait
    from mtdesk.core.errors import StoreUnavailable
    from mtdesk.core.redis import UNAVAILABLE, connect_to

    redis = connect_to(settings.redis_url, cluster=settings.redis_cluster, max_connections=4)
    try:
        moved = await layout.migrate(redis)
        if moved:
            sys.stdout.write(f"mtdesk: renamed {moved} keys to the hash-tagged layout\n")
        await ack_wait(redis, settings.ack_durability, settings.ack_timeout_ms)
    except UNAVAILABLE as exc:
        raise StoreUnavailable("Redis (MTDESK_REDIS_URL) does not answer") from exc
    finally:
        await redis.aclose()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP stop the server cleanly (its Ray instance and actors
    included), also when the parent started it with SIGINT ignored (a shell's
    background job, a supervisor)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)


def _stop_quietly(stop: Callable[[], None]) -> None:
    """Run ``stop`` (bounded by its own budget) with further stop signals ignored, so a
    second SIGTERM cannot cut the clean-up short and orphan Ray's processes."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        stop()
    finally:
        if "ray" in sys.modules:  # interrupted inside ray.init: end what it started
            from mtdesk.actors import rayapi

            if rayapi.is_initialized():
                rayapi.shutdown()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(
    settings: Settings, host: str, port: int, *, reuse_port: bool, metrics_dir: str | None
) -> None:
    """Serve until SIGINT/SIGTERM in this process (one gateway worker)."""
    _install_uvloop()
    asyncio.run(_serve(settings, host, port, reuse_port=reuse_port, metrics_dir=metrics_dir))


async def _serve(
    settings: Settings, host: str, port: int, *, reuse_port: bool, metrics_dir: str | None
) -> None:
    from aiohttp import web

    from mtdesk.cli.compose import build_app
    from mtdesk.gateway.slowclients import serving_runner

    app = build_app(settings, metrics_dir=metrics_dir, expect_shards=True)
    runner = serving_runner(app, settings)  # slow clients are dropped
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    # Everything built so far lives as long as the process: keep it out of the cyclic
    # collector's scans (full collections otherwise walk it again and again under load).
    gctune.settle()
    # One write per line (print writes the text and the newline apart), so the lines of
    # --workers processes sharing one stdout never run into each other.
    sys.stdout.write(f"mtdesk: serving on http://{host}:{port} (pid {os.getpid()})\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _worker_main(settings: Settings, host: str, port: int, metrics_dir: str) -> None:
    run_worker(settings, host, port, reuse_port=True, metrics_dir=metrics_dir)


def _run_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    metrics_dir = tempfile.mkdtemp(prefix="mtdesk-metrics-")
    # prometheus-client picks its multiprocess value store from this variable when it is
    # first imported; "spawn" starts each worker fresh so it sees it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(settings, host, port, metrics_dir), daemon=False)
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds to the finally below, which stops the workers

    signal.signal(signal.SIGTERM, _stop)
    try:
        # A worker that dies takes the whole serve down (non-zero exit), so the supervisor
        # restarts it at full strength rather than it limping on with fewer workers.
        ready = multiprocessing.connection.wait([p.sentinel for p in procs])
        died = [p for p in procs if p.sentinel in ready]
        for proc in died:  # the sentinel fires a moment before the exit code is there
            proc.join(timeout=5)
        codes = [p.exitcode for p in died]
        if any(code not in (0, -signal.SIGTERM) for code in codes):
            print(f"mtdesk: a gateway worker exited (code {codes[0]}); stopping",
                  file=sys.stderr, flush=True)
            raise SystemExit(1)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
        shutil.rmtree(metrics_dir, ignore_errors=True)
