"""Where actors go: one module calls Ray, the placement rule follows the operator's
choice and the cluster's custom resources, and a wrong choice is refused by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mtdesk
from mtdesk.actors.scheduling import KINDS, RESOURCES, SHARE, Node, placement_options
from mtdesk.core.errors import ConfigError
from mtdesk.core.settings import Settings

PACKAGE = Path(mtdesk.__file__).resolve().parent


def _imports_ray(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
            return True
    return False


def test_only_the_ray_module_imports_ray() -> None:
    importers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _imports_ray(p))
    assert importers == ["actors/rayapi.py"]


A = Node("a" * 56, "10.0.0.1", {"CPU": 2.0})
B = Node("b" * 56, "10.0.0.2", {"CPU": 2.0, "mtdesk_shard": 1.0})
C = Node("c" * 56, "10.0.0.3", {"CPU": 2.0, "mtdesk_shard": 1.0, "mtdesk_policy": 1.0})


def test_spread_is_the_default_and_deals_each_kind_round_robin_over_the_nodes() -> None:
    assert Settings().ray_placement == "spread"
    assert Settings.from_env({}, dotenv=None).ray_placement == "spread"
    assert Settings.from_env({"MTDESK_RAY_PLACEMENT": "PACK"}, dotenv=None).ray_placement == "pack"
    nodes = [Node(A.node_id, A.address, {"CPU": 2.0}), Node(B.node_id, B.address, {"CPU": 1.0})]
    for kind in KINDS:
        where = [placement_options(kind, "spread", nodes[::-1], i)["node_affinity"]
                 for i in range(4)]
        assert where == [A.node_id, B.node_id, A.node_id, B.node_id]  # stable order
        assert placement_options(kind, "pack", nodes, 3) == {}  # Ray fills nodes itself
    # one node (or none known): Ray's SPREAD, no affinity to name
    assert placement_options("conversation_shard", "spread", [A], 5) == {
        "scheduling_strategy": "SPREAD"}


def test_a_kind_is_pinned_to_the_nodes_advertising_its_resource_when_any_does() -> None:
    nodes = [A, B, C]
    shards = [placement_options("conversation_shard", "spread", nodes, i) for i in range(3)]
    assert [s["node_affinity"] for s in shards] == [B.node_id, C.node_id, B.node_id]
    assert all(s["resources"] == {"mtdesk_shard": SHARE} for s in shards)
    assert placement_options("deletion", "spread", nodes, 0) == {
        "resources": {"mtdesk_policy": SHARE}, "scheduling_strategy": "SPREAD"}
    assert placement_options("retention", "pack", nodes) == {"resources": {"mtdesk_policy": SHARE}}
    # no node advertises mtdesk_retrieval: the retrieval shards go to any node
    assert placement_options("retrieval_shard", "spread", nodes, 2)["node_affinity"] == C.node_id
    assert set(RESOURCES.values()) == {"mtdesk_shard", "mtdesk_retrieval", "mtdesk_policy"}


def test_an_unknown_placement_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MTDESK_RAY_PLACEMENT": "everywhere"}, dotenv=None)
    assert info.value.variable == "MTDESK_RAY_PLACEMENT"
    assert "spread" in str(info.value) and "pack" in str(info.value)
    with pytest.raises(ValueError):
        placement_options("conversation_shard", "everywhere", [])
