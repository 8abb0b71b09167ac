"""One cache of evaluated configurations per search run, and the per-strategy budget on top of it.

Evaluating a sub-adapter means running the model over the validation subset, which dominates the
cost of a search; so every configuration is evaluated once per run, whichever strategy asks for it.
A strategy's budget counts the distinct configurations *it* looked at (a cached one still counts, so
a strategy's number of evaluations does not depend on what ran before it in the same run).
Given a `store` file, the cache writes every evaluation there as it happens and starts from the
records of an earlier run with the same `settings`, so an interrupted search loses nothing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..artifacts import read_json, write_json
from ..errors import ShearsError
from ..nls.space import Config
from . import METRICS


class Objective(Protocol):
    """What a search measures: `metric` names its entry of `search.METRICS`, which says which way is better."""

    metric: str

    def __call__(self, config: Config) -> float: ...


@dataclass(frozen=True)
class Record:
    ranks: Config
    value: float  # the metric (accuracy or loss) on the validation subset
    cost: float  # adapter parameters (or MACs) of the sub-adapter
    seconds: float  # time the evaluation took


class EvaluationCache:
    """Evaluates each configuration at most once; `evaluations` counts the real objective calls."""

    def __init__(self, objective: Objective, cost: Callable[[Config], float],
                 store: str | os.PathLike | None = None, settings: dict | None = None):
        METRICS[objective.metric]  # an unknown metric is a ShearsError naming the known ones
        self.objective = objective
        self.cost = cost
        self.records: dict[Config, Record] = {}  # in evaluation order
        self.evaluations = 0
        self.store = Path(store) if store is not None else None
        # As it reads back from JSON, so that a stored run's settings compare equal.
        self.settings = json.loads(json.dumps({"metric": objective.metric, **(settings or {})}, default=str))
        self.reused = self._load()

    def _load(self) -> int:
        """Records of an earlier run with the same settings (none when they differ); returns how many."""
        if self.store is None or not self.store.is_file():
            return 0
        saved = read_json(self.store, what="evaluation cache")
        if saved.get("settings") != self.settings:
            return 0
        for row in saved["records"]:
            record = Record(**{**row, "ranks": tuple(row["ranks"])})
            self.records[record.ranks] = record
        return len(self.records)

    @property
    def metric(self) -> str:
        return self.objective.metric

    def fitness(self, record: Record) -> float:
        """Higher is better, whatever the metric."""
        return record.value if self.higher_is_better else -record.value

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    def evaluate(self, config: Config) -> Record:
        config = tuple(config)
        if config not in self.records:
            start = time.perf_counter()
            value = float(self.objective(config))
            self.evaluations += 1
            self.records[config] = Record(config, value, float(self.cost(config)), time.perf_counter() - start)
            if self.store is not None:
                write_json(self.store, {"settings": self.settings,
                                        "records": [asdict(r) for r in self.records.values()]})
        return self.records[config]


class BudgetExhausted(Exception):
    """Raised by `Budget.evaluate` when a strategy asks for one configuration more than its budget."""


class Budget:
    """A strategy's view of the cache: at most `limit` distinct configurations (None: no limit)."""

    def __init__(self, cache: EvaluationCache, limit: int | None):
        if limit is not None:
            self.check_limit(limit)
        self.cache = cache
        self.limit = limit
        self.seen: dict[Config, Record] = {}

    @staticmethod
    def check_limit(limit: int) -> None:
        if limit < 1:
            raise ShearsError(f"--budget must be at least 1 evaluation, got {limit}")

    @property
    def used(self) -> int:
        return len(self.seen)

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.used

    def evaluate(self, config: Config) -> Record:
        config = tuple(config)
        if config not in self.seen:
            if self.limit is not None and self.used >= self.limit:
                raise BudgetExhausted
            self.seen[config] = self.cache.evaluate(config)
        return self.seen[config]

    def key(self, record: Record) -> tuple[float, float]:
        """Sort key, larger is better: the metric first, then the lower cost."""
        return (self.cache.fitness(record), -record.cost)
