"""Two models scored on the same documents (log-likelihood results files of `shears evaluate`): each one's
average over tasks with its standard error, and their *paired* difference with a bootstrap interval.

Pairing matters: two rows scored on the same documents share most of their noise (the hard documents are
hard for both), so the interval of their difference is far narrower than two separate error bars suggest.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShearsError
from .harness import headline_metric

BOOTSTRAP_SAMPLES = 5000


def document_scores(results: dict, task: str) -> np.ndarray:
    """The task's per-document 0/1 headline scores, in document order."""
    metric = headline_metric(results["tasks"][task])
    return np.array([d[metric] for d in results["examples"][task]], dtype=float)


def average(results: dict, tasks: list[str]) -> float:
    """The mean over tasks of each task's headline score, in %."""
    return 100 * float(np.mean([document_scores(results, t).mean() for t in tasks]))


def standard_error(results: dict, tasks: list[str]) -> float:
    """Of `average`: the tasks' sample standard errors (lm-eval's), added in quadrature, in points."""
    summaries = [results["tasks"][t] for t in tasks]
    return 100 * math.sqrt(sum(s[f"{headline_metric(s)}_stderr"] ** 2 for s in summaries)) / len(summaries)


def paired_difference(first: dict, second: dict, tasks: list[str], seed: int = 0) -> dict:
    """first - second averaged over tasks, on the same documents: the difference, its bootstrap standard error
    and 95% percentile interval (documents resampled within each task, the same draw for both), in points."""
    diffs = []
    for task in tasks:
        if [d["doc"] for d in first["examples"][task]] != [d["doc"] for d in second["examples"][task]]:
            raise ShearsError(f"{task}: the two results were scored on different documents; score both with the same "
                              "--data and --limit")
        diffs.append(document_scores(first, task) - document_scores(second, task))
    rng = np.random.default_rng(seed)
    samples = np.zeros(BOOTSTRAP_SAMPLES)
    for d in diffs:
        samples += d[rng.integers(0, len(d), size=(BOOTSTRAP_SAMPLES, len(d)))].mean(axis=1)
    samples *= 100 / len(diffs)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"diff": 100 * float(np.mean([d.mean() for d in diffs])), "se": float(samples.std()),
            "low": float(low), "high": float(high)}
