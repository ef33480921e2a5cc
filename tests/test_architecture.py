"""docs/architecture.md cannot drift from the code: the folder import rules it states are
read from its table and enforced over every module under ``mtdesk/``, and every file and
function its tables name exists."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# The checkout's files, whatever way the package is installed.
REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mtdesk"
DOC = REPO / "docs" / "architecture.md"

# Third-party libraries one module (or two) owns; stated in the doc's "Library rules".
LIBRARY_OWNERS = {
    "ray": {"actors/rayapi.py"},
    "openai": {"actors/llm.py", "retrieval/embedders.py"},
}

_SPAN = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Rule:
    """What one folder may import: ``folders`` whole, ``modules`` only inside functions;
    ``folders is None`` means everything."""

    folders: frozenset[str] | None
    modules: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    module: str  # absolute, e.g. "mtdesk.core.keys" or "ray"
    in_function: bool


def _rows(heading: str) -> list[list[str]]:
    """The body rows of the first table whose header starts with ``heading``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def doc_rules() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for folder_cell, allowed, _why in _rows("| folder | may import"):
        folder = _SPAN.findall(folder_cell)[0].strip("/")
        if allowed == "everything":
            rules[folder] = Rule(None)
            continue
        if allowed == "nothing":
            rules[folder] = Rule(frozenset())
            continue
        names = _SPAN.findall(allowed)
        rules[folder] = Rule(frozenset(n for n in names if "." not in n),
                             frozenset(f"mtdesk.{n}" for n in names if "." in n))
    return rules


def imports_of(source: str, module_path: tuple[str, ...]) -> list[Import]:
    """Every import in ``source`` (the module at ``mtdesk/<module_path>``), absolute."""
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, inside) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ["mtdesk", *module_path[:-1]]
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join([*base, child.module] if child.module else base)
                else:
                    module = child.module or ""
                if module == "mtdesk":  # ``from mtdesk import core``
                    found.extend(Import(f"mtdesk.{a.name}", inside) for a in child.names)
                else:
                    found.append(Import(module, inside))
            visit(child, inside)

    visit(tree, False)
    return found


def violations(folder: str, imports: list[Import], rules: dict[str, Rule]) -> list[str]:
    rule = rules[folder]
    bad = []
    for imp in imports:
        parts = imp.module.split(".")
        if parts[0] != "mtdesk" or len(parts) < 2 or rule.folders is None:
            continue
        target = parts[1]
        if target == folder or target in rule.folders:
            continue
        if imp.in_function and any(imp.module == m or imp.module.startswith(m + ".")
                                   for m in rule.modules):
            continue
        bad.append(imp.module + ("" if imp.in_function else " (at module level)"))
    return bad


def _modules() -> list[Path]:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 100
    return modules


def test_every_folder_has_a_rule_in_the_doc() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(doc_rules())


def test_every_module_imports_only_what_its_folder_may() -> None:
    rules = doc_rules()
    offending: dict[str, list[str]] = {}
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) == 1:  # mtdesk/__init__.py, the __main__ entry point
            continue
        found = violations(rel.parts[0], imports_of(path.read_text(encoding="utf-8"), rel.parts),
                           rules)
        if found:
            offending[str(rel)] = found
    assert offending == {}


def test_the_rule_check_reports_a_forbidden_import() -> None:
    # A channel reaching into the gateway, a benchmark importing the CLI at module level,
    # a relative import out of core: each is reported; the allowed forms are not.
    rules = doc_rules()
    channel = "from mtdesk.gateway import routes\nfrom mtdesk.core import keys\n"
    assert violations("channels", imports_of(channel, ("channels", "x.py")), rules) == [
        "mtdesk.gateway (at module level)"]
    bench = ("from mtdesk.cli.backend import Backend\n"
             "def run() -> None:\n    from mtdesk.cli.backend import Backend\n"
             "    from mtdesk.cli.main import main\n")
    assert violations("benchmarks", imports_of(bench, ("benchmarks", "x.py")), rules) == [
        "mtdesk.cli.backend (at module level)", "mtdesk.cli.main"]
    core = "from ..actors import work\nfrom . import keys\n"
    assert violations("core", imports_of(core, ("core", "x.py")), rules) == [
        "mtdesk.actors (at module level)"]


def test_one_module_owns_each_library() -> None:
    for library, owners in LIBRARY_OWNERS.items():
        users = {
            str(path.relative_to(PACKAGE))
            for path in _modules()
            for imp in imports_of(path.read_text(encoding="utf-8"),
                                  path.relative_to(PACKAGE).parts)
            if imp.module.split(".")[0] == library
        }
        assert users == owners, library


def _defined(path: Path) -> set[str]:
    """Top-level functions and classes of ``path``, and ``Class.method`` names."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
    return names


def test_every_file_and_function_the_doc_names_exists() -> None:
    all_classes = {name for path in _modules() for name in _defined(path) if "." not in name}
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    checked = 0
    missing: list[str] = []
    for row in rows:
        spans = _SPAN.findall(row)
        files = [s for s in spans if re.fullmatch(r"[\w/]+\.(py|lua)", s)]
        for f in files + [s for s in spans if re.fullmatch(r"[\w/]+/", s)]:
            if not (PACKAGE / f).exists():
                missing.append(f)
        defined = set().union(*(_defined(PACKAGE / f) for f in files
                                if f.endswith(".py") and (PACKAGE / f).exists()))
        for span in spans:
            if span.endswith("()"):
                if span[:-2] not in defined:
                    missing.append(f"{span} in none of {files}")
                checked += 1
            elif re.fullmatch(r"[A-Z][a-z]+[A-Za-z]*", span):
                if span not in all_classes:
                    missing.append(span)
                checked += 1
    assert missing == [], "\n".join(missing)
    assert checked > 40
