"""One search run: a strategy on a search space, through one evaluation cache, written to an output folder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import MANIFEST, StageFolder, read_json, write_json, write_manifest
from .cache import Budget, EvaluationCache, Record
from .outputs import pareto_front, plot_pareto, record_json
from ..nls.space import NAMED, SearchSpace
from .strategies import run_strategy

STAGE = "search"
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
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    title = f"{summary['strategy']}: {summary['metric']} vs {summary['cost']}"
    partial = out / ".pareto.partial.png"
    plot_pareto(partial, run.cache, run.anchors, title, summary["cost"], chosen=run.chosen)
    os.replace(partial, out / "pareto.png")
    write_search_summary(out, summary, manifest)


def write_search_summary(output: str | os.PathLike, summary: dict, manifest: dict) -> None:
    """search.json, then the manifest that marks the folder complete (the old one goes first)."""
    out = Path(output)
    (out / MANIFEST).unlink(missing_ok=True)
    write_json(out / SEARCH_FILE, summary)
    write_manifest(out, {"stage": STAGE, **manifest, "strategy": summary["strategy"], "chosen": summary["chosen"]["ranks"]})


# The reference's heuristic: run_math.py / run_commonsense.py / run_gsm8k.py (lines 621-629 of run_math.py) activate
# `{k: v[(len(v) - 1) // 2] for k, v in width_search_space.items()}` and test it; nothing is evaluated to choose it.
REFERENCE_HEURISTIC = "v[(len(v) - 1) // 2] per group, evaluating nothing (run_math.py, run_commonsense.py, run_gsm8k.py)"


def heuristic_choice(space: SearchSpace, cost_name: str, cost: float) -> dict:
    """The search.json of the reference's heuristic: the middle rank of every group, no evaluation, no validation data."""
    ranks = list(space.heuristic)
    return {
        "strategy": "heuristic", "metric": None, "cost": cost_name, "budget": 0, "seed": None,
        "settings": {"rule": REFERENCE_HEURISTIC}, "strategy_evaluations": 0, "objective_evaluations": 0,
        "search_seconds": 0.0, "group_names": list(space.group_names),
        "search_space": [list(options) for options in space.ranks],
        "chosen": {"ranks": ranks, "ranks_by_group": dict(zip(space.group_names, ranks)), "cost": cost},
        "anchors": {}, "path": [ranks], "pareto_front": [], "evaluated": [],
    }


class SearchFolder(StageFolder):
    """A `shears search` folder: `search.json` (strategy, chosen, anchors, front), `pareto.png`, the evaluations."""

    STAGE = STAGE

    @property
    def summary(self) -> dict:
        return read_json(self.path / SEARCH_FILE, what="search results")

    @property
    def chosen_ranks(self) -> list[int]:
        """The sub-adapter it chose: one rank per adapter group."""
        return self.manifest["chosen"]


def read_search(folder: str | os.PathLike) -> dict:
    """The `search.json` of a complete search folder (its manifest written)."""
    return SearchFolder.read(folder).summary
