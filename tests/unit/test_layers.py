"""The import picture of docs/ARCHITECTURE.md, checked on the source with ``ast``.

- ``ledger/`` never imports ``adapters``, except in its composition root ``ledger/api.py`` (which
  picks the store) and the ``python -m ledger`` entry point ``ledger/__main__.py`` (which runs the
  command line).
- ``adapters/storage`` never imports ``adapters.cli`` (storage is the bottom layer).
- ``ledger/api.py`` reaches the storage adapters only, never the command line.

Every import counts: top level, inside functions, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
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


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), wherever the statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            # ``from adapters import cli`` imports the submodule ``adapters.cli``.
            found.update(f"{module}.{alias.name}" for alias in node.names)
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


def test_the_layers_hold() -> None:
    assert violations() == []


def test_the_walk_sees_the_packages() -> None:
    """The check looks at the real tree (a wrong ROOT would make it pass on nothing)."""
    assert "adapters.storage.store" in imported_modules(ROOT / "ledger/api.py")
    assert "ledger.chain" in imported_modules(ROOT / "adapters/storage/sqlite.py")


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
