"""Task accuracy: prompt every record, generate, extract the answer, score; keep every example.

The generator is any object with `generate(prompts, max_new_tokens) -> list[str]` (PyTorch or
OpenVINO), so a deployed model is scored exactly as the PyTorch one.
"""

from __future__ import annotations

import json
import os

from .. import distributed
from ..artifacts import read_json, write_json, written_by
from ..errors import ShearsError
from ..tables import text_table
from ..data.prompts import generation_prompt
from ..protocol import SHEARS_PROTOCOL, Protocol
from .answers import answer_matches, extract_answer, response_text
from ..data.tasks import get_task


def evaluate(generator, records_by_task: dict[str, list[dict]], output_path: str | os.PathLike | None = None,
             metadata: dict | None = None, protocol: Protocol = SHEARS_PROTOCOL) -> dict | None:
    """Accuracy per task (a fraction), the average over tasks, and every example; optionally saved as JSON
    (after each task: see `run_tasks`, which also says what several processes do; None on all but the main one).

    `protocol` (`shears_nncf.protocol.PROTOCOLS[name]`) sets the prompt and how the answer is read."""
    given = {get_task(name).name: name for name in records_by_task}  # our task name -> the caller's key

    def score(name: str) -> tuple[dict, list[dict]]:
        task, records = get_task(name), records_by_task[given[name]]
        prompts = [generation_prompt(record, task, protocol) for record in records]
        generations = generator.generate(prompts, task.max_new_tokens)
        examples = []
        for record, prompt, generation in zip(records, prompts, generations):
            extracted = extract_answer(task, response_text(generation, prompt, protocol), protocol)
            examples.append({
                "prompt": prompt, "generation": generation, "extracted": extracted,
                "answer": record["answer"], "correct": answer_matches(task, extracted, record["answer"], protocol),
            })
        correct = sum(e["correct"] for e in examples)
        return {"accuracy": correct / len(examples) if examples else 0.0, "correct": correct, "count": len(examples)}, examples

    return run_tasks(list(given), score, output_path, metadata)


def run_tasks(tasks: list[str], score_task, output_path: str | os.PathLike | None = None,
              metadata: dict | None = None) -> dict | None:
    """Score each task in turn with `score_task(name) -> (summary, examples or None)`.

    The results file is rewritten after every task, so an interrupted run keeps the tasks it finished,
    and a rerun with the same output file and settings (`metadata`) scores only the tasks still missing.
    Under several processes every process calls `score_task` for the same tasks (scoring them is collective:
    each process scores its share) and what it returns counts only on the main process, which alone reads
    and writes the results file and returns the results; the others return None.
    """
    finished = _finished(output_path, metadata or {}) if distributed.is_main() else {}
    done = distributed.broadcast(set(finished.get("tasks", {})))  # the main process's file decides for all
    if not distributed.is_main():
        for name in tasks:
            if name not in done:
                score_task(name)
        return None
    results = {**(metadata or {}), "tasks": {}}
    for name in tasks:
        if name in done:
            print(f"{name}: already in {output_path}, not scored again")
            summary, examples = finished["tasks"][name], finished.get("examples", {}).get(name)
        else:
            summary, examples = score_task(name)
        results["tasks"][name] = summary
        if examples is not None:
            results.setdefault("examples", {})[name] = examples
        results["average"] = sum(map(headline, results["tasks"].values())) / len(results["tasks"])
        if output_path is not None:
            write_json(output_path, results)
    results.setdefault("average", 0.0)
    return results


def headline_metric(summary: dict) -> str:
    """The metric a task adds to the average: generation accuracy; for log-likelihood acc_norm, or acc where
    lm-eval defines no acc_norm."""
    return next(metric for metric in ("accuracy", "acc_norm", "acc") if metric in summary)


def headline(summary: dict) -> float:
    """A task's number in the average (see `headline_metric`)."""
    return summary[headline_metric(summary)]


def _finished(output_path, settings: dict) -> dict:
    """The results already in `output_path` when they were made with the same settings, else nothing."""
    if output_path is None or written_by(output_path) != "evaluate":  # none yet, or a file --overwrite replaces
        return {}
    previous = read_json(output_path, "results file")
    if {k: v for k, v in previous.items() if k not in ("tasks", "examples", "average")} != json.loads(json.dumps(settings, default=str)):
        print(f"{output_path} holds results of other settings; they will be replaced")
        return {}
    return previous


def read_results(path: str | os.PathLike) -> dict:
    """A results file `shears evaluate --output` wrote: `tasks` (each task's summary), `average`, `examples`, and the
    settings it was scored with."""
    results = read_json(path, what="evaluation results")
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict) or "average" not in results:
        raise ShearsError(f"{path} is not a results file of `shears evaluate` (no tasks and average)")
    return results


def format_results_table(results: dict) -> str:
    """One row per task and the average over tasks: generation accuracy (%) and count, as the paper's
    Tables 1-2 read; for log-likelihood scoring acc and acc_norm (%) with their standard errors, and n."""
    tasks = results["tasks"].values()
    if any("acc" in t for t in tasks):
        return _loglik_table(results)
    rows = [(name, f"{100 * t['accuracy']:.1f}", str(t["count"])) for name, t in results["tasks"].items()]
    rows.append(("average", f"{100 * results['average']:.1f}", str(sum(t["count"] for t in tasks))))
    return _table(("task", "accuracy (%)", "count"), rows)


def _loglik_table(results: dict) -> str:
    def cell(summary: dict, metric: str) -> str:
        if metric not in summary:
            return "-"
        stderr = summary.get(metric + "_stderr")
        if not isinstance(stderr, (int, float)):  # lm-eval's "N/A" for a single document
            return f"{100 * summary[metric]:.1f}"
        return f"{100 * summary[metric]:.1f} ± {100 * stderr:.1f}"

    tasks = results["tasks"].values()
    rows = [(name, cell(t, "acc"), cell(t, "acc_norm"), str(t["n"])) for name, t in results["tasks"].items()]
    mean_acc = sum(t["acc"] for t in tasks) / len(tasks) if tasks else 0.0
    rows.append(("average", f"{100 * mean_acc:.1f}", f"{100 * results['average']:.1f}", str(sum(t["n"] for t in tasks))))
    return _table(("task", "acc (%)", "acc_norm (%)", "n"), rows) + "\n(average acc_norm takes acc where lm-eval defines no acc_norm)"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """The task column, then numbers right-aligned; the average, the last row, below a rule of its own."""
    return "\n".join(text_table(header, rows, align="l" + "r" * (len(header) - 1), rule=True, total=True))
