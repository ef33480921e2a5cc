"""Where the product's Ray actors run: the placement rule, pure (no Ray import).

The operator picks a strategy with ``MTDESK_RAY_PLACEMENT``:

- ``spread`` (default): the actors of one kind are dealt round-robin over the live nodes
  that may hold them (actor ``i`` on node ``i % N``, nodes in a stable order) with Ray's
  *soft* node affinity, so a lost node takes only its share with it and its actors restart
  on any live node; with one eligible node, Ray's ``SPREAD`` strategy (Ray's own SPREAD
  alone is best effort: two shards were seen on one of two idle nodes);
- ``pack``: Ray's default scheduling (fills the first nodes; fewer processes per node
  spread, useful on a small cluster or one machine).

Pinning to node types: a node that advertises a custom resource named for a kind
(``ray start --resources '{"mtdesk_shard": 1}'``) gets every actor of that kind once any
node of the cluster advertises it; each actor asks for :data:`SHARE` of the resource, so
one unit holds up to 1,000 actors. A cluster without the resource places the kind on
any node. If every node with the resource is lost, that kind's actors wait (Ray keeps
them pending) until such a node joins again: that is what pinning means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

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


class Node(msgspec.Struct, frozen=True):
    node_id: str
    address: str
    resources: dict[str, float]


def placement_options(kind: Kind, strategy: str, nodes: Sequence[Node],
                      index: int = 0) -> dict[str, Any]:
    """Ray actor options placing actor ``index`` of ``kind`` among the live ``nodes``: a
    share of the kind's custom resource when any node has it, and where to go. The key
    ``node_affinity`` (a node id, soft) is for :mod:`mtdesk.actors.rayapi` to turn into
    Ray's strategy object; ``scheduling_strategy`` is Ray's own."""
    if strategy not in STRATEGIES:
        raise ValueError(f"placement strategy must be one of {STRATEGIES}, not {strategy!r}")
    options: dict[str, Any] = {}
    resource = RESOURCES[kind]
    eligible = list(nodes)
    if any(n.resources.get(resource, 0.0) > 0 for n in nodes):
        options["resources"] = {resource: SHARE}
        eligible = [n for n in nodes if n.resources.get(resource, 0.0) > 0]
    if strategy == "spread":
        if len(eligible) > 1:
            ordered = sorted(eligible, key=lambda n: (n.address, n.node_id))
            options["node_affinity"] = ordered[index % len(ordered)].node_id
        else:
            options["scheduling_strategy"] = "SPREAD"
    return options
