"""benchmarks/nls_vs_lora.py on the tiny LLaMA: every question's row is scored and reported, and a copy of its kept
results (what is committed) continues the study on a machine without its models: nothing is trained again."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_reports_every_question_and_continues_from_its_kept_results(tiny_llama_dir, tmp_path):
    out, results, report = tmp_path / "runs", tmp_path / "results", tmp_path / "report" / "NLS_VS_LORA.md"
    argv = [sys.executable, str(ROOT / "benchmarks" / "nls_vs_lora.py"), "--model", str(tiny_llama_dir),
            "--output", str(out), "--results", str(results), "--report", str(report), "--bases", "wanda-50",
            "--seeds", "1", "--lrs", "1e-3", "--steps", "2", "--eval-steps", "1", "--val-set-size", "4",
            "--train-per-task", "4", "--train-limit", "20", "--eval-limit", "2", "--tasks", "boolq,piqa",
            "--batch-size", "2", "--nsamples", "2", "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    text = report.read_text()
    for question in ("1. NLS vs LoRA, Wanda 50%", "3a. heuristic vs maximal", "3b. heuristic vs minimal"):
        assert f"| {question} |" in text
    assert "Not yet scored: question(s) 2;" in text  # the dense pair, not asked for here
    assert "| the paper's difference | seeds to decide the paper's difference |" in text
    assert "- (one seed: no spread to project)" in text  # one seed cannot project the seeds a decision takes
    assert "| without BoolQ (95% interval) |" in text and "the other 1 task(s)" in text
    assert (report.parent / "nls_vs_lora_curves.png").is_file()
    for name in ("wanda-50-nls-lr0.001-s1", "wanda-50-lora-lr0.001-s1"):
        summary = json.loads((results / "train" / f"{name}.json").read_text())
        assert [step for step, _ in summary["held_out"]] == [1, 2]  # the held-out loss at every eval step
    scored = {p.stem for p in (results / "eval").glob("*.json")}
    assert {"wanda-50-nls-lr0.001-s1-maximal", "wanda-50-lora-lr0.001-s1", "zero-wanda-50"} <= scored

    shutil.rmtree(out)  # another machine: only the kept results are there
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[nls-vs-lora] start" not in again.stdout  # nothing trained, extracted or scored again
    assert not (out / "train").exists()
    assert report.read_text().split("## Rows")[1] == text.split("## Rows")[1]
    assert "| row | seed | BoolQ | PIQA | avg ± se |" in text  # the tasks asked for, and only those
