"""Paired comparison of two results files scored on the same documents (evaluation/compare.py)."""

import pytest

from shears_nncf.errors import ShearsError
from shears_nncf.evaluation import compare


def _results(scores_by_task: dict[str, list[int]]) -> dict:
    """A log-likelihood results file: acc_norm for piqa (as lm-eval defines it), acc only for winogrande."""
    tasks, examples = {}, {}
    for task, scores in scores_by_task.items():
        metric = "acc_norm" if task == "piqa" else "acc"
        n, p = len(scores), sum(scores) / len(scores)
        tasks[task] = {metric: p, f"{metric}_stderr": (p * (1 - p) / (n - 1)) ** 0.5, "n": n}
        examples[task] = [{"doc": i, metric: s} for i, s in enumerate(scores)]
    return {"tasks": tasks, "examples": examples}


def test_average_and_paired_difference_of_the_same_documents():
    tasks = ["piqa", "winogrande"]
    first = _results({"piqa": [1, 1, 0, 1] * 10, "winogrande": [1, 0] * 20})
    second = _results({"piqa": [1, 0, 0, 1] * 10, "winogrande": [1, 0] * 20})
    assert compare.average(first, tasks) == pytest.approx(100 * (0.75 + 0.5) / 2)
    assert compare.standard_error(first, tasks) > 0
    same = compare.paired_difference(first, first, tasks)
    assert same == {"diff": 0.0, "se": 0.0, "low": 0.0, "high": 0.0}  # identical answers: no uncertainty at all
    better = compare.paired_difference(first, second, tasks)
    assert better["diff"] == pytest.approx(100 * 0.25 / 2) and 0 < better["low"] < better["diff"] < better["high"]
    assert compare.paired_difference(second, first, tasks)["high"] < 0


def test_results_of_different_documents_cannot_be_paired():
    first = _results({"piqa": [1, 0, 1]})
    second = _results({"piqa": [1, 0, 1, 1]})
    with pytest.raises(ShearsError, match="different documents"):
        compare.paired_difference(first, second, ["piqa"])
