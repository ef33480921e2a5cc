"""The cyclic garbage collector, set for a long-lived server process.

A shard or a gateway worker builds most of what it holds once, at start-up (Ray, the
providers' SDKs, the language model, the compiled scripts): hundreds of thousands of
objects that live as long as the process. Python's collector walks them again in every
full collection, and a message's path allocates enough (HTTP requests and responses,
pydantic models in the SDKs, Redis replies) to start a young collection every few
hundred objects. :func:`settle` moves what exists at the end of start-up out of the
collector's sight (``gc.freeze``: those objects are never scanned again nor freed) and
lets the young generation grow ``young_threshold`` objects between its collections
(700 by default) — what lives shortly (most of a message's objects) is freed by its
reference count before a collection sees it, so fewer collections find the same garbage.
"""

from __future__ import annotations

import gc

# Objects allocated (less those freed) between two young collections; Python's own
# default is 700. Memory held by unreachable cycles grows at most by this many objects.
YOUNG_THRESHOLD = 10_000


def settle(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Start-up is over: collect once, freeze what is left, collect young objects less
    often. Call once, when the process is about to serve."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
