"""The modules of ftp_jax import one another without a cycle.

The graph is read from the source (``ast``), without importing anything: an edge
``a -> b`` for every import at the top level of module ``a`` (inside ``if``/``try``
blocks too, ``if TYPE_CHECKING:`` included: a module that names another only for
its annotations still depends on it), and none for the imports inside functions.
``from package import name`` is an edge to the submodule ``package.name`` when
there is one, else to the package. A package is not an implicit dependency of its
submodules: importing ``a.b.c`` runs ``a/b/__init__.py`` first, but the package's
``__init__`` importing its own submodules is how packages are written, not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "ftp_jax"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _module_files() -> dict[str, Path]:
    """Every module of the package: its dotted name -> its file."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: module level, and in
    ``if``/``try``/``with`` blocks there; not in functions or classes."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    pending += child.body if isinstance(child, ast.ExceptHandler) else [child]
    return found


def _imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that module ``name`` imports at its top level."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the module's package, `level` up
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        targets |= {c for c in candidates if c in modules and c != name}
    return targets


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at its top level."""
    modules = _module_files()
    return {name: _imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None if it is acyclic."""
    state: dict[str, str] = {}  # "open" on the current path, "done" when finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["ftp_jax._ftp"], "the graph should cover the package"
    cycle = find_cycle(graph)
    assert cycle is None, (
        "an import cycle inside ftp_jax: "
        + " -> ".join(cycle or [])
        + ". Make the dependency one-way: move what both need into a module that "
        "neither imports back."
    )


def test_the_run_config_does_not_import_the_method_builders():
    """The regression of issue 22: train/config.py and train/methods.py imported each
    other; the run's config now comes before the builders that read it."""
    graph = import_graph()
    assert "ftp_jax.train.methods" not in graph["ftp_jax.train.config"]
    assert "ftp_jax.train.config" in graph["ftp_jax.train.methods"]


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_graph_reads_type_checking_and_relative_imports(tmp_path):
    """``if TYPE_CHECKING:`` imports count; imports inside functions do not."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from ftp_jax.pkg.other import Thing\n"
        "def f():\n"
        "    import ftp_jax.pkg.lazy\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    names = ("mod", "sibling", "other", "lazy")
    modules = {f"ftp_jax.pkg.{name}": path for name in names}
    assert _imported_modules("ftp_jax.pkg.mod", path, modules) == {
        "ftp_jax.pkg.sibling",
        "ftp_jax.pkg.other",
    }
