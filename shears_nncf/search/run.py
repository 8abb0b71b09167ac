"""One search run: a strategy on a search space, through one evaluation cache, written to an output folder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import MANIFEST, write_json, write_manifest
from .cache import Budget, EvaluationCache, Record
from .outputs import pareto_front, plot_pareto, record_json
from ..nls.space import NAMED, SearchSpace
from .strategies import run_strategy

SEARCH_FILE = "search.json"
EVALUATIONS_FILE = "evaluations.json"


@dataclass
class SearchRun:
    summary: dict  # the content of search.json
    cache: EvaluationCache
    anchors: dict[str, Record]
    chosen: Record
    looked_at: list[Record]  # the distinct configurations the strategy itself asked for (its budget)


def run_search(
    space: SearchSpace,
    cache: EvaluationCache,
    strategy: str,
    *,
    budget: int | None = None,
    seed: int = 0,
    search_config: dict | None = None,
    cost_name: str = "adapter parameters",
) -> SearchRun:
    """Run `strategy`, then evaluate the anchors (maximal, heuristic, minimal) through the same cache for the
    report. The budget bounds the strategy's own evaluations only."""
    start = time.perf_counter()
    limited = Budget(cache, budget)
    result = run_strategy(strategy, space, limited, seed=seed, search_config=search_config)
    search_seconds = time.perf_counter() - start
    anchors = {name: cache.evaluate(space.named(name)) for name in NAMED}
    chosen = cache.evaluate(result.chosen)
    records = list(cache.records.values())

    def js(record):
        return record_json(record, cache, space.group_names)

    summary = {
        "strategy": strategy,
        "metric": cache.metric,
        "cost": cost_name,
        "budget": limited.limit,
        "seed": seed,
        "settings": result.settings,
        "strategy_evaluations": limited.used,  # distinct configurations the strategy looked at
        "objective_evaluations": cache.evaluations,  # real evaluations, anchors included
        "search_seconds": round(search_seconds, 3),
        "group_names": list(space.group_names),
        "search_space": [list(options) for options in space.ranks],
        "chosen": js(chosen),
        "anchors": {name: js(record) for name, record in anchors.items()},
        "path": [list(c) for c in result.path],
        "pareto_front": [js(r) for r in pareto_front(records, cache)],
        "evaluated": [js(r) for r in records],
    }
    return SearchRun(summary, cache, anchors, chosen, result.evaluated)


def evaluations_file(output: str | os.PathLike) -> Path:
    """Where a search keeps every evaluation as it happens (the cache's store), inside its output folder."""
    return Path(output) / EVALUATIONS_FILE


def write_search_folder(output: str | os.PathLike, run: SearchRun, manifest: dict) -> None:
    """search.json, pareto.png, then the manifest (stage "search") that marks the folder complete.

    The folder already holds the evaluation cache, so it is filled file by file, each written atomically;
    the old manifest goes first, so a folder is complete exactly when it has one."""
    summary, out = run.summary, Path(output)
    (out / MANIFEST).unlink(missing_ok=True)
    write_json(out / SEARCH_FILE, summary)
    title = f"{summary['strategy']}: {summary['metric']} vs {summary['cost']}"
    partial = out / ".pareto.partial.png"
    plot_pareto(partial, run.cache, run.anchors, title, summary["cost"], chosen=run.chosen)
    os.replace(partial, out / "pareto.png")
    write_manifest(out, {"stage": "search", **manifest, "strategy": summary["strategy"], "chosen": summary["chosen"]["ranks"]})
