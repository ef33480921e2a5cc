"""Where the product's Ray actors run: the placement rule, pure (no Ray import).

The operator picks a strategy with ``MTDESK_RAY_PLACEMENT``:

- ``spread`` (default): the actors of one kind are spread over the nodes;
- ``pack``: packed onto as few nodes as fit (fewer processes spread thin; a small
  cluster or one machine).

How: each kind's actors are one Ray placement group with one bundle per actor (strategy
``SPREAD`` or ``PACK``), each actor in its bundle. When a node is lost Ray moves its
bundles to live nodes and restarts their actors there. (Placing single actors did not
hold: Ray's ``SPREAD`` actor strategy and *soft* node affinity both put two shards on one
of two idle nodes in our drill; hard affinity would keep a lost node's actors from
restarting anywhere else.)

Pinning to node types: a node that advertises a custom resource named for a kind
(``ray start --resources '{"mtdesk_shard": 1}'``) gets every actor of that kind once any
node of the cluster advertises it; each actor asks for :data:`SHARE` of the resource, so
one unit holds up to 1,000 actors. A cluster without the resource places the kind on
any node. If every node with the resource is lost, that kind's actors wait (Ray keeps
them pending) until such a node joins again: that is what pinning means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

Kind = Literal["conversation_shard", "retrieval_shard", "deletion", "retention"]
KINDS: tuple[Kind, ...] = ("conversation_shard", "retrieval_shard", "deletion", "retention")
STRATEGIES = ("spread", "pack")

# The custom resource names an operator gives the nodes meant for each kind.
RESOURCES: dict[Kind, str] = {
    "conversation_shard": "mtdesk_shard",
    "retrieval_shard": "mtdesk_retrieval",
    "deletion": "mtdesk_policy",
    "retention": "mtdesk_policy",
}
SHARE = 0.001
MIN_CPU = 0.01


class Node(msgspec.Struct, frozen=True):
    node_id: str
    address: str
    resources: dict[str, float]


def group_kind(kind: Kind) -> str:
    """Actors placed together as one group: the two policy actors share one."""
    return "policy" if kind in ("deletion", "retention") else kind


def bundle(kind: Kind, nodes: Sequence[Node], num_cpus: float) -> dict[str, float]:
    """What one actor of ``kind`` reserves: its CPU (at least :data:`MIN_CPU`: Ray refuses
    an empty reservation) and, when any node advertises the kind's resource, a share of
    it, so the actor can only go to such nodes."""
    out = {"CPU": max(float(num_cpus), MIN_CPU)}
    resource = RESOURCES[kind]
    if any(n.resources.get(resource, 0.0) > 0 for n in nodes):
        out[resource] = SHARE
    return out


def group_strategy(strategy: str) -> str:
    """The Ray placement-group strategy of ``MTDESK_RAY_PLACEMENT``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"placement strategy must be one of {STRATEGIES}, not {strategy!r}")
    return "SPREAD" if strategy == "spread" else "PACK"
