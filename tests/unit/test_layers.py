"""The import picture of docs/ARCHITECTURE.md, checked on the source with ``ast``.

- ``ledger/`` never imports ``adapters``, except in its composition root ``ledger/api.py`` (which
  picks the store) and the ``python -m ledger`` entry point ``ledger/__main__.py`` (which runs the
  command line).
- ``adapters/storage`` never imports ``adapters.cli`` (storage is the bottom layer).
- ``ledger/api.py`` reaches the storage adapters only, never the command line.

Every import counts: top level, inside functions, under ``TYPE_CHECKING``.

No import circles either: the modules of ``ledger/`` and ``adapters/`` form no loop of imports,
short or long. The circle check counts the same imports as the layers, deferred ones too. An
import inside a function or under ``TYPE_CHECKING`` does not run when the module loads, but it
only hides a circle from the interpreter, not from the reader: the two modules still cannot be
read, changed or moved one without the other (``ledger/commands/auth.py`` importing the engine's
``Tx`` under ``TYPE_CHECKING`` while the engine imports ``authorise`` was one such circle), and a
deferred import is how circles are usually papered over. A module that needs another only for a
type can be given the type from a third module both import.

An edge goes to the module an import names: ``from ledger.commands import auth`` reaches
``ledger.commands.auth``, not the package's ``__init__`` (loading a submodule runs its package's
``__init__`` first, but an ``__init__`` that imports its own submodules is no circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOTS = {"ledger/api.py", "ledger/__main__.py"}


def module_name(path: Path, root: Path = ROOT) -> str:
    """``ledger/audit/source.py`` -> ``ledger.audit.source`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(path: Path, root: Path = ROOT) -> Iterator[tuple[str, list[str]]]:
    """Each import of ``path``, wherever the statement is, as ``(module, names)``: relative
    imports resolved; ``names`` are what ``from module import ...`` takes (empty for ``import``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            yield module, [alias.name for alias in node.names]


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), wherever the statement is."""
    found: set[str] = set()
    for module, names in import_statements(path, root):
        found.add(module)
        # ``from adapters import cli`` imports the submodule ``adapters.cli``.
        found.update(f"{module}.{name}" for name in names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(root: Path = ROOT) -> list[str]:
    """One line per import that runs against the layers."""
    found: list[str] = []
    for path in sorted([*root.glob("ledger/**/*.py"), *root.glob("adapters/**/*.py")]):
        relative = path.relative_to(root).as_posix()
        for module in sorted(imported_modules(path, root)):
            inner = relative.startswith("ledger/") and relative not in COMPOSITION_ROOTS
            if inner and within(module, "adapters"):
                found.append(f"{relative} imports {module} (ledger/ must not see adapters/)")
            if relative == "ledger/api.py" and within(module, "adapters.cli"):
                found.append(f"{relative} imports {module} (the library must not need the CLI)")
            if relative.startswith("adapters/storage/") and within(module, "adapters.cli"):
                found.append(f"{relative} imports {module} (storage must not see the CLI)")
    return found


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """The modules of ``ledger/`` and ``adapters/`` by dotted name."""
    paths = sorted([*root.glob("ledger/**/*.py"), *root.glob("adapters/**/*.py")])
    return {module_name(path, root): path for path in paths}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Which project modules each project module imports: ``from package import name`` reaches
    ``package.name`` when that is a module, else ``package``; outside modules are left out."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        reached: set[str] = set()
        for module, names in import_statements(path, root):
            submodules = {f"{module}.{n}" for n in names} & modules.keys()
            reached |= submodules
            if len(submodules) < len(names) or not names:
                reached.add(module)
        graph[name] = (reached & modules.keys()) - {name}
    return graph


def shortest_circle(graph: dict[str, set[str]], start: str, among: set[str]) -> list[str]:
    """The shortest loop of imports from ``start`` back to it, inside ``among``."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for module in frontier:
            for target in sorted(graph[module] & among):
                if target == start:
                    path = [module]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in came_from:
                    came_from[target] = module
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is on no circle")


def circles(root: Path = ROOT) -> list[str]:
    """One line per set of modules caught in import circles (a strongly connected component of
    the graph, found by Tarjan's walk): its shortest circle, then every module of the set."""
    graph = import_graph(root)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[str] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = {stack.pop()}
            while module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                first = min(component)
                loop = " -> ".join(shortest_circle(graph, first, component))
                found.append(f"{loop} (modules in the circles: {', '.join(sorted(component))})")

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return sorted(found)


def test_the_layers_hold() -> None:
    assert violations() == []


def test_no_import_circles() -> None:
    found = circles()
    assert not found, "import circles:\n" + "\n".join(found)


def test_the_walk_sees_the_packages() -> None:
    """The check looks at the real tree (a wrong ROOT would make it pass on nothing)."""
    assert "adapters.storage.store" in imported_modules(ROOT / "ledger/api.py")
    assert "ledger.chain" in imported_modules(ROOT / "adapters/storage/sqlite.py")
    graph = import_graph()
    assert {"adapters.storage.memory", "ledger.audit", "ledger.errors"} <= graph["ledger.api"]


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        (
            "ledger/audit/bad.py",
            "from adapters.storage.store import EventStore\n",
            "ledger/audit/bad.py imports adapters.storage.store",
        ),
        (
            "ledger/bad.py",
            "def f():\n    import adapters.storage.memory\n",
            "ledger/bad.py imports adapters.storage.memory",
        ),
        (
            "adapters/storage/bad.py",
            "from ..cli.common import describe\n",
            "adapters/storage/bad.py imports adapters.cli.common",
        ),
        (
            "adapters/storage/bad.py",
            "from adapters.cli import common\n",
            "adapters/storage/bad.py imports adapters.cli",
        ),
        (
            "ledger/api.py",
            "from adapters.cli.main import main\n",
            "ledger/api.py imports adapters.cli.main",
        ),
    ],
)
def test_a_wrong_import_is_caught(
    tmp_path: Path, relative: str, source: str, expected: str
) -> None:
    bad = tmp_path / relative
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(source, encoding="utf-8")
    found = violations(tmp_path)
    assert found, "the wrong import went unseen"
    assert found[0].startswith(expected + " ")
    assert all(line.startswith(relative) for line in found)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "ledger/engine.py": "from ledger.commands.auth import authorise\n",
                "ledger/commands/__init__.py": "",
                "ledger/commands/auth.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n"
                    "    from ledger.engine import Tx\n"
                ),
            },
            "ledger.commands.auth -> ledger.engine -> ledger.commands.auth",
        ),
        (
            {
                "adapters/__init__.py": "",
                "adapters/storage/__init__.py": "",
                "adapters/storage/audit.py": "from . import memory\n",
                "adapters/storage/memory.py": "from .store import Pool\n",
                "adapters/storage/store.py": "def f():\n    from .audit import read\n",
            },
            "adapters.storage.audit -> adapters.storage.memory -> adapters.storage.store"
            " -> adapters.storage.audit",
        ),
        (
            {"ledger/a.py": "import ledger.b\n", "ledger/b.py": "from ledger import a\n"},
            "ledger.a -> ledger.b -> ledger.a",
        ),
    ],
)
def test_an_import_circle_is_caught(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    write_tree(tmp_path, files)
    found = circles(tmp_path)
    assert len(found) == 1
    assert found[0].startswith(expected + " (modules in the circles: ")


def test_a_package_importing_its_own_modules_is_no_circle(tmp_path: Path) -> None:
    """``from ledger import audit`` reaches ``ledger.audit``, not ``ledger/__init__.py``."""
    write_tree(
        tmp_path,
        {
            "ledger/__init__.py": "def __getattr__(name):\n    from ledger.api import Ledger\n",
            "ledger/api.py": "from ledger import audit\nfrom ledger.audit import verify\n",
            "ledger/audit/__init__.py": "from ledger.audit.verify import verify\n",
            "ledger/audit/verify.py": "from ledger.errors import Rejected\n",
            "ledger/errors.py": "",
        },
    )
    assert circles(tmp_path) == []
    assert import_graph(tmp_path)["ledger.api"] == {"ledger.audit", "ledger.audit.verify"}
