"""The demo keeps what happens apart from how it is shown (issue 24), checked with ``ast``.

- ``scenario`` and what it builds on (``network``, ``people``) and ``snapshot`` reach no
  ``rich``: the commands and the rows can be had without drawing anything.
- ``render`` reaches no ``Ledger`` at run time and calls nothing on one: it prints the rows it
  is handed and cannot send a command.

"Reach" follows the project's own imports from module to module (a package's ``__init__``
aside: ``adapters.cli.demo`` itself is the entry, which uses both sides). Imports under
``if TYPE_CHECKING:`` count only as types.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEDGER_CALLS = {"execute", "execute_many", "exec", "purge_due", "catch_up", "engine", "views"}
"""What a renderer holding a ``Ledger`` would have to call on it."""


def _source(module: str) -> Path | None:
    """The file of one of the project's modules; None for a module from elsewhere."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if _source(f"{node.module}.{a.name}")
            )
        todo.extend(ast.iter_child_nodes(node))
    return found


def reached(module: str) -> set[str]:
    """Every module ``module`` imports at run time, directly or through the project's own."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        path = _source(todo.pop())
        if path is None:
            continue
        for name in _runtime_imports(path) - seen:
            seen.add(name)
            todo.append(name)
    return seen


@pytest.mark.parametrize("part", ["scenario", "network", "people", "snapshot"])
def test_the_scenario_and_its_rows_draw_nothing(part: str) -> None:
    """No module on the scenario's side reaches ``rich``."""
    drawing = {m for m in reached(f"adapters.cli.demo.{part}") if m.split(".")[0] == "rich"}
    assert drawing == set()


def test_the_pictures_send_nothing() -> None:
    """``render`` reaches neither ``ledger.api`` nor the scenario, and calls no ledger method."""
    modules = reached("adapters.cli.demo.render")
    assert "rich.table" in modules  # the walk sees what it should
    assert {"ledger.api", "adapters.cli.demo.scenario"} & modules == set()
    path = _source("adapters.cli.demo.render")
    assert path is not None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert called & LEDGER_CALLS == set()
