"""Where the product's Ray actors run: the placement rule, pure (no Ray import).

The operator picks a strategy with ``MTDESK_RAY_PLACEMENT``:

- ``spread`` (default): Ray's ``SPREAD`` scheduling strategy, so the shards of one kind
  land on as many nodes as there are (a lost node takes only its share with it);
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

from collections.abc import Mapping
from typing import Any, Literal

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


def placement_options(kind: Kind, strategy: str,
                      cluster_resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray actor options placing an actor of ``kind``: a share of the kind's custom
    resource when the cluster has it, and the scheduling strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"placement strategy must be one of {STRATEGIES}, not {strategy!r}")
    options: dict[str, Any] = {}
    resource = RESOURCES[kind]
    if cluster_resources.get(resource, 0.0) > 0:
        options["resources"] = {resource: SHARE}
    if strategy == "spread":
        options["scheduling_strategy"] = "SPREAD"
    return options
