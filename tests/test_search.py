"""Search strategies on cheap synthetic objectives with known optima, the common cache, budgets, outputs, bad input."""

import json

import pytest

from shears_nncf.cli import main
from shears_nncf.errors import ShearsError
from shears_nncf.search.cache import Budget, EvaluationCache
from shears_nncf.search.outputs import pareto_front
from shears_nncf.search.run import run_search, write_search_folder
from shears_nncf.nls.space import SearchSpace
from shears_nncf.search.subnet import resolve_subnet
from shears_nncf.search.strategies import run_strategy

SPACE = SearchSpace.of([[32, 24, 16]] * 6)
WIDE = SearchSpace.of([[16, 14, 12, 10, 8, 6, 4]] * 4)


class Unimodal:
    """Accuracy peaks at `target` and falls off with the distance (in list steps) from it; counts its calls."""

    metric = "accuracy"

    def __init__(self, space, target):
        self.space, self.target, self.calls = space, tuple(target), []

    def __call__(self, config):
        self.calls.append(tuple(config))
        distance = sum(abs(a - b) for a, b in zip(self.space.indices(config), self.space.indices(self.target)))
        return 80.0 - 2.0 * distance


class Tradeoff:
    """Accuracy rises with the ranks (with diminishing returns) while the cost rises linearly: a real front."""

    metric = "accuracy"

    def __init__(self):
        self.calls = 0

    def __call__(self, config):
        self.calls += 1
        return 50.0 + sum((r / 32) ** 0.5 * (g + 1) for g, r in enumerate(config))


def params(config):
    return float(sum(r * 128 for r in config))


def test_heuristic_is_the_middle_of_every_rank_list_and_needs_no_evaluation():
    space = SearchSpace.of([[32, 24, 16], [16, 12, 8, 4], [8]])
    assert space.heuristic == (24, 12, 8)  # Eq. 3: space[(n-1)//2]
    assert space.maximal == (32, 16, 8) and space.minimal == (16, 4, 8)
    objective = Unimodal(space, space.maximal)
    budget = Budget(EvaluationCache(objective, params), limit=5)
    assert run_strategy("heuristic", space, budget).chosen == (24, 12, 8)
    assert objective.calls == []


def test_neighbours_change_one_group_by_one_step_in_its_list():
    space = SearchSpace.of([[32, 24, 16], [16, 12, 8, 4]])
    assert sorted(space.neighbours((32, 12))) == [(24, 12), (32, 8), (32, 16)]
    assert sorted(space.neighbours((16, 4))) == [(16, 8), (24, 4)]


@pytest.mark.parametrize("target", [(32, 32, 16, 16, 24, 32), (16,) * 6, (32,) * 6])
def test_hill_climbing_reaches_the_optimum_of_a_unimodal_objective(target):
    objective = Unimodal(SPACE, target)
    result = run_strategy("hill-climbing", SPACE, Budget(EvaluationCache(objective, params), None), seed=3)
    assert result.chosen == target
    assert result.path[0] == SPACE.heuristic


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("limit", [1, 4, 9, 30])
def test_hill_climbing_never_ends_worse_than_its_start_and_stays_within_its_budget(seed, limit):
    objective = Unimodal(WIDE, (4, 16, 6, 14))
    budget = Budget(EvaluationCache(objective, params), limit)
    result = run_strategy("hill-climbing", WIDE, budget, seed=seed)
    start = objective(WIDE.heuristic)
    assert objective(result.chosen) >= start
    assert budget.used <= limit and len(result.evaluated) <= limit


def test_hill_climbing_is_reproducible_for_a_seed():
    runs = [run_strategy("hill-climbing", WIDE, Budget(EvaluationCache(Unimodal(WIDE, (4, 16, 6, 14)), params), 7), seed=11)
            for _ in range(2)]
    assert runs[0].chosen == runs[1].chosen
    assert [r.ranks for r in runs[0].evaluated] == [r.ranks for r in runs[1].evaluated]


def test_hill_climbing_moves_to_a_cheaper_neighbour_when_the_metric_ties():
    class Flat:
        metric = "accuracy"

        def __call__(self, config):
            return 70.0

    result = run_strategy("hill-climbing", SPACE, Budget(EvaluationCache(Flat(), params), None), seed=0)
    assert result.chosen == SPACE.minimal  # every step keeps the metric and lowers the cost


def test_the_cache_evaluates_each_configuration_once_across_strategies():
    objective = Unimodal(WIDE, (4, 16, 6, 14))
    cache = EvaluationCache(objective, params)
    first = run_strategy("hill-climbing", WIDE, Budget(cache, None), seed=0)
    calls_after_first = len(objective.calls)
    second = run_strategy("hill-climbing", WIDE, Budget(cache, None), seed=0)
    assert second.chosen == first.chosen
    assert len(objective.calls) == calls_after_first == cache.evaluations  # the second run cost nothing
    assert len(set(objective.calls)) == len(objective.calls)  # never the same configuration twice


class Killed(Exception):
    """Stands in for an interrupted process."""


def test_a_search_killed_after_n_evaluations_evaluates_none_of_them_again(tmp_path):
    store, settings = tmp_path / "out" / "evaluations.json", {"data": "synthetic", "limit": 5}
    interrupted = Unimodal(WIDE, (4, 16, 6, 14))

    def dies_after_five(config):
        if len(interrupted.calls) == 5:
            raise Killed
        return interrupted(config)

    dies_after_five.metric = "accuracy"
    with pytest.raises(Killed):
        run_search(WIDE, EvaluationCache(dies_after_five, params, store=store, settings=settings), "hill-climbing", seed=0)
    assert len(interrupted.calls) == 5

    rerun = Unimodal(WIDE, (4, 16, 6, 14))
    cache = EvaluationCache(rerun, params, store=store, settings=settings)
    assert cache.reused == 5
    resumed = run_search(WIDE, cache, "hill-climbing", seed=0)
    assert not set(rerun.calls) & set(interrupted.calls)  # none of the first five evaluated again
    uninterrupted = run_search(WIDE, EvaluationCache(Unimodal(WIDE, (4, 16, 6, 14)), params), "hill-climbing", seed=0)
    assert resumed.chosen.ranks == uninterrupted.chosen.ranks
    assert len(cache.records) == len(uninterrupted.cache.records)

    other = EvaluationCache(Unimodal(WIDE, (4, 16, 6, 14)), params, store=store, settings={**settings, "limit": 6})
    assert other.reused == 0 and not other.records  # other settings: nothing stored applies


@pytest.mark.parametrize("strategy", ["nsga2", "rnsga2"])
def test_evolutionary_search_returns_a_non_dominated_set_within_its_budget(strategy):
    objective = Tradeoff()
    cache = EvaluationCache(objective, params)
    run = run_search(SPACE, cache, strategy, budget=24, seed=1, search_config={"population": 8})
    summary = run.summary
    assert summary["strategy_evaluations"] <= 24
    assert objective.calls == cache.evaluations == len(summary["evaluated"])  # cached: no configuration twice
    front = summary["pareto_front"]
    assert len(front) >= 2
    for a in front:
        for b in front:
            assert not (b["accuracy"] >= a["accuracy"] and b["cost"] <= a["cost"] and (b["accuracy"], b["cost"]) != (a["accuracy"], a["cost"]))
    for r in summary["evaluated"]:  # every evaluated configuration is dominated by or on the front
        assert any(f["accuracy"] >= r["accuracy"] and f["cost"] <= r["cost"] for f in front)
    assert summary["chosen"]["ranks"] in [e["ranks"] for e in summary["evaluated"]]


def test_evolutionary_search_chooses_the_cheapest_configuration_within_acc_delta_of_the_reference():
    cache = EvaluationCache(Tradeoff(), params)
    run = run_search(SPACE, cache, "nsga2", budget=24, seed=0, search_config={"population": 8, "acc_delta": 2.0})
    maximal = run.summary["anchors"]["maximal"]["accuracy"]
    within = [r for r in run.summary["evaluated"] if r["accuracy"] >= maximal - 2.0]
    assert run.summary["chosen"]["cost"] == min(r["cost"] for r in within)


def test_pareto_front_of_known_points():
    class Table:
        metric = "loss"
        values = {(32,): 1.0, (24,): 1.5, (16,): 1.2}

        def __call__(self, config):
            return self.values[config]

    cache = EvaluationCache(Table(), lambda c: float(c[0]))
    records = [cache.evaluate(c) for c in Table.values]
    assert [r.ranks for r in pareto_front(records, cache)] == [(16,), (32,)]  # (24,) costs more and loses more


def test_search_folder_has_every_evaluation_the_front_and_a_plot(tmp_path):
    cache = EvaluationCache(Unimodal(WIDE, (4, 16, 6, 14)), params)
    run = run_search(WIDE, cache, "hill-climbing", budget=10, seed=0)
    write_search_folder(tmp_path / "out", run, {"super_adapter": "synthetic"})
    summary = json.loads((tmp_path / "out" / "search.json").read_text())
    assert summary["strategy_evaluations"] <= 10
    assert len(summary["evaluated"]) == cache.evaluations
    assert set(summary["anchors"]) == {"maximal", "heuristic", "minimal"}
    assert {"ranks", "accuracy", "cost", "seconds"} <= set(summary["evaluated"][0])
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 1000


def test_a_budget_of_zero_and_an_unknown_strategy_are_one_line_errors():
    cache = EvaluationCache(Unimodal(SPACE, SPACE.maximal), params)
    with pytest.raises(ShearsError, match="budget must be at least 1"):
        Budget(cache, 0)
    with pytest.raises(ShearsError, match="unknown strategy 'greedy'.*hill-climbing"):
        run_strategy("greedy", SPACE, Budget(cache, 3))


def test_configuration_files_with_wrong_groups_or_ranks_are_rejected(tmp_path):
    space = SearchSpace.of([[32, 24, 16]] * 3, ["0:qkv", "0:up", "0:down"])
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"ranks": {"0:qkv": 32, "0:up": 16, "0:down": 24}}))
    assert resolve_subnet(space, str(good)) == ((32, 16, 24), f"file {good}")
    short = tmp_path / "short.json"
    short.write_text(json.dumps([32, 24]))
    with pytest.raises(ShearsError, match="has 2 ranks, but the super-adapter has 3 groups"):
        resolve_subnet(space, str(short))
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"ranks": [32, 20, 16]}))
    with pytest.raises(ShearsError, match="rank 20 of group 0:up is not in its rank list"):
        resolve_subnet(space, str(odd))
    with pytest.raises(ShearsError, match="expected maximal, heuristic, minimal or a .json file"):
        resolve_subnet(space, "middle")


def test_cli_rejects_a_budget_of_zero_and_an_unknown_strategy(tmp_path, capsys):
    command = ["search", "--super-adapter", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as refused:  # argparse refuses the flag: its usage, then one error line
        main(command + ["--strategy", "hill-climbing", "--budget", "0"])
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and err.splitlines()[-1].startswith("shears search: error: argument --budget")
    with pytest.raises(SystemExit) as refused:
        main(command + ["--strategy", "greedy"])
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and err.splitlines()[-1].startswith("shears search: error: argument --strategy: "
                                                                       "invalid choice: 'greedy'")
    assert not (tmp_path / "o").exists()


def test_evolutionary_search_is_reproducible_and_takes_num_evals_from_the_config_section():
    runs = []
    for _ in range(2):
        budget = Budget(EvaluationCache(Tradeoff(), params), None)
        runs.append(run_strategy("rnsga2", SPACE, budget, seed=0, search_config={"num_evals": 12, "population": 6}))
    assert [r.ranks for r in runs[0].evaluated] == [r.ranks for r in runs[1].evaluated]
    assert len(runs[0].evaluated) <= 12 and runs[0].settings["num_evals"] == 12


def test_population_larger_than_the_budget_is_a_one_line_error():
    with pytest.raises(ShearsError, match="Population size must not be greater than number of evaluations"):
        run_strategy("nsga2", SPACE, Budget(EvaluationCache(Tradeoff(), params), 5), search_config={"population": 8})


def test_reference_heuristic_search_loads_no_model_evaluates_nothing_and_extract_reads_its_choice(
        tiny_llama_factory, tiny_tokenizer, tmp_path, monkeypatch, capsys):
    """run_math.py, run_commonsense.py, run_gsm8k.py: `v[(len(v) - 1) // 2]` per group, activated and tested."""
    import shears_nncf.nls.supernet
    from conftest import train_tiny_super_adapter

    trained = train_tiny_super_adapter(tiny_llama_factory(), tiny_tokenizer, tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("the search loaded a model")

    monkeypatch.setattr(shears_nncf.nls.supernet, "open_super_adapter", no_model)
    assert main(["search", "--super-adapter", str(tmp_path / "super"), "--strategy", "heuristic", "--protocol", "reference",
                 "--output", str(tmp_path / "search")]) == 0
    assert "evaluating nothing" in capsys.readouterr().out
    summary = json.loads((tmp_path / "search" / "search.json").read_text())
    middle = list(trained.supernet.space.heuristic)
    assert summary["chosen"]["ranks"] == middle and middle[0] == trained.supernet.search_space[0][1]
    assert (summary["objective_evaluations"], summary["evaluated"], summary["metric"]) == (0, [], None)
    assert summary["chosen"]["cost"] > 0 and not (tmp_path / "search" / "evaluations.json").exists()
    monkeypatch.undo()
    assert main(["extract", "--super-adapter", str(tmp_path / "super"), "--subnet", str(tmp_path / "search" / "search.json"),
                 "--output", str(tmp_path / "sub")]) == 0
    assert set(json.loads((tmp_path / "sub" / "adapter_config.json").read_text())["rank_pattern"].values()) == set(middle)
