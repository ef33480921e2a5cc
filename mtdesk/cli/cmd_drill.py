"""``mtdesk drill <name>``: failure drills against the real product on this machine.

Every module ``mtdesk.benchmarks.drill_*`` that offers ``register_drill(subparsers)`` adds
its drill here. A drill prints messages in, answered once, lost, duplicated and its
recovery time, can write JSON (``--json PATH``), and exits 1 when anything was lost or
answered twice. ``--short`` runs the form the tests use.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import mtdesk.benchmarks as benchmarks_pkg


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "drill", help="run a failure drill (node-kill, …) and report what was lost",
        description="Failure drills: each breaks part of a running deployment under load "
        "and counts every message: answered once, lost, duplicated.")
    sub = parser.add_subparsers(dest="drill", metavar="DRILL")
    for info in sorted(pkgutil.iter_modules(benchmarks_pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("drill_"):
            continue
        module = importlib.import_module(f"{benchmarks_pkg.__name__}.{info.name}")
        register_drill = getattr(module, "register_drill", None)
        if callable(register_drill):
            register_drill(sub)

    def no_drill(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=no_drill)
