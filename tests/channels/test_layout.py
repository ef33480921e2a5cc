"""The channel modules stand on the core alone: the gateway and the shards call them,
never the other way round (docs/architecture.md; tests/test_architecture.py checks
every folder's rule)."""

from __future__ import annotations

import ast
from pathlib import Path

import mtdesk.channels

ROOT = Path(mtdesk.channels.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_channels_import_only_core_and_themselves() -> None:
    modules = sorted(ROOT.rglob("*.py"))
    assert len(modules) >= 8  # the three channels' inbound + outbound, webhook, outbound
    offending = {
        str(path.relative_to(ROOT)): name
        for path in modules
        for name in _imports(path)
        if name.startswith("mtdesk.")
        and not name.startswith(("mtdesk.core", "mtdesk.channels"))
    }
    assert offending == {}


def test_outbound_rendering_has_no_per_channel_branch() -> None:
    # Each channel's limit and body live in its own package; the shared code goes
    # through one table, so adding a channel touches no shared branch.
    for path in [ROOT / "outbound.py", *ROOT.glob("*/outbound.py")]:
        source = path.read_text(encoding="utf-8")
        assert "channel ==" not in source and "channel !=" not in source, path
