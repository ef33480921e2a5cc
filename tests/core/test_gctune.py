"""The collector settled for serving (mtdesk.core.gctune): start-up's objects out of its
scans, garbage made afterwards still freed. Each case runs in a fresh interpreter, as
a shard or a gateway worker does (the test session's own collector is left alone)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mtdesk.core import gctune


def _run(body: str) -> str:
    code = "import gc\nfrom mtdesk.core import gctune\n" + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_what_start_up_built_is_never_scanned_again_and_later_cycles_are_still_freed() -> None:
    out = _run("""
        import weakref
        held = [[i] for i in range(50_000)]  # what start-up builds and keeps
        gctune.settle()
        scanned = {id(o) for o in gc.get_objects()}
        assert not any(id(o) in scanned for o in held[:1000]), "start-up objects are scanned"

        class Node:
            pass

        refs = []
        for _ in range(30_000):  # cycles made while serving, then dropped
            a, b = Node(), Node()
            a.peer, b.peer = b, a
            refs.append(weakref.ref(a))
            del a, b
        gc.collect()
        print(sum(r() is not None for r in refs), gc.get_threshold()[0])
    """)
    alive, young = out.split()
    assert alive == "0"  # every unreachable cycle was freed
    assert int(young) == gctune.YOUNG_THRESHOLD


def test_cycles_are_collected_without_being_asked_while_serving() -> None:
    # The collector still runs on its own (not disabled): cycles dropped in a loop do
    # not pile up past a few young generations' worth.
    out = _run("""
        gctune.settle()

        class Node:
            pass

        most = 0
        for i in range(300_000):
            a, b = Node(), Node()
            a.peer, b.peer = b, a
            del a, b
            if i % 1000 == 0:
                most = max(most, len(gc.get_objects(generation=0)))
        print(most)
    """)
    assert int(out) <= 2 * gctune.YOUNG_THRESHOLD
