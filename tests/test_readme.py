"""The README cannot go stale: every `shears ...` command it shows parses with today's CLI."""

import re
import shlex
from pathlib import Path

import pytest

from shears_nncf.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = [line.strip() for line in README.read_text().splitlines() if re.match(r"^\s*shears \w", line)]


def test_the_readme_shows_a_command_for_every_stage():
    shown = {shlex.split(command)[1] for command in COMMANDS}
    assert {"sparsify", "report", "train", "search", "extract", "export", "evaluate", "bench", "score"} <= shown


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def test_the_demo_command_in_the_readme_is_the_one_make_demo_runs():
    makefile = (README.parent / "Makefile").read_text()
    demo = re.search(r"shears run [^\n]+", makefile).group(0)
    assert demo in README.read_text()
