"""Where actors go: one module calls Ray, the placement rule follows the operator's
choice and the cluster's custom resources, and a wrong choice is refused by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mtdesk
from mtdesk.actors.scheduling import KINDS, RESOURCES, SHARE, placement_options
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


def test_spread_is_the_default_and_pack_leaves_ray_to_fill_nodes() -> None:
    assert Settings().ray_placement == "spread"
    assert Settings.from_env({}, dotenv=None).ray_placement == "spread"
    assert Settings.from_env({"MTDESK_RAY_PLACEMENT": "PACK"}, dotenv=None).ray_placement == "pack"
    for kind in KINDS:
        assert placement_options(kind, "spread", {"CPU": 2.0}) == {"scheduling_strategy": "SPREAD"}
        assert placement_options(kind, "pack", {"CPU": 2.0}) == {}


def test_a_kind_is_pinned_to_its_nodes_only_when_the_cluster_has_its_resource() -> None:
    cluster = {"CPU": 4.0, "mtdesk_shard": 2.0, "mtdesk_policy": 1.0}
    assert placement_options("conversation_shard", "spread", cluster) == {
        "scheduling_strategy": "SPREAD", "resources": {"mtdesk_shard": SHARE}}
    assert placement_options("deletion", "pack", cluster) == {"resources": {"mtdesk_policy": SHARE}}
    assert placement_options("retention", "pack", cluster) == {"resources": {"mtdesk_policy": SHARE}}
    # no node advertises mtdesk_retrieval: the retrieval shards go anywhere
    assert placement_options("retrieval_shard", "pack", cluster) == {}
    assert set(RESOURCES.values()) == {"mtdesk_shard", "mtdesk_retrieval", "mtdesk_policy"}


def test_an_unknown_placement_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MTDESK_RAY_PLACEMENT": "everywhere"}, dotenv=None)
    assert info.value.variable == "MTDESK_RAY_PLACEMENT"
    assert "spread" in str(info.value) and "pack" in str(info.value)
    with pytest.raises(ValueError):
        placement_options("conversation_shard", "everywhere", {})
