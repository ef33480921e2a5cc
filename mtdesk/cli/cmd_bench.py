"""``mtdesk bench <name>``: benchmarks (load generators and reports, not tests).

Every module in :mod:`mtdesk.benchmarks` that offers ``register_bench(subparsers)`` is
found here and adds its own sub-command (like ``cmd_*`` modules do for ``mtdesk``).
Such a module must keep its top-level imports light: they run on every ``mtdesk`` call.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import mtdesk.benchmarks as benchmarks_pkg


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark (ingest, …) and report its figures",
        description="Benchmarks: each prints a summary and can write JSON (--json PATH).",
    )
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    for info in sorted(pkgutil.iter_modules(benchmarks_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{benchmarks_pkg.__name__}.{info.name}")
        register_bench = getattr(module, "register_bench", None)
        if callable(register_bench):
            register_bench(sub)

    def no_bench(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=no_bench)
