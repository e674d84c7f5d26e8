"""The package has no import cycle: its intra-package import graph is acyclic.

Every module of ``pyro_moe/`` is parsed with :mod:`ast` (nothing is imported) and EVERY
import statement counts -- at module level, inside functions and methods (a function-level
import is still a dependency; it only runs later, which is how a cycle hides), under
``try``/``if``/``else`` -- with one exception: imports under ``if TYPE_CHECKING:`` (the
``if`` branch only) never run and serve annotations alone, so they are counted out (and
reported apart).

Resolution to module names:

* relative imports are taken from the importing module's package (``__init__.py`` is its own
  package);
* ``import a.b.c`` is an edge to ``a.b.c`` (the parent packages it initializes are not
  edges: every module would otherwise depend on ``pyro_moe/__init__.py``);
* ``from P import x``: an edge to the submodule ``P.x`` when there is one (so ``from . import
  updates`` is an edge to the submodule ``updates``, not to the package, and a package's
  ``__init__`` importing its own submodules is no cycle); otherwise an edge to ``P`` -- for a
  package, its ``__init__``, which runs and imports whatever it re-exports (so ``from .cavi
  import fit_cavi`` goes through ``pyro_moe/cavi/__init__.py``, and a submodule importing a
  name from its own package's ``__init__`` is a cycle when that ``__init__`` imports it).

A cycle is a strongly connected component of two or more modules (Tarjan). The failure
message names each cycle's modules and the edges inside it, with file, line and where the
import sits. ``python tests/test_imports.py`` prints the same report.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pyro_moe"


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    line: int
    where: str  # "module", "function" or "TYPE_CHECKING"
    text: str  # the import as written
    file: str  # the importing file, relative to the root


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path | None]:
    """Module name -> file (``None`` for a namespace package, a folder without __init__)."""
    found: dict[str, Path | None] = {}
    base = root / package
    for path in sorted(base.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
        for i in range(1, len(parts)):  # folders above it are packages, maybe namespace ones
            found.setdefault(".".join(parts[:i]), None)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """(node, where) for every Import/ImportFrom, where = module / function / TYPE_CHECKING."""
    out = []

    def visit(node, where):
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append((node, where))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "TYPE_CHECKING")
            for child in node.orelse:
                visit(child, where)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            where = "TYPE_CHECKING" if where == "TYPE_CHECKING" else "function"
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "module")
    return out


def _package_of(name: str, path: Path | None) -> str:
    return name if path is not None and path.name == "__init__.py" else name.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, name: str, path: Path | None) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(name, path).split(".")
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _source(text_of: ast.AST) -> str:
    return ast.unparse(text_of)


def analyse(root: Path = ROOT, package: str = PACKAGE) -> list[Edge]:
    """Every intra-package import edge of ``package`` under ``root``."""
    mods = modules(root, package)
    rel = {name: path.relative_to(root).as_posix() for name, path in mods.items() if path}
    trees = {
        name: ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, path in mods.items()
        if path is not None
    }

    def target_of(parent: str, attr: str) -> str | None:
        """The module ``from parent import attr`` depends on, or None outside the package."""
        sub = f"{parent}.{attr}"
        return sub if sub in mods else parent if parent in mods else None

    edges = []
    for name, tree in trees.items():
        for node, where in _imports(tree):
            if isinstance(node, ast.Import):
                targets = []
                for alias in node.names:
                    mod = alias.name
                    while mod and mod not in mods:
                        mod = mod.rpartition(".")[0]
                    targets.append(mod or None)
            else:
                source = _absolute(node, name, mods[name])
                targets = [target_of(source, alias.name) for alias in node.names]
            for target in dict.fromkeys(targets):
                if target and target != name:
                    edges.append(Edge(name, target, node.lineno, where, _source(node), rel[name]))
    return edges


def function_level_imports(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    """``file:line: import`` for every import statement inside a function, of any module."""
    found = []
    for path in modules(root, package).values():
        if path is not None:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            rel = path.relative_to(root).as_posix()
            found += [
                f"{rel}:{node.lineno}: {_source(node)}"
                for node, where in _imports(tree)
                if where == "function"
            ]
    return found


def strongly_connected(nodes, edges) -> list[list[str]]:
    """Tarjan's strongly connected components of the directed graph (nodes, edges)."""
    graph = {n: sorted({e.target for e in edges if e.source == n}) for n in nodes}
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(comps)


def cycles(edges: list[Edge] | None = None) -> list[list[str]]:
    """The import cycles: strongly connected components of two or more modules."""
    edges = analyse() if edges is None else edges
    runtime = [e for e in edges if e.where != "TYPE_CHECKING"]
    nodes = {e.source for e in runtime} | {e.target for e in runtime}
    return [c for c in strongly_connected(nodes, runtime) if len(c) > 1]


def report(edges: list[Edge] | None = None, root: Path = ROOT, package: str = PACKAGE) -> str:
    """The cycles (each with its edges) and the count of function-level imports."""
    edges = analyse(root, package) if edges is None else edges
    found = cycles(edges)
    lines = [f"{len(found)} import cycle(s) in {package}/"]
    for i, comp in enumerate(found, 1):
        members = set(comp)
        lines.append(f"cycle {i} ({len(comp)} modules): {', '.join(comp)}")
        for e in edges:
            if e.source in members and e.target in members and e.where != "TYPE_CHECKING":
                lines.append(
                    f"    {e.source} -> {e.target}  ({e.where} import, {e.file}:{e.line}: {e.text})"
                )
    function_level = [e for e in edges if e.where == "function"]
    statements = {(e.source, e.line) for e in function_level}
    type_only = {(e.source, e.line) for e in edges if e.where == "TYPE_CHECKING"}
    lines.append(
        f"{len(function_level_imports(root, package))} function-level import statements, "
        f"{len(statements)} of them intra-package "
        f"({len(function_level)} edges) in {len({e.source for e in function_level})} modules; "
        f"{len(type_only)} TYPE_CHECKING-only import statements (not counted as edges)"
    )
    return "\n".join(lines)


def test_the_package_has_no_import_cycle():
    edges = analyse()
    assert edges, "no import edge found: the scan is broken"
    assert not cycles(edges), report(edges)


def test_no_cycle_even_through_type_only_imports():
    """An import under TYPE_CHECKING never runs, but a cycle through it is still two
    modules that need each other: refused too."""
    edges = analyse()
    nodes = {e.source for e in edges} | {e.target for e in edges}
    found = [c for c in strongly_connected(nodes, edges) if len(c) > 1]
    assert not found, found


def private_imports(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    """``file:line: import`` for every import of a private name (``_x``, not a dunder) from
    another module of the package: a private name is its module's own business."""
    mods = modules(root, package)
    found = []
    for name, path in mods.items():
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, _ in _imports(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(node, name, path)
            if source != package and not source.startswith(package + "."):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source != name:
                    rel = path.relative_to(root).as_posix()
                    found.append(f"{rel}:{node.lineno}: {_source(node)}")
    return found


def test_no_private_name_is_imported_across_modules():
    assert private_imports() == []


def test_the_analysis_finds_cycles_and_resolves_imports(tmp_path):
    """The analysis itself, on a small package with three cycles."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "ns").mkdir()  # a namespace package (no __init__)
    files = {
        "__init__.py": "from .a import A\nfrom .x import X\n",
        "a.py": "from typing import TYPE_CHECKING\n"
        "from . import c\n"
        "A = 1\n"
        "if TYPE_CHECKING:\n    from .b import B\n"
        "else:\n    import pkg.d\n",
        "b.py": "def f():\n    from pkg.a import A\n    return A\n",
        "c.py": "class C:\n    def g(self):\n        from .sub import helper\n",
        "d.py": "import os\nimport pkg.ns.e\n",
        "x.py": "X = 1\nfrom . import A\n",  # a name from its own package's __init__
        "sub/__init__.py": "from .impl import helper\n",
        "sub/impl.py": "def helper():\n    from ..b import f\n",
        "ns/e.py": "from .. import d\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    edges = analyse(tmp_path, "pkg")
    pairs = {(e.source, e.target, e.where) for e in edges}
    assert pairs == {
        ("pkg", "pkg.a", "module"),
        ("pkg", "pkg.x", "module"),
        ("pkg.a", "pkg.c", "module"),  # from . import c: the submodule, not the package
        ("pkg.a", "pkg.b", "TYPE_CHECKING"),
        ("pkg.a", "pkg.d", "module"),  # the else branch runs
        ("pkg.b", "pkg.a", "function"),
        ("pkg.c", "pkg.sub", "function"),  # a method's import; helper is no submodule
        ("pkg.d", "pkg.ns.e", "module"),  # os is not ours
        ("pkg.x", "pkg", "module"),
        ("pkg.sub", "pkg.sub.impl", "module"),
        ("pkg.sub.impl", "pkg.b", "function"),
        ("pkg.ns.e", "pkg.d", "module"),
    }
    assert cycles(edges) == [
        ["pkg", "pkg.x"],
        ["pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.impl"],
        ["pkg.d", "pkg.ns.e"],
    ]
    text = report(edges, tmp_path, "pkg")
    assert text.startswith("3 import cycle(s) in pkg/")
    assert "3 function-level import statements, 3 of them intra-package" in text
    assert "pkg.b -> pkg.a  (function import, pkg/b.py:2: from pkg.a import A)" in text
    # an import under TYPE_CHECKING only makes no cycle
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"
    )
    assert cycles(analyse(tmp_path, "pkg")) == [["pkg", "pkg.x"], ["pkg.d", "pkg.ns.e"]]


#: the general core: it knows nothing of the curve application
CORE = (
    "pyro_moe.fitting",
    "pyro_moe.result",
    "pyro_moe.experts",
    "pyro_moe.search",
    "pyro_moe.selection",
    "pyro_moe.diagnostics",
    "pyro_moe.engines",
    "pyro_moe.closed_form",
)
#: the curve application and the layer under it
CURVE_SIDE = ("pyro_moe.shapes", "pyro_moe.curves")


def _within(name: str, roots) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def core_imports_of_curves(edges: list[Edge] | None = None) -> list[str]:
    """Each way a core module (:data:`CORE`, their submodules too) reaches the curve side:
    its own imports of any kind (TYPE_CHECKING-only ones included), and the modules it
    runs (module- and function-level imports, followed through the package) that do."""
    edges = analyse() if edges is None else edges
    runs: dict[str, list[Edge]] = {}
    for e in edges:
        if e.where != "TYPE_CHECKING":
            runs.setdefault(e.source, []).append(e)
    found = []
    for e in edges:
        if _within(e.source, CORE) and _within(e.target, CURVE_SIDE):
            found.append(f"{e.source} imports {e.target} ({e.file}:{e.line}: {e.text})")
    for start in sorted({e.source for e in edges if _within(e.source, CORE)}):
        seen, stack, via = {start}, [start], {start: None}
        while stack:
            here = stack.pop()
            for e in runs.get(here, []):
                if e.target in seen or (_within(e.target, CURVE_SIDE) and here == start):
                    continue
                if _within(e.target, CURVE_SIDE):
                    path, node = [e.target], here
                    while node is not None:
                        path.append(node)
                        node = via[node]
                    found.append(" -> ".join(reversed(path)) + f" ({e.file}:{e.line})")
                    continue
                seen.add(e.target)
                via[e.target] = here
                stack.append(e.target)
    return sorted(set(found))


def test_the_core_imports_nothing_of_the_curve_application():
    """fitting, result, experts, search, selection, diagnostics, engines and closed_form
    import neither pyro_moe.shapes nor pyro_moe.curves, directly (TYPE_CHECKING-only
    imports too) or through a module they run."""
    assert not core_imports_of_curves(), "\n".join(core_imports_of_curves())


def test_the_core_check_sees_a_type_only_import(tmp_path):
    fake = [Edge("pyro_moe.result", "pyro_moe.shapes.geometry", 3, "TYPE_CHECKING",
                 "from .shapes.geometry import Geometry", "pyro_moe/result.py")]  # fmt: skip
    assert core_imports_of_curves(fake)
    chain = [
        Edge("pyro_moe.fitting", "pyro_moe.helper", 1, "function", "x", "pyro_moe/fitting.py"),
        Edge("pyro_moe.helper", "pyro_moe.curves.result", 1, "module", "y", "pyro_moe/helper.py"),
    ]
    assert core_imports_of_curves(chain) == [
        "pyro_moe.fitting -> pyro_moe.helper -> pyro_moe.curves.result (pyro_moe/helper.py:1)"
    ]


if __name__ == "__main__":
    print(report())
