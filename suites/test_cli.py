"""The ``so8t`` command: help, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from so8t.cli import COMMANDS, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "so8t.cli", *args], check=False, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "--verbose" in capsys.readouterr().out


def test_demo_passes_its_checks():
    result = run_cli("demo", "--hidden-size", "32")
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stdout


def test_invalid_hidden_size_is_a_one_line_error():
    result = run_cli("demo", "--hidden-size", "12")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "hidden size 12" in lines[0] and "Traceback" not in result.stderr


def test_verbose_shows_the_traceback():
    result = run_cli("demo", "--hidden-size", "12", "--verbose")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_no_command_prints_help_and_fails():
    result = run_cli()
    assert result.returncode == 2
    assert "COMMAND" in result.stdout
