"""The command line explains itself and fails in one line (issue 11): help, errors, pipes."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from adapters.cli.main import build_parser, main
from ledger.clock import ManualClock
from ledger.commands.reference import command_models
from tests.support import cli_env, consume, network_ledger, register_client, seed_network, start_cli


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_examples() -> None:
    """Each subcommand's --help has a paragraph beyond its summary and at least one example."""
    for name, parser in _subcommands().items():
        assert parser.description is not None, name
        assert "\n\n" in parser.description, name
        assert parser.epilog is not None, name
        assert parser.epilog.startswith("examples:\n  ledger "), name


def test_every_argument_has_help() -> None:
    """No argument of any subcommand is left without a help text."""
    for name, parser in _subcommands().items():
        for action in parser._actions:
            assert action.help, f"{name} {action.dest}"


def test_defaults_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """A default is printed beside its argument, and no empty default is."""
    with pytest.raises(SystemExit):
        main(["balance", "--help"])
    out = capsys.readouterr().out
    assert "(default: stamps)" in out
    assert "(default: None)" not in out


def test_url_is_described_one_way() -> None:
    """Every subcommand's --url has the same help text."""
    texts = {
        action.help
        for parser in _subcommands().values()
        for action in parser._actions
        if action.dest == "url"
    }
    assert len(texts) == 1


def test_a_following_signer_is_described_one_way() -> None:
    """seal and project take the same --key, --every and --checkpoint-interval, same help and
    defaults, and say in their examples how a follower signs."""
    commands = _subcommands()
    for dest in ("key", "every", "checkpoint_interval"):
        (seal,) = [a for a in commands["seal"]._actions if a.dest == dest]
        (project,) = [a for a in commands["project"]._actions if a.dest == dest]
        assert (seal.help, seal.default, seal.type) == (project.help, project.default, project.type)
    for name in ("seal", "project"):
        assert f"ledger {name} --follow --key ledger.key" in (commands[name].epilog or "")


def test_an_unknown_account_names_the_account(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The failure line names the account, the code and the Spanish message."""
    seed_network(sqlite_url, clock)
    assert main(["balance", "C9-cti", "--url", sqlite_url]) == 1
    err = capsys.readouterr().err
    assert err == "balance: no account 'C9-cti' (unknown_account: La cuenta no existe.)\n"


def test_an_instant_without_offset_says_an_offset_is_required(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at without an offset is refused before the ledger is opened, saying what is expected."""
    assert main(["balance", "C1-cti", "--at", "2026-11-01T12:00:00", "--url", sqlite_url]) == 1
    err = capsys.readouterr().err
    assert "--at '2026-11-01T12:00:00'" in err
    assert "with an offset" in err
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_points_print_with_their_unit_and_separators(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A balance prints with thousands separators and its unit."""
    seed_network(sqlite_url, clock, inventory=12_000)
    assert main(["balance", "D1", "--url", sqlite_url]) == 0
    assert capsys.readouterr().out == "12,000 stamps\n"


def test_an_unknown_distributor_filter_is_an_error(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """export-clients --distributor NOPE exits 1 naming it, and writes no CSV."""
    seed_network(sqlite_url, clock)
    assert main(["export-clients", "--distributor", "NOPE", "--url", sqlite_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "export-clients: --distributor: no distributor 'NOPE'\n"


def test_schema_prints_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger schema` is the JSON Schema of the command union, one definition per type."""
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["$defs"]) >= set(command_models())


def test_schema_of_one_type(capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger schema ConsumeStamp` names its required fields."""
    assert main(["schema", "ConsumeStamp"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"cti_id", "cfdi_uuid", "issuer_rfc"} <= set(schema["required"])


def test_schema_of_an_unknown_type_lists_the_known(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown type exits 1 and lists the types there are."""
    assert main(["schema", "Teleport"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("schema: no command type 'Teleport'; known: ")
    assert "ConsumeStamp" in err


@pytest.mark.parametrize("command", [["history", "C1-cti"], ["export-clients"]])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, clock: ManualClock, command: list[str]) -> None:
    """`ledger history X | head -1` prints no traceback and exits with SIGPIPE's status."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with network_ledger(clock, url=url, cti_stamps=3000) as lg:
        lg.execute_many([consume() for _ in range(3000)])
        for n in range(2, 400):
            lg.execute(register_client(f"C{n}", name=f"Cliente {n}", email=f"c{n}@example.com"))
    # The smallest pipe Linux allows (one page): the output cannot all fit in it before the
    # reader closes, so the writer meets the closed pipe (with the default 64 KiB a small
    # export could finish first, and the test then proved nothing).
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    process = start_cli(
        *command,
        "--url",
        url,
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=cli_env(LEDGER_LOG_LEVEL="WARNING"),
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stdout:
        assert stdout.readline()
    # closed, as `head -1` does
    _, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode == 141
