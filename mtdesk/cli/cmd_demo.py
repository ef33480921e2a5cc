"""``mtdesk demo``: the whole product on its offline defaults (see :mod:`mtdesk.cli.demo`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole product offline with a sample business and simulated customers",
        description=(
            "Start Redis (its own, when redis-server is installed), Ray, the gateway, the "
            "actors and a fake Graph API; provision a sample business on Messenger, "
            "Instagram and WhatsApp with a knowledge base; play customers and print the "
            "transcript. No API keys needed; with e.g. MTDESK_OPENROUTER_API_KEY set, the "
            "bot uses that provider."),
    )
    p.add_argument("--no-wait", action="store_true",
                   help="exit after the scripted conversation instead of serving until Ctrl-C")
    p.add_argument("--port", type=int, help="HTTP port (default: a free one)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main(wait=not args.no_wait, port=args.port))
    except KeyboardInterrupt:
        return 0


async def _main(*, wait: bool, port: int | None) -> int:
    """The demo until it ends, or until SIGINT/SIGTERM/SIGHUP: then every part it started
    (its Redis, Ray and the actors, the HTTP server) is stopped before it exits.

    The handlers are installed whatever the signals' inherited state: a shell starts
    background jobs with SIGINT ignored, and the demo must still stop on it."""
    from mtdesk.cli.demo import run_demo

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if not stopping:  # a second signal must not cut the clean-up short
            stopping = True
            task.cancel()

    def install() -> None:
        # Again once Ray is up: its core library replaces the SIGTERM handler with one
        # that aborts the process, which would leave Ray's processes and Redis behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop)

    install()
    try:
        return await run_demo(wait=wait, port=port, on_ray_started=install)
    except asyncio.CancelledError:
        return 0
