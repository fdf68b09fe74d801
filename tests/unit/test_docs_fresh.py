"""docs/COMMANDS.md and docs/VIEWS.md say what the code says (issue 11)."""

from __future__ import annotations

import pytest

from ledger.commands.models import COMMAND_ADAPTER
from ledger.commands.reference import command_models
from ledger.docs import PAGES, REJECTIONS, example
from ledger.errors import MESSAGES


@pytest.mark.parametrize("path", sorted(PAGES), ids=lambda path: path.name)
def test_a_generated_page_is_fresh(path: object) -> None:
    """The page in the repository equals what the code generates now."""
    render = PAGES[path]  # type: ignore[index]
    assert path.read_text(encoding="utf-8") == render(), (  # type: ignore[attr-defined]
        f"{path} is stale: run `.venv/bin/python -m ledger.docs` and commit the result"
    )


def test_every_command_has_its_rejection_codes() -> None:
    """Each command type lists its codes, and every code is a registered one (DESIGN §5)."""
    assert sorted(REJECTIONS) == sorted(command_models())
    assert {code for codes in REJECTIONS.values() for code in codes} <= set(MESSAGES)


@pytest.mark.parametrize("command_type", sorted(command_models()))
def test_every_example_is_a_valid_command(command_type: str) -> None:
    """The example line of each command passes the same validation as a caller's."""
    COMMAND_ADAPTER.validate_python(example(command_type))
