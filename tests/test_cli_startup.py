"""The command line starts without torch: ``textsr --help`` / ``--version`` import none of the heavy libraries,
and every command's module registers the one-line help the command table lists."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from napari_textsr.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "napari", "qtpy", "numpy", "PIL", "tifffile")


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import contextlib, io, json, sys\n"
        "from napari_textsr.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):  # the help text names napari and open_clip\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["models", "--help"], ["upscale", "--help"], ["train", "--help"]]
)
def test_startup_imports_nothing_heavy(argv):
    loaded = _modules_after(argv)
    assert "napari_textsr.cli" in loaded  # the probe really ran
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_top_level_help_lists_every_command_from_the_table():
    sub = _subparsers(build_parser([]))
    assert list(sub.choices) == list(COMMANDS)
    assert [a.help for a in sub._choices_actions] == [c.help for c in COMMANDS.values()]


def test_modules_register_their_commands_with_the_table_help():
    sub = _subparsers(build_parser(full=True))
    assert list(sub.choices) == list(COMMANDS)
    assert {a.dest: a.help for a in sub._choices_actions} == {name: c.help for name, c in COMMANDS.items()}
    # The full parser of each command is there (a stub has no options of its own).
    assert "--caption" in sub.choices["upscale"]._option_string_actions
    assert "--method" in sub.choices["train"]._option_string_actions


def test_only_the_named_command_is_parsed_fully():
    sub = _subparsers(build_parser(["models", "--json"]))
    assert "--json" in sub.choices["models"]._option_string_actions
    assert "--caption" not in sub.choices["upscale"]._option_string_actions  # a stub


@pytest.mark.parametrize("argv", [["models"], ["info", "pdn-x2-jpeg"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, argv):
    """`textsr models | head -0`: the pipe is closed before the first line, small output or large."""
    with open(tmp_path / "err", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "napari_textsr.cli", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=err
        )
        process.stdout.close()
        assert process.wait(timeout=120) == 141
    assert (tmp_path / "err").read_text() == ""
