"""Task accuracy: prompt every record, generate, extract the answer, score; keep every example.

The generator is any object with `generate(prompts, max_new_tokens) -> list[str]` (PyTorch or
OpenVINO), so a deployed model is scored exactly as the PyTorch one.
"""

from __future__ import annotations

import os

from ..artifacts import write_json
from ..data.prompts import format_prompt
from .answers import answer_matches, extract_answer
from ..data.tasks import get_task


def evaluate(generator, records_by_task: dict[str, list[dict]], output_path: str | os.PathLike | None = None,
             metadata: dict | None = None) -> dict:
    """Accuracy per task (a fraction), the average over tasks, and every example; optionally saved as JSON."""
    results = {**(metadata or {}), "tasks": {}, "examples": {}}
    for name, records in records_by_task.items():
        task = get_task(name)
        prompts = [format_prompt(record, with_response=False) for record in records]
        generations = generator.generate(prompts, task.max_new_tokens)
        examples = []
        for record, prompt, generation in zip(records, prompts, generations):
            extracted = extract_answer(task, generation)
            examples.append({
                "prompt": prompt, "generation": generation, "extracted": extracted,
                "answer": record["answer"], "correct": answer_matches(task, extracted, record["answer"]),
            })
        correct = sum(e["correct"] for e in examples)
        results["tasks"][task.name] = {"accuracy": correct / len(examples) if examples else 0.0,
                                       "correct": correct, "count": len(examples)}
        results["examples"][task.name] = examples
    accuracies = [t["accuracy"] for t in results["tasks"].values()]
    results["average"] = sum(accuracies) / len(accuracies) if accuracies else 0.0
    if output_path is not None:
        write_json(output_path, results)
    return results


def format_results_table(results: dict) -> str:
    """One row per task (accuracy in %, count) and the average over tasks, as the paper's Tables 1-2 read."""
    rows = [(name, f"{100 * t['accuracy']:.1f}", str(t["count"])) for name, t in results["tasks"].items()]
    rows.append(("average", f"{100 * results['average']:.1f}", str(sum(t["count"] for t in results["tasks"].values()))))
    header = ("task", "accuracy (%)", "count")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}"]
    lines.append("-" * len(lines[0]))
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(lines[0]))
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
    return "\n".join(lines)
