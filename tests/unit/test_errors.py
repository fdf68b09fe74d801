"""A ledger error's message is one line (DESIGN §7), whatever the database said."""

from __future__ import annotations

import pickle

from ledger.errors import InfrastructureError, LedgerError, Rejected, one_line
from ledger.projections.runner import ProjectionFailed

SERVER_SAYS = (
    "refused by a trigger\n"
    "DETAIL:  the detail line\n"
    "HINT:  the hint line\n"
    "CONTEXT:  PL/pgSQL function refuse() line 1 at RAISE\n"
    'SQL statement "INSERT INTO t VALUES (1)"\r\n'
)


def test_one_line_keeps_every_line_of_a_server_message_joined() -> None:
    """DETAIL, HINT and a CONTEXT of two lines are kept, each on the one line, spaces collapsed."""
    assert one_line(SERVER_SAYS) == (
        "refused by a trigger | DETAIL: the detail line | HINT: the hint line"
        ' | CONTEXT: PL/pgSQL function refuse() line 1 at RAISE | SQL statement "INSERT INTO t'
        ' VALUES (1)"'
    )
    assert one_line("already  one line") == "already  one line"


def test_every_ledger_error_folds_its_message() -> None:
    """The root class folds, so a subclass built from a driver's message is one line too."""
    for error in (
        LedgerError(SERVER_SAYS),
        InfrastructureError(f"view database: {SERVER_SAYS}"),
        ProjectionFailed(7, "C1", "Client.Registered", SERVER_SAYS, view="directory"),
    ):
        assert "\n" not in str(error)
        assert "\r" not in str(error)
        assert "| DETAIL: the detail line |" in str(error)
    failed = ProjectionFailed(7, "C1", "Client.Registered", SERVER_SAYS)
    assert "\n" not in failed.error
    copied = pickle.loads(pickle.dumps(InfrastructureError(SERVER_SAYS)))  # noqa: S301
    assert str(copied) == one_line(SERVER_SAYS)
    assert Rejected("invalid_command", field="x").code == "invalid_command"
