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


def _seed_runs(base: list[int], offsets: list[int]) -> list[dict]:
    """One results file per training seed: the same documents, `base` with the first k answers of each seed flipped
    to right (offset k > 0) or to wrong (k < 0), so the seeds differ by how many documents they get right."""
    runs = []
    for k in offsets:
        scores = list(base)
        for i in range(abs(k)):
            scores[i] = 1 if k > 0 else 0
        runs.append(_results({"piqa": scores, "winogrande": scores}))
    return runs


def test_the_seeded_interval_widens_when_the_seeds_disagree():
    tasks = ["piqa", "winogrande"]
    base = [1, 0, 0, 1, 0, 1, 1, 0] * 25  # 200 documents, half right
    lora = _seed_runs(base, [0, 0, 0])
    agreeing = compare.seeded_difference(_seed_runs(base, [20, 20, 20]), lora, tasks)
    disagreeing = compare.seeded_difference(_seed_runs(base, [60, 20, -20]), lora, tasks)
    assert agreeing["diff"] == pytest.approx(disagreeing["diff"])  # the same mean gain over seeds...
    assert disagreeing["high"] - disagreeing["low"] > 1.5 * (agreeing["high"] - agreeing["low"])  # ...less sure
    assert compare.verdict(agreeing) == "holds" and compare.verdict(disagreeing).startswith("inconclusive")
    assert disagreeing["seed_spread"]["first"] != agreeing["seed_spread"]["first"]


def test_one_seed_per_method_is_the_paired_document_bootstrap():
    tasks = ["piqa", "winogrande"]
    first = _results({"piqa": [1, 1, 0, 1] * 10, "winogrande": [1, 0] * 20})
    second = _results({"piqa": [1, 0, 0, 1] * 10, "winogrande": [1, 0] * 20})
    seeded, paired = compare.seeded_difference([first], [second], tasks), compare.paired_difference(first, second, tasks)
    assert seeded["diff"] == pytest.approx(paired["diff"])
    assert seeded["se"] == pytest.approx(paired["se"], rel=0.1)


def test_paired_seeds_keep_each_super_adapters_two_sub_adapters_together():
    tasks = ["piqa"]
    base = [1, 0] * 50
    # Each super-adapter's heuristic beats its own maximal by 2 documents (of 100), but the super-adapters differ a lot.
    heuristic, maximal = _seed_runs(base, [45, 25, 5]), _seed_runs(base, [40, 20, 0])
    paired = compare.seeded_difference(heuristic, maximal, tasks, paired_seeds=True)
    unpaired = compare.seeded_difference(heuristic, maximal, tasks)
    assert paired["seed_spread"]["differences"] == pytest.approx([2.0, 2.0, 2.0])
    assert paired["high"] - paired["low"] < unpaired["high"] - unpaired["low"]
    with pytest.raises(ShearsError, match="paired seeds"):
        compare.seeded_difference(heuristic, maximal[:2], tasks, paired_seeds=True)


def test_the_seeds_needed_grow_with_the_seed_spread_and_documents_set_a_floor():
    tasks = ["piqa", "winogrande"]
    base = [1, 0, 0, 1, 0, 1, 1, 0] * 25
    lora = _seed_runs(base, [0, 0, 0])
    agreeing = compare.seeded_difference(_seed_runs(base, [20, 22, 18]), lora, tasks)
    disagreeing = compare.seeded_difference(_seed_runs(base, [60, 20, -20]), lora, tasks)
    few, many = compare.seeds_to_detect(agreeing, effect=10.0), compare.seeds_to_detect(disagreeing, effect=10.0)
    assert few is not None and many is not None and many > 4 * few
    # Half a point on 200 documents a task is below what the documents themselves resolve: no number of seeds does it.
    assert compare.seeds_to_detect(disagreeing, effect=0.5) is None
    with pytest.raises(ShearsError, match="two seeds"):
        compare.seeds_to_detect(compare.seeded_difference(lora[:1], lora[:1], tasks), effect=1.0)
