"""The search's choices, declared here so that the CLI reads them without importing torch or pymoo.

`strategies.py` runs a strategy through its handler, `cache.py` orders evaluations by the metric's direction,
`cli.py` builds the objective and the cost the flags name."""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import Choice, Choices
from ..nls.space import NAMED

_STRATEGIES = "shears_nncf.search.strategies"
# A strategy's handler is called (name, space, budget, seed=, search_config=) and returns a SearchResult.
STRATEGIES = Choices(
    "strategy",
    *(Choice(anchor.name, anchor.help, f"{_STRATEGIES}:named") for anchor in NAMED.values()),
    Choice("hill-climbing", "from the heuristic, move to the best improving neighbour (one group one rank step) "
                            "until none improves or the budget is spent", f"{_STRATEGIES}:hill_climbing"),
    Choice("nsga2", "NSGA-II (pymoo, with NNCF BootstrapNAS's operators and its bootstrapNAS.search settings) on cost "
                    "and metric", f"{_STRATEGIES}:evolutionary"),
    Choice("rnsga2", "R-NSGA-II, NSGA-II steered towards aspiration points (bootstrapNAS.search.aspiration_points; "
                     "default: the utopia)", f"{_STRATEGIES}:evolutionary"),
)


@dataclass(frozen=True)
class Metric(Choice):
    higher_is_better: bool = True  # accuracy and loglik are percentages; a loss is better lower


METRICS = Choices(
    "metric",
    Metric("accuracy", "generated answers read by each task's extractor, as the paper"),
    Metric("loss", "the responses' cross-entropy in the training prompt (cheaper)", higher_is_better=False),
    Metric("loglik", "acc_norm of the ranked answer choices through lm-evaluation-harness (commonsense tasks)"),
)


@dataclass(frozen=True)
class Cost(Choice):
    label: str = ""  # how search.json and the evaluation cache name it


COSTS = Choices(
    "cost",
    Cost("params", "the sub-adapter's adapter parameters", label="adapter parameters"),
    Cost("macs", "the MACs of the whole subnet, as NNCF counts them", label="MACs (NNCF)"),
)
