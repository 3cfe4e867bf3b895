"""The command line's surface (docs/cli.md): version, help, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batond import __version__
from batond.commands.cli import _COMMANDS, main

DOCUMENTED_COMMANDS = {
    "run", "check", "replay", "backtest", "status", "incidents", "runs", "silence",
    "approve", "deny", "cancel", "feedback", "pause", "resume", "schema",
}  # fmt: skip


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"batond {__version__}"


def test_every_spec_command_exists() -> None:
    assert set(_COMMANDS) >= DOCUMENTED_COMMANDS


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_help_for_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: batond {command}")


@pytest.mark.parametrize("action", ["add", "list", "expire"])
def test_help_for_silence_actions(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["silence", action, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: batond silence {action}")


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for command in DOCUMENTED_COMMANDS:
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        [],
        ["run", "--no-such-option"],
        ["approve", "not-a-number"],
        ["feedback", "1", "true_positive"],
        ["silence"],
        ["backtest", "x.csv"],  # --out is required
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert "usage: batond" in err


def test_options_follow_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from batond.commands.cli import build_parser

    args = build_parser().parse_args(["runs", "--json", "--url", "http://x:1", "7"])
    assert (args.command, args.json, args.url, args.id) == ("runs", True, "http://x:1", 7)


def test_console_script_is_installed() -> None:
    # the venv's script next to its python (the venv need not be on PATH)
    exe = str(Path(sys.executable).with_name("batond"))
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"batond {__version__}"


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batond", "nope"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr
