"""benchmarks/quantization_aware.py at toy size on the tiny LLaMA: the pilot (two of its settings, on the 50% model;
they tie at the toy's scores, so the rule keeps the default, as the real pilot did) and every row run once, the decode
benchmark runs alone, the report has the pilot's choice, every row, question and IR filled, and a second run skips
every step (the study resumes row by row)."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import quantization_aware as qa  # noqa: E402


def test_the_quantization_study_runs_every_row_once_and_reports_them(tiny_llama_dir, tmp_path, capsys):
    argv = ["--model", str(tiny_llama_dir), "--output", str(tmp_path / "study"), "--nsamples", "2", "--seqlen", "64",
            "--steps", "2", "--train-limit", "16", "--tasks", "piqa", "--eval-limit", "2", "--pilot-limit", "2",
            "--seeds", "1", "--bench-rounds", "1", "--pilot-settings", "asym-g32,asym-g128", "--pilot-ratios", "0.5",
            "--report", str(tmp_path / "Q.md")]
    qa.main(argv)
    assert "pending (--bench-only)" in (tmp_path / "Q.md").read_text()  # the cells' run times nothing
    qa.main(argv + ["--bench-only"])
    report = (tmp_path / "Q.md").read_text()
    lines = report.splitlines()
    assert "pending" not in report, report  # the pilot, every row, question and IR, its decode speed included
    assert "Harsh setting, by the rule: **" in report
    study = qa.Study(qa.parse_args(argv))
    settings = study.settings()
    for setting in settings:
        assert f"## Rows at {setting.label}" in report
    for label, _ in qa.KINDS.values():
        assert sum(line.startswith(f"| {label} |") for line in lines) == len(settings), label
    for question, *_, claim in qa.QUESTIONS:
        rows = [line for line in lines if line.startswith(f"| {question} |")]
        assert len(rows) == len(settings), question
        verdicts = [row.split("|")[-2].strip() for row in rows]
        assert all(v.startswith(("**holds", "**refuted", "**inconclusive")) if claim else v == "- (no claim)"
                   for v in verdicts), verdicts
    assert "| 1.00x |" in next(line for line in lines if line.startswith("| dense-int8 |"))
    lost = next(line for line in lines if line.startswith("| qa-mask-")).split("|")[7].strip()
    assert re.fullmatch(r"0 of [1-9][\d,]*", lost), lost  # the masked update leaves every zero of the base a zero
    capsys.readouterr()
    qa.main(argv)
    assert capsys.readouterr().out.count("up to date, skipped") == len(study.plan())
