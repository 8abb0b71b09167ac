"""benchmarks/quantization_aware.py at toy size on the tiny LLaMA: the pilot and every row run once (the harsh rows
too), the decode benchmark runs alone, the report has every row, the pilot's choice and the verdicts, and a second
run skips every step (the study resumes row by row)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import quantization_aware as qa  # noqa: E402


def test_the_quantization_study_runs_every_row_once_and_reports_them(tiny_llama_dir, tmp_path, capsys):
    argv = ["--model", str(tiny_llama_dir), "--output", str(tmp_path / "study"), "--nsamples", "2", "--seqlen", "64",
            "--steps", "2", "--train-limit", "16", "--tasks", "piqa", "--eval-limit", "2", "--pilot-limit", "2",
            "--seeds", "1", "--bench-rounds", "1", "--report", str(tmp_path / "Q.md")]
    qa.main(argv)
    assert "pending (--bench-only)" in (tmp_path / "Q.md").read_text()  # the cells' run times nothing
    qa.main(argv + ["--bench-only"])
    report = (tmp_path / "Q.md").read_text()
    assert "pending" not in report, report  # the pilot, every row, question and IR, its speed included
    assert "Harsh setting, by the rule: **" in report
    study = qa.Study(parsed(argv))
    settings = study.settings()
    for setting in settings:
        assert f"## Rows at {setting.label}" in report
        for question, *_ in qa.QUESTIONS:
            assert sum(line.startswith(f"| {question} | {setting.label} |") for line in report.splitlines()) == 1
    assert "**holds" in report or "**refuted" in report or "**inconclusive" in report
    ir_rows = [line for line in report.split("## The IRs")[1].splitlines() if line.startswith("| dense-int8 |")]
    assert ir_rows and ir_rows[0].endswith("| 1.00x | - |") is False and "1.00x" in ir_rows[0]
    capsys.readouterr()
    qa.main(argv)
    assert capsys.readouterr().out.count("up to date, skipped") == len(study.plan())


def parsed(argv):
    """The parsed arguments main() would use, for the plan."""
    import argparse

    args = argparse.Namespace(**{k.lstrip("-").replace("-", "_"): v for k, v in zip(argv[::2], argv[1::2])})
    args.seeds, args.tasks, args.all_seeds_rows = [int(s) for s in args.seeds.split(",")], args.tasks.split(","), False
    return args
