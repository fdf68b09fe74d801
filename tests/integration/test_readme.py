"""The README's Python examples run as pasted, in an empty folder (issue 11)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from ledger.api import Ledger
from ledger.first_steps import QuickstartNetwork, quickstart

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_examples() -> None:
    """There is something to run (a renamed fence would make the next test vacuous)."""
    assert len(_python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_a_readme_example_runs_as_pasted(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ```python block runs in an empty folder, twice (a second run must work too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_URL", raising=False)
    code = compile(_python_blocks()[index], f"README.md[{index}]", "exec")
    for _ in range(2):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, {"__name__": "__readme__"})  # noqa: S102  (the README's own code)


def test_the_first_example_prints_the_stamps_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library example consumes one stamp of the quickstart's 100 and refuses a stranger."""
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_python_blocks()[0], "README.md[0]", "exec"), {})  # noqa: S102
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["99", "['ok', 'not_authorised']"]


def test_quickstart_builds_the_network_once(sqlite_url: str) -> None:
    """On an empty ledger it leaves 100 stamps on C1-cti; a second call records nothing."""
    with Ledger.open(sqlite_url, password_cost="fast") as lg:
        assert quickstart(lg) == QuickstartNetwork()
        before = lg.views.projector.source.max_notification_id()
        assert lg.balance("C1-cti") == 100
        assert lg.balance("D1") == 900
        assert quickstart(lg) == QuickstartNetwork()
        after = lg.views.projector.source.max_notification_id()
        assert after == before
        assert lg.balance("C1-cti") == 100
