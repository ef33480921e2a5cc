"""Where actors go: one module calls Ray, the placement rule follows the operator's
choice and the cluster's custom resources, and a wrong choice is refused by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mtdesk
from mtdesk.actors.scheduling import (
    KINDS,
    MIN_CPU,
    RESOURCES,
    SHARE,
    Node,
    bundle,
    group_kind,
    group_strategy,
)
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


def test_spread_is_the_default_and_pack_packs() -> None:
    assert Settings().ray_placement == "spread"
    assert Settings.from_env({}, dotenv=None).ray_placement == "spread"
    assert Settings.from_env({"MTDESK_RAY_PLACEMENT": "PACK"}, dotenv=None).ray_placement == "pack"
    assert group_strategy("spread") == "SPREAD"
    assert group_strategy("pack") == "PACK"


def test_a_kind_is_pinned_to_the_nodes_advertising_its_resource_when_any_does() -> None:
    nodes = [A, B, C]
    assert bundle("conversation_shard", nodes, 0) == {"CPU": MIN_CPU, "mtdesk_shard": SHARE}
    assert bundle("deletion", nodes, 0) == {"CPU": MIN_CPU, "mtdesk_policy": SHARE}
    assert bundle("retention", nodes, 0) == {"CPU": MIN_CPU, "mtdesk_policy": SHARE}
    # no node advertises mtdesk_retrieval: the retrieval shards go to any node
    assert bundle("retrieval_shard", nodes, 0.5) == {"CPU": 0.5}
    assert bundle("conversation_shard", [A], 0) == {"CPU": MIN_CPU}
    assert set(RESOURCES.values()) == {"mtdesk_shard", "mtdesk_retrieval", "mtdesk_policy"}
    assert {group_kind(k) for k in KINDS} == {"conversation_shard", "retrieval_shard", "policy"}


def test_an_unknown_placement_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MTDESK_RAY_PLACEMENT": "everywhere"}, dotenv=None)
    assert info.value.variable == "MTDESK_RAY_PLACEMENT"
    assert "spread" in str(info.value) and "pack" in str(info.value)
    with pytest.raises(ValueError):
        group_strategy("everywhere")
