"""Search strategies over a `SearchSpace`, each spending a `Budget` of evaluations and returning its choice.

* `maximal`, `minimal`, `heuristic`: fixed configurations (the heuristic is Eq. 3 of the paper); they
  spend no evaluation to choose.
* `hill-climbing` (the paper's cheap refinement of the heuristic): from the heuristic, evaluate the
  neighbours (seeded order), move to the best improving one, stop at a local optimum or when the
  budget is spent.
* `nsga2` / `rnsga2`: pymoo's NSGA-II / R-NSGA-II with the operators NNCF's BootstrapNAS search uses
  (integer random sampling, SBX and polynomial mutation with rounding), on the two objectives
  (cost, -metric); their settings are NNCF's `bootstrapNAS.search` keys, read by NNCF's own
  `SearchParams`. NNCF's search class itself needs an NNCFNetwork and its controller to evaluate, so the
  loop here is pymoo's ask/tell, which also lets a generation stop exactly at the budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from ..errors import ShearsError
from . import STRATEGIES
from .cache import Budget, BudgetExhausted, Record
from ..nls.space import Config, SearchSpace

DEFAULT_BUDGET = 50  # when neither --budget nor the config's num_evals says


@dataclass
class SearchResult:
    strategy: str
    chosen: Config
    evaluated: list[Record]  # every distinct configuration the strategy looked at, in order
    path: list[Config] = field(default_factory=list)  # hill-climbing: the configurations it moved through
    settings: dict = field(default_factory=dict)


def run_strategy(name: str, space: SearchSpace, budget: Budget, *, seed: int = 0, search_config: dict | None = None) -> SearchResult:
    """The strategy `name` through its handler (`search.STRATEGIES`; an unknown name is a ShearsError listing them)."""
    return STRATEGIES[name].function(name, space, budget, seed=seed, search_config=search_config or {})


# Each strategy's handler (search.STRATEGIES) takes (name, space, budget, *, seed, search_config) and may ignore some.
def named(name: str, space: SearchSpace, budget: Budget, *, seed: int, search_config: dict) -> SearchResult:
    """maximal, heuristic, minimal: the configuration of that name; nothing is evaluated to choose it."""
    return SearchResult(name, space.named(name), [])


def hill_climbing(name: str, space: SearchSpace, budget: Budget, *, seed: int, search_config: dict) -> SearchResult:
    """Steepest-ascent hill-climbing from the heuristic; ties in the metric go to the cheaper configuration.
    It has no settings of its own in `bootstrapNAS.search` (those are the evolutionary search's)."""
    rng = random.Random(seed)
    current = budget.evaluate(space.heuristic)
    path = [current.ranks]
    exhausted = False
    while not exhausted:
        neighbours = space.neighbours(current.ranks)
        rng.shuffle(neighbours)  # decides which neighbours are seen when the budget runs out mid-way
        best = current
        for config in neighbours:
            try:
                record = budget.evaluate(config)
            except BudgetExhausted:
                exhausted = True
                break
            if budget.key(record) > budget.key(best):
                best = record
        if best is current:
            break  # a local optimum: no neighbour improves
        current = best
        path.append(current.ranks)
    return SearchResult(name, current.ranks, list(budget.seen.values()), path, {"seed": seed})


def _search_params(name: str, search_config: dict, budget: Budget, seed: int):
    """NNCF's own reading of `bootstrapNAS.search` (its key names and defaults), with --budget and --seed.

    NNCF's default `acc_delta` of 1 is one accuracy point; for a loss the default tolerance is 0.01."""
    from nncf.experimental.torch.nas.bootstrapNAS.search.search import RNSGA2SearchParams, SearchParams

    section = dict(search_config)
    if budget.limit is not None:
        section["num_evals"] = budget.limit
    if budget.cache.metric == "loss":
        section.setdefault("acc_delta", 0.01)
    section.setdefault("num_evals", DEFAULT_BUDGET)
    section.setdefault("population", min(40, section["num_evals"]))
    section.setdefault("seed", seed)
    cls = RNSGA2SearchParams if name == "rnsga2" else SearchParams
    try:
        return cls.from_dict(section)
    except ValueError as e:
        raise ShearsError(f"bootstrapNAS.search: {e} (population {section['population']}, num_evals {section['num_evals']})") from None


def evolutionary(name: str, space: SearchSpace, budget: Budget, *, seed: int, search_config: dict) -> SearchResult:
    """NSGA-II / R-NSGA-II on (cost, -metric); stops at num_evals distinct configurations or the budget."""
    from shears_nncf import nncf_torch  # noqa: F401  (nncf.torch must not be imported before it)
    from nncf.experimental.torch.nas.bootstrapNAS.search.search import FixIntegerRandomSampling
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.algorithms.moo.rnsga2 import RNSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.termination import get_termination

    params = _search_params(name, search_config, budget, seed)
    if budget.limit is None:
        budget.limit = int(params.num_evals)
    operators = dict(
        pop_size=params.population,
        sampling=FixIntegerRandomSampling(),
        crossover=SBX(prob=params.crossover_prob, eta=params.crossover_eta, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=params.mutation_prob, eta=params.mutation_eta, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    settings = {k: getattr(params, k) for k in ("num_evals", "population", "seed", "crossover_prob", "crossover_eta",
                                                  "mutation_prob", "mutation_eta", "acc_delta", "ref_acc")}
    if name == "rnsga2":
        points = _aspiration_points(space, budget, search_config)
        settings.update(aspiration_points=points.tolist(), epsilon=params.epsilon)
        algorithm = RNSGA2(ref_points=points, epsilon=params.epsilon, normalization="front", weights=params.weights,
                           extreme_points_as_reference_points=params.extreme_points_as_ref_points, **operators)
    else:
        algorithm = NSGA2(**operators)

    problem = Problem(n_var=len(space), n_obj=2, xl=np.zeros(len(space)),
                      xu=np.array([len(options) - 1 for options in space.ranks]), vtype=int)
    generations = max(1, int(params.num_evals) // int(params.population))
    np.random.seed(int(params.seed))  # FixIntegerRandomSampling draws from numpy's global generator
    algorithm.setup(problem, termination=get_termination("n_gen", generations), seed=int(params.seed))
    try:
        while algorithm.has_next():
            population = algorithm.ask()
            objectives = []
            for x in population.get("X"):
                record = budget.evaluate(space.from_indices(np.rint(x).astype(int)))
                objectives.append([record.cost, -budget.cache.fitness(record)])
            population.set("F", np.array(objectives, dtype=float))
            algorithm.tell(infills=population)
    except BudgetExhausted:
        pass  # the partial generation's evaluations are kept in the budget's records
    evaluated = list(budget.seen.values())
    if not evaluated:
        raise ShearsError(f"{name}: the budget allowed no evaluation")
    return SearchResult(name, _select(evaluated, budget, params, space), evaluated, settings=settings)


def _aspiration_points(space: SearchSpace, budget: Budget, search_config: dict) -> np.ndarray:
    """R-NSGA-II reference points in its minimisation space (cost, -fitness).

    From the config: `aspiration_points` as [cost, metric] pairs, in the units search.json reports. By default
    one point at the utopia (the minimal sub-adapter's cost with a perfect metric: 100% or zero loss), which
    steers the search towards the knee of the accuracy/cost front."""
    perfect = 100.0 if budget.cache.higher_is_better else 0.0
    points = search_config.get("aspiration_points") or [[budget.cache.cost(space.minimal), perfect]]
    points = np.array(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ShearsError(f"bootstrapNAS.search.aspiration_points must be [[cost, {budget.cache.metric}], ...], got {points.tolist()}")
    sign = -1.0 if budget.cache.higher_is_better else 1.0
    return np.column_stack([points[:, 0], sign * points[:, 1]])


def _select(evaluated: list[Record], budget: Budget, params, space: SearchSpace) -> Config:
    """NNCF's rule for picking one sub-network: the cheapest whose metric is within `acc_delta` of the reference
    (`ref_acc`, or by default the maximal sub-adapter's), else the best-scoring one."""
    fitness = budget.cache.fitness
    if params.ref_acc is not None and params.ref_acc >= 0:
        reference = params.ref_acc if budget.cache.higher_is_better else -params.ref_acc
    else:
        reference = fitness(budget.cache.evaluate(space.maximal))
    within = [r for r in evaluated if fitness(r) >= reference - params.acc_delta]
    if within:
        return min(within, key=lambda r: (r.cost, -fitness(r))).ranks
    return max(evaluated, key=budget.key).ranks
