"""The ``mtdesk`` command. Each verb lives in a ``cmd_*.py`` module beside this one that
offers ``register(subparsers)``; this module only finds them and dispatches."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import mtdesk
import mtdesk.cli as cli_pkg
from mtdesk.core.errors import MTDeskError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtdesk", description="MT Desk: AI answers on Messenger, Instagram and WhatsApp."
    )
    parser.add_argument("--version", action="version", version=f"mtdesk {mtdesk.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"mtdesk.cli.{info.name}")
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except MTDeskError as exc:
        print(f"mtdesk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
