"""The package reads top to bottom (docs/architecture.md): every module's imports, read with
`ast` (function-level lazy imports and `TYPE_CHECKING` ones included, nothing imported),
go to its own floor or lower ones, no modules import each other round a circle, and nothing
in the library imports the command line. The floors are read from docs/architecture.md, so
the document and the check cannot drift apart."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "tspo_eval"
CLI = "cli"


def floors_from_doc(path: Path) -> dict[str, int]:
    """{module or package name (relative to the package, "" for its root): floor} from the table's rows."""
    floors: dict[str, int] = {}
    for line in path.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\b[^|]*\|([^|]*)\|", line)
        if row:
            for name in re.findall(r"`([\w.]+)`", row.group(2)):
                floors["" if name == PACKAGE else name] = int(row.group(1))
    return floors


def module_files(root: Path) -> dict[str, Path]:
    """{dotted name relative to the package ("" for its __init__): file} of every module under `root`."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its file (relative names resolved; `from X import Y`
    counts as the module X.Y when that is a module, else as X)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                if node.level - 1 > len(package):
                    continue  # above the package: not ours
                base = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            named = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in named if _relative(t) in modules]
            if len(targets) < len(named):  # names defined in `base` itself
                targets.append(base)
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.add(_nearest(_relative(target), modules))
    found.discard(name)
    return found


def _relative(dotted: str) -> str:
    return dotted[len(PACKAGE) + 1:] if dotted.startswith(PACKAGE + ".") else ""


def _nearest(name: str, modules: set[str]) -> str:
    """`name`, or its nearest enclosing module (`import pkg.mod.attr`-like spellings)."""
    while name not in modules and name:
        name = name.rpartition(".")[0]
    return name


def floor_of(name: str, floors: dict[str, int]) -> int | None:
    """The floor of the longest table name that is `name` or a package holding it."""
    parts = name.split(".") if name else []
    for n in range(len(parts), -1, -1):
        key = ".".join(parts[:n])
        if key in floors and (n or key == name):
            return floors[key]
    return None


def graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def layer_violations(edges: dict[str, set[str]], floors: dict[str, int]) -> list[str]:
    """Modules without a floor, and imports of a higher floor."""
    problems = [f"{m or PACKAGE}: on no floor (add it to docs/architecture.md)" for m in edges
                if floor_of(m, floors) is None]
    for module, targets in sorted(edges.items()):
        mine = floor_of(module, floors)
        for target in sorted(targets):
            theirs = floor_of(target, floors)
            if None not in (mine, theirs) and theirs > mine:
                problems.append(f"{module} (floor {mine}) imports {target} (floor {theirs})")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def cli_importers(edges: dict[str, set[str]]) -> list[str]:
    in_cli = lambda m: m == CLI or m.startswith(CLI + ".")  # noqa: E731
    return [f"{m} imports {t}" for m, targets in sorted(edges.items()) if not in_cli(m)
            for t in sorted(targets) if in_cli(t)]


# ----------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def package_graph() -> dict[str, set[str]]:
    return graph(REPO / PACKAGE)


@pytest.fixture(scope="module")
def floors() -> dict[str, int]:
    table = floors_from_doc(REPO / "docs" / "architecture.md")
    assert table.get(CLI) == max(table.values()) and table.get("") == 0, table
    return table


def test_no_module_imports_a_higher_floor(package_graph, floors):
    assert layer_violations(package_graph, floors) == []


def test_no_import_cycle(package_graph):
    assert cycles(package_graph) == []


def test_nothing_in_the_library_imports_the_command_line(package_graph):
    assert cli_importers(package_graph) == []
    assert {"cli.evaluation", "cli.training", "cli.vlmeval"} <= package_graph[CLI]  # the graph is read at all


def test_every_command_is_in_the_command_line_layer():
    """Command functions (`cmd_*`) live in `tspo_eval/cli/` only: the adapters and stages hold none."""
    outside = [f"{name}.{node.name}" for name, path in module_files(REPO / PACKAGE).items()
               if not (name == CLI or name.startswith(CLI + "."))
               for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)
               and node.name.startswith("cmd_")]
    assert outside == []


# ----------------------------------------------------------------------------- the checker itself
def test_the_checker_sees_lazy_relative_and_absolute_imports_and_cycles(tmp_path):
    """A made-up package with one fault of each kind: every one is reported, with the right names."""
    root = tmp_path / PACKAGE
    for name, text in {
        "__init__.py": "",
        "low.py": "def f():\n    from .high import g  # lazy, upward\n",
        "high.py": "from . import low\n",
        "sub/__init__.py": "",
        "sub/a.py": "from ..sub import b\n",
        "sub/b.py": "import tspo_eval.sub.a\n",
        "lib.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli.main import x\n",
        "cli/__init__.py": "from .main import main\n",
        "cli/main.py": "from ..high import g\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    edges = graph(root)
    assert edges["low"] == {"high"} and edges["high"] == {"low"}
    assert edges["sub.a"] == {"sub.b"} and edges["sub.b"] == {"sub.a"}
    assert edges["cli"] == {"cli.main"} and edges["lib"] == {"cli.main"}
    floors = {"": 0, "low": 0, "sub": 0, "lib": 0, "high": 1, "cli": 2}
    assert layer_violations(edges, floors) == ["lib (floor 0) imports cli.main (floor 2)",
                                               "low (floor 0) imports high (floor 1)"]
    assert cycles(edges) == [["high", "low"], ["sub.a", "sub.b"]]
    assert cli_importers(edges) == ["lib imports cli.main"]
    assert set(layer_violations(edges, {"": 0, "cli": 2})) == {f"{m}: on no floor (add it to docs/architecture.md)"
                                                               for m in ("low", "high", "sub", "sub.a", "sub.b", "lib")}
