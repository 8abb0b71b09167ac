"""Sub-adapter search study in the shape of the paper's Table 6, on a super-adapter from `shears train`.

Every strategy (maximal, heuristic, hill-climbing, RNSGA-II, minimal) searches on the same seeded
validation subset (drawn from the train split, without the training records) through ONE evaluation
cache, then its choice is scored on a test subset. Columns: validation metric, test accuracy,
evaluations the strategy needed (distinct configurations it looked at), the time those evaluations
take (the sum of their measured evaluation times: what the strategy costs on its own, although
the shared cache ran each configuration once), and the chosen sub-adapter's adapter parameters.
Writes search_study.json and pareto.png (every evaluated configuration, the strategies' choices
marked) into --output.

    shears sparsify --model smollm2-135m --ratio 0.5 --output sparse
    shears train --config nncf_configs/demo/smollm2_commonsense.json --model sparse --max-steps 60 --output super
    python benchmarks/search_study.py --super-adapter super --tasks piqa,boolq --val-limit 12 --test-limit 50 --budget 16
"""

import argparse
import time
from pathlib import Path

from shears_nncf.artifacts import write_json
from shears_nncf.data.sources import load_records
from shears_nncf.nls.folder import SuperAdapter
from shears_nncf.search.cache import EvaluationCache
from shears_nncf.search.objective import AccuracyObjective, adapter_cost, validation_records
from shears_nncf.search.outputs import plot_pareto
from shears_nncf.search.run import run_search

STRATEGIES = ("maximal", "heuristic", "hill-climbing", "rnsga2", "minimal")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--super-adapter", required=True)
    parser.add_argument("--tasks", default="piqa,boolq")
    parser.add_argument("--data", default="default")
    parser.add_argument("--val-limit", type=int, default=12, help="validation examples per task")
    parser.add_argument("--test-limit", type=int, default=50, help="test examples per task")
    parser.add_argument("--budget", type=int, default=16, help="evaluations for hill-climbing and RNSGA-II")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="search_study")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]

    trained = SuperAdapter.read(args.super_adapter)
    space = trained.space
    from shears_nncf.nls.supernet import open_super_adapter

    supernet, tokenizer = open_super_adapter(trained)
    val, seen = validation_records(args.data, tasks, args.val_limit, args.seed, trained.training_data)
    test = load_records(args.data, tasks, split="test", limit=args.test_limit)
    cost = adapter_cost(trained.parameters_per_rank())
    val_cache = EvaluationCache(AccuracyObjective(supernet, tokenizer, val, args.batch_size), cost)
    test_cache = EvaluationCache(AccuracyObjective(supernet, tokenizer, test, args.batch_size), cost)

    rows, chosen = [], {}
    for strategy in STRATEGIES:
        start = time.perf_counter()
        budget = args.budget if strategy in ("hill-climbing", "rnsga2") else None
        run = run_search(space, val_cache, strategy, budget=budget, seed=args.seed, search_config=trained.search_settings)
        search_seconds = sum(r.seconds for r in run.looked_at)
        test_record = test_cache.evaluate(run.chosen.ranks)
        chosen[strategy] = run.chosen
        rows.append({
            "strategy": strategy, "validation_accuracy": run.chosen.value, "test_accuracy": test_record.value,
            "evaluations": run.summary["strategy_evaluations"], "search_seconds": round(search_seconds, 1),
            "wall_seconds_in_this_run": round(time.perf_counter() - start, 1),
            "adapter_parameters": int(run.chosen.cost), "ranks": list(run.chosen.ranks),
        })
        print(f"done {strategy}: {rows[-1]}", flush=True)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "search_study.json", {
        "super_adapter": str(Path(args.super_adapter).resolve()), "tasks": tasks, "val_limit": args.val_limit,
        "test_limit": args.test_limit, "budget": args.budget, "seed": args.seed, "validation_seen_in_training": seen,
        "rows": rows, "evaluated": [{"ranks": list(r.ranks), "accuracy": r.value, "cost": r.cost}
                                    for r in val_cache.records.values()],
    })
    plot_pareto(out / "pareto.png", val_cache, chosen, "Sub-adapter search (Table 6 study)", "adapter parameters")

    maximal_params = rows[0]["adapter_parameters"]
    print(f"\nsuper-adapter {args.super_adapter}; tasks {','.join(tasks)}; validation {args.val_limit}/task "
          f"(train split minus training records), test {args.test_limit}/task; budget {args.budget}")
    print(f"{'strategy':<14} {'val acc %':>9} {'test acc %':>10} {'evals':>6} {'search s':>9} {'adapter params':>15} {'vs maximal':>10}")
    for row in rows:
        print(f"{row['strategy']:<14} {row['validation_accuracy']:>9.1f} {row['test_accuracy']:>10.1f} {row['evaluations']:>6} "
              f"{row['search_seconds']:>9.1f} {row['adapter_parameters']:>15,} {row['adapter_parameters'] / maximal_params:>10.2f}")


if __name__ == "__main__":
    main()
