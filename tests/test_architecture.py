"""No import cycles: between the modules of evalq, nor between its layer packages.

Imports are read with ``ast``: imports inside functions count (a lazy import is still a
dependency), those under ``if TYPE_CHECKING:`` do not, relative imports are resolved. The
layer of ``evalq.x.y`` is ``x``; the intended order is in docs/architecture.md.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "evalq"

Graph = dict[str, set[str]]

# The layers, lowest first; a layer imports only layers of lower tiers. ``evalq`` is the top
# package itself: ``__version__``, and public names it imports lazily, by name, on first use.
LAYER_ORDER: list[set[str]] = [
    {"evalq", "config", "errors"},
    {"data"},
    {"models"},
    {"rag"},
    {"db"},
    {"report", "broker", "fleet"},
    {"scheduler", "worker"},
    {"client"},
    {"integrations", "cli"},
    {"__main__"},
]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``evalq/db/models.py`` -> ``evalq.db.models``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The evalq modules one module's source imports (names resolved against ``known``)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import name``: name is a submodule when one exists, else an attribute
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            # ``import evalq.db.models.Run`` style leftovers: the longest known prefix
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def module_graph(root: Path = ROOT) -> Graph:
    """Module -> the evalq modules it imports, for every module under ``root``."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(paths)
    return {
        name: imported_modules(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in paths.items()
    }


def layer_of(module: str) -> str:
    """``evalq.db.models`` -> ``db``; ``evalq.config`` -> ``config``; ``evalq`` -> ``evalq``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_graph(modules: Mapping[str, set[str]]) -> Graph:
    """The module graph folded onto layers, each layer's imports of itself left out."""
    layers: Graph = {}
    for module, targets in modules.items():
        layer = layer_of(module)
        layers.setdefault(layer, set()).update(layer_of(t) for t in targets if layer_of(t) != layer)
    return layers


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (first node repeated at the end), or None when there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(error.args[1])
    return None


def test_no_cycle_between_modules() -> None:
    cycle = find_cycle(module_graph())
    assert cycle is None, f"import cycle between modules: {' -> '.join(cycle or [])}"


def test_no_cycle_between_layers() -> None:
    modules = module_graph()
    cycle = find_cycle(layer_graph(modules))
    if cycle is not None:
        # name the module imports behind each layer edge, so the fix is plain
        edges = []
        for a, b in itertools.pairwise(cycle):
            culprits = sorted(
                f"{m} -> {t}"
                for m, ts in modules.items()
                if layer_of(m) == a
                for t in ts
                if layer_of(t) == b
            )
            edges.append(f"{a} -> {b}: {', '.join(culprits)}")
        pytest.fail("import cycle between layers: " + " -> ".join(cycle) + "\n" + "\n".join(edges))


def test_layers_import_only_lower_layers() -> None:
    """Every layer edge points down the documented order (docs/architecture.md)."""
    rank = {layer: i for i, tier in enumerate(LAYER_ORDER) for layer in tier}
    layers = layer_graph(module_graph())
    unplaced = sorted(set(layers) - set(rank))
    assert not unplaced, f"place these layers in LAYER_ORDER and docs/architecture.md: {unplaced}"
    upward = sorted(
        f"{a} -> {b}" for a, targets in layers.items() for b in targets if rank[b] >= rank[a]
    )
    assert not upward, f"imports that do not point to a lower layer: {upward}"


# -- the checker itself, on small synthetic packages -----------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> Path:
    pkg = root / "evalq"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_find_cycle_names_the_cycle_of_a_tiny_graph() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_checker_sees_function_level_and_relative_imports_not_type_checking(
    tmp_path: Path,
) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "data/loader.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from evalq.rag.corpus import Corpus\n"
            ),
            "rag/__init__.py": "",
            "rag/corpus.py": "from ..data import loader\n",
        },
    )
    modules = module_graph(pkg)
    assert modules["evalq.rag.corpus"] == {"evalq.data.loader"}
    assert find_cycle(modules) is None
    assert find_cycle(layer_graph(modules)) is None

    # the same import, made lazily inside a function, is a cycle
    (pkg / "data" / "loader.py").write_text(
        "def load():\n    from evalq.rag import corpus\n    return corpus\n"
    )
    modules = module_graph(pkg)
    module_cycle = find_cycle(modules)
    assert module_cycle is not None
    assert set(module_cycle) == {"evalq.data.loader", "evalq.rag.corpus"}
    layer_cycle = find_cycle(layer_graph(modules))
    assert layer_cycle is not None
    assert set(layer_cycle) == {"data", "rag"}


def test_checker_sees_a_layer_cycle_without_a_module_cycle(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "config.py": "",
            "scheduler/__init__.py": "",
            "scheduler/submit.py": "import evalq.worker.app\nimport evalq.config\n",
            "worker/__init__.py": "",
            "worker/app.py": "",
            "worker/main.py": "from evalq.scheduler.submit import x\n",
        },
    )
    modules = module_graph(pkg)
    assert find_cycle(modules) is None
    layer_cycle = find_cycle(layer_graph(modules))
    assert layer_cycle is not None
    assert set(layer_cycle) == {"scheduler", "worker"}
