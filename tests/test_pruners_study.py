"""benchmarks/pruners.py at toy size on the tiny LLaMA: every cell runs once (the recovery trainings included), the
side-by-side timing runs alone, the report has every row, the plot and the recovery's answer in plain words, and a
second run skips every cell (the study resumes row by row)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pruners  # noqa: E402


def test_the_pruners_study_runs_every_cell_once_and_reports_them(tiny_llama_dir, tmp_path, capsys):
    argv = ["--models", str(tiny_llama_dir), "--output", str(tmp_path / "study"), "--nsamples", "2", "--seqlen", "64",
            "--ppl-windows", "2", "--eval-limit", "2", "--tasks", "piqa", "--ratios", "0.5", "--recovery-steps", "2",
            "--timing-rounds", "1", "--report", str(tmp_path / "P.md")]
    pruners.main(argv)
    assert "| - |" in (tmp_path / "P.md").read_text()  # the cells' run times nothing: the timing runs alone
    pruners.main(argv + ["--timing-only"])
    report = (tmp_path / "P.md").read_text()
    for label, *_ in pruners.METHODS:
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
        assert "| - |" not in row, row  # every ratio has its perplexity and its time
    assert report.count("| OWL + Wanda | 50% |") == 1 and "minus Wanda" in report and "| dense | 0% |" in report
    assert "In plain words: the published ordering" in report and "Held-out perplexity" in report
    recovery = report.split("recovered by a Shears sub-adapter")[1]
    for label in pruners.LOGLIK_METHODS:  # each recovered row trained, scored, and set against its own sparse model
        row = next(line for line in recovery.splitlines() if line.startswith(f"| {label} |")).split("|")
        assert " -> " in row[2] and row[4].strip() != "-", row
    assert "whether a better pruner still matters once a sub-adapter is trained on top" in recovery
    assert recovery.count(" before, ") == len(pruners.LOGLIK_METHODS) - 1  # each pruner against Wanda, before and after
    assert (tmp_path / "pruners_perplexity.png").stat().st_size > 0
    capsys.readouterr()
    pruners.main(argv)
    assert capsys.readouterr().out.count("up to date, skipped") == len(pruners.Study(pruners_args(argv)).plan())


def pruners_args(argv):
    """The parsed arguments main() would use, for the plan's size."""
    import argparse

    args = argparse.Namespace(**{k.lstrip("-").replace("-", "_"): v for k, v in zip(argv[::2], argv[1::2])})
    args.models, args.tasks = args.models.split(","), args.tasks.split(",")
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.recovery_steps, args.timing_rounds = int(args.recovery_steps), int(args.timing_rounds)
    return args
