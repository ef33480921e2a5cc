"""``mtdesk demo``: the whole product on its offline defaults (see :mod:`mtdesk.cli.demo`)."""

from __future__ import annotations

import argparse
import asyncio
import logging


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
    from mtdesk.cli.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run_demo(wait=not args.no_wait, port=args.port))
    except KeyboardInterrupt:
        return 0
