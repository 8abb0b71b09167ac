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


def seeded_difference(firsts: list[dict], seconds: list[dict], tasks: list[str], paired_seeds: bool = False,
                      seed: int = 0) -> dict:
    """Method A (one results file per training seed) minus method B, averaged over tasks and seeds, on the same
    documents, with an interval that holds both sources of noise: which documents were drawn and which training
    runs happened. A two-level bootstrap: every resample draws the documents (within each task, the same draw for
    every file, so the pairing by document is kept) and, independently, each method's seeds with replacement, or one
    draw of seed indices for both when the seeds are paired (two sub-adapters of the same super-adapters).

    With one seed per method the seed draw is the identity and this is `paired_difference`. With few seeds the
    resampled seed spread underestimates the true one (3 seeds: by a factor sqrt(2/3) in variance), so the
    interval is, if anything, narrow; `seed_spread` reports the per-seed figures beside it."""
    if not firsts or not seconds:
        raise ShearsError("a seeded comparison needs at least one results file per method")
    if paired_seeds and len(firsts) != len(seconds):
        raise ShearsError(f"paired seeds need as many results of each kind ({len(firsts)} vs {len(seconds)})")
    for task in tasks:
        docs = [[d["doc"] for d in r["examples"][task]] for r in [*firsts, *seconds]]
        if any(d != docs[0] for d in docs):
            raise ShearsError(f"{task}: the results were scored on different documents; score every run with the "
                              "same --data and --limit")
    rng = np.random.default_rng(seed)
    n_a, n_b = len(firsts), len(seconds)
    seeds_a = rng.integers(0, n_a, size=(BOOTSTRAP_SAMPLES, n_a))
    seeds_b = seeds_a if paired_seeds else rng.integers(0, n_b, size=(BOOTSTRAP_SAMPLES, n_b))
    samples, documents = np.zeros(BOOTSTRAP_SAMPLES), np.zeros(BOOTSTRAP_SAMPLES)  # documents: the seeds kept as run
    for task in tasks:
        a = np.stack([document_scores(r, task) for r in firsts])  # seeds x documents
        b = np.stack([document_scores(r, task) for r in seconds])
        docs = rng.integers(0, a.shape[1], size=(BOOTSTRAP_SAMPLES, a.shape[1]))
        a_means = a[:, docs].mean(axis=2).T  # resamples x seeds: each seed's mean on the drawn documents
        b_means = b[:, docs].mean(axis=2).T
        samples += (np.take_along_axis(a_means, seeds_a, axis=1).mean(axis=1)
                    - np.take_along_axis(b_means, seeds_b, axis=1).mean(axis=1))
        documents += a_means.mean(axis=1) - b_means.mean(axis=1)
    samples *= 100 / len(tasks)
    documents *= 100 / len(tasks)
    low, high = np.percentile(samples, [2.5, 97.5])
    per_a, per_b = [average(r, tasks) for r in firsts], [average(r, tasks) for r in seconds]
    spread = {"first": per_a, "second": per_b}
    if paired_seeds:
        spread["differences"] = [x - y for x, y in zip(per_a, per_b)]
    return {"diff": float(np.mean(per_a) - np.mean(per_b)), "se": float(samples.std()), "low": float(low),
            "high": float(high), "se_documents": float(documents.std()), "seeds": [n_a, n_b], "seed_spread": spread}


def seeds_to_detect(comparison: dict, effect: float, detectable_factor: float = 2.8) -> int | None:
    """Training seeds per method at which a `seeded_difference` of this design would detect `effect` points at 80%
    power, projected from this one: the seeds' part of its variance shrinks as 1/seeds (their spread estimated from
    the per-seed figures, unbiased), the documents' part (`se_documents`: the same documents at every size) does
    not. None when the documents alone keep the interval too wide for `effect`: more documents are needed, not more
    seeds."""
    spread = comparison["seed_spread"]
    groups = [spread["differences"]] if "differences" in spread else [spread["first"], spread["second"]]
    if min(len(g) for g in groups) < 2:
        raise ShearsError("projecting the seeds needed takes at least two seeds per method")
    room = (effect / detectable_factor) ** 2 - comparison["se_documents"] ** 2
    if room <= 0:
        return None
    return max(1, math.ceil(sum(np.var(g, ddof=1) for g in groups) / room))


def verdict(comparison: dict, detectable_factor: float = 2.8) -> str:
    """The rule stated before the numbers: a claim "first > second" holds when the whole 95% interval is above 0,
    is refuted when it is all below, and is otherwise inconclusive at this size, with the difference that the
    study would detect at 80% power (2.8 standard errors)."""
    if comparison["low"] > 0:
        return "holds"
    if comparison["high"] < 0:
        return "refuted"
    return f"inconclusive (detects ~{detectable_factor * comparison['se']:.1f} points)"
