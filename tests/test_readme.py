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
    assert args.stage.name == shlex.split(command)[1] and callable(args.stage.function)


def test_the_demo_command_in_the_readme_is_the_one_make_demo_runs():
    makefile = (README.parent / "Makefile").read_text()
    demo = re.search(r"shears run [^\n]+", makefile).group(0)
    assert demo in README.read_text()


def test_the_readme_results_are_those_of_benchmarks_results_md():
    """The README's results table is a cut of RESULTS.md: every row's cells must be found there, in order,
    and every claim's verdict is the one RESULTS.md gives it."""
    results = (README.parent / "benchmarks" / "RESULTS.md").read_text()
    section = README.read_text().split("## Results", 1)[1]
    tables = [t for t in re.split(r"\n\s*\n", section) if t.lstrip().startswith("|")]
    rows = [line for line in tables[0].splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert len(rows) == 17  # the study's rows: zero-shot, LoRA and Shears (benchmarks/reproduce_small.py ROWS)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        source = next(line for line in results.splitlines() if line.startswith(f"| {cells[0]} |"))
        source_cells = [c.strip() for c in source.strip("|").split("|")]
        assert cells[:10] == source_cells[:10]
    verdicts = [line for line in tables[1].splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert verdicts
    for line in verdicts:
        claim, verdict = (c.strip() for c in line.strip("|").split("|"))
        source = next(line for line in results.splitlines() if line.startswith(f"| {claim} |"))
        assert source.rstrip().endswith(f"| {verdict} |")


def test_the_readme_intervals_of_nls_against_lora_are_those_of_its_report():
    """Each difference with its interval that the README's NLS-vs-LoRA section quotes is one NLS_VS_LORA.md gives."""
    report = (README.parent / "benchmarks" / "NLS_VS_LORA.md").read_text()
    section = README.read_text().split("## Results: NLS against LoRA", 1)[1].split("\n## ", 1)[0]
    quoted = re.findall(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", section)
    assert quoted
    assert [q for q in quoted if q not in report] == []
