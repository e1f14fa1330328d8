"""The package's import graph has no cycles, counting imports inside functions too.

Edges are the ``import napari_textsr...`` / ``from napari_textsr... import`` statements of
each module, read with :mod:`ast` (nothing is imported), at module level and inside
functions (lazy imports still make a circle of knowledge); imports under
``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "napari_textsr"
ROOT = Path(__file__).resolve().parents[1]


def _module_names(root: Path, package: str) -> dict[str, Path]:
    names = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a import b`` counts a.b when b is a module)."""
    modules = _module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", modules)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _imports(node: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Modules imported anywhere under ``node`` (functions included), except under ``if TYPE_CHECKING:``."""
    targets: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            targets |= _imports(ast.Module(body=child.orelse, type_ignores=[]), name, is_package, modules)
            continue
        if isinstance(child, ast.Import):
            targets.update(alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - child.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in child.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else base)
        targets |= _imports(child, name, is_package, modules)
    return targets


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if colour[target] == 1:
                return stack[stack.index(target) :] + [target]
            if colour[target] == 0 and (cycle := visit(target)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if colour[node] == 0 and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph(ROOT, PACKAGE)
    # The graph is really read: known edges are there.
    assert "napari_textsr.loading" in graph["napari_textsr.inference"]
    assert "napari_textsr.captioned" in graph["napari_textsr.synthetic"]
    assert "napari_textsr.synthetic" in graph["napari_textsr.training.data"]  # a lazy import counts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_lazy_circle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("thing = 1\n\ndef later():\n    from pkg import a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (package / "d.py").write_text(
        "import typing\nif typing.TYPE_CHECKING:\n    import pkg.a\nelse:\n    import pkg.c\n"
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set(), "pkg.d": {"pkg.c"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_module_imports_the_version_from_the_package_face():
    offenders = []
    for name, path in _module_names(ROOT, PACKAGE).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE and not node.level:
                if any(alias.name == "__version__" for alias in node.names):
                    offenders.append(name)
    assert offenders == []


@pytest.mark.parametrize("module", ["napari_textsr.synthetic", "napari_textsr.training.data"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    """The symptom of a circle: a module that fails when it is the first one imported."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
