"""`shears search`: super-adapter -> validation subset -> strategy through one evaluation cache -> search.json, pareto.png."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import atomic_output_dir, clear_output, content_digest
from ..nls.folder import SuperAdapter
from ..data.prompts import protocol_for_model
from ..protocol import PROTOCOLS, Protocol
from . import COSTS, METRICS, STRATEGIES
from .cache import Budget, EvaluationCache
from .objective import (AccuracyObjective, LoglikObjective, LossObjective, adapter_cost, nncf_macs_cost, validation_plan,
                        validation_records)
from .run import (REFERENCE_HEURISTIC, SEARCH_FILE, STAGE, evaluations_file, heuristic_choice, run_search,
                  write_search_folder, write_search_summary)


def search_command(args) -> None:
    # Bad flags fail before anything is loaded, also in a Namespace built without argparse (its `choices=` check).
    STRATEGIES[args.strategy], METRICS[args.metric], COSTS[args.cost]  # an unknown name: a ShearsError listing them
    if args.budget is not None:
        Budget.check_limit(args.budget)
    trained = SuperAdapter.read(args.super_adapter)
    space = trained.space
    protocol = PROTOCOLS[args.protocol] if args.protocol else trained.protocol  # the flag, else the one trained under
    carved = trained.config.training.val_set_size  # records training set aside, the search's when there are any
    plan = validation_plan(args.strategy, args.data, args.tasks, args.metric, protocol, carved,
                           trained.training_data["tasks"])
    if plan is None:
        return _choose_without_evaluating(args, trained, protocol)
    records, overlap = validation_records(args.data, args.tasks, args.limit, args.seed, trained.training_data, carved)

    from ..models import dtype_name, resolve_device, resolve_dtype
    from ..nls.supernet import open_super_adapter

    base = args.model or trained.base_model
    dtype = resolve_dtype(args.dtype, resolve_device("auto"))
    supernet, tokenizer = open_super_adapter(trained, base, dtype)
    protocol = protocol_for_model(protocol, base)  # MPT under the reference: run_gsm8k.py's templates
    if args.metric == "accuracy":
        objective = AccuracyObjective(supernet, tokenizer, records, batch_size=args.batch_size, protocol=protocol)
    elif args.metric == "loglik":
        objective = LoglikObjective(supernet, tokenizer, records, batch_size=args.batch_size,
                                    prompt_style=args.prompt_style, protocol=protocol)
    else:
        objective = LossObjective(supernet, tokenizer, records, trained.max_length, batch_size=args.batch_size,
                                  protocol=protocol, truncation=trained.config.training.truncation)
    cost = nncf_macs_cost(supernet) if args.cost == "macs" else adapter_cost(trained.parameters_per_rank())
    cost_name = COSTS[args.cost].label
    # Everything an evaluation's value depends on: a rerun with the same settings reuses every stored one.
    settings = {"adapter": content_digest(trained.weights_file), "base_model": base,
                "data": content_digest(args.data) if Path(args.data).exists() else args.data, "tasks": args.tasks, "limit": args.limit, "seed": args.seed,
                "batch_size": args.batch_size, "cost": cost_name, "protocol": protocol.name,
                **({"prompt_style": args.prompt_style} if args.metric == "loglik" else {})}
    # The folder is filled in place: with --overwrite, what another stage or the user left there goes now.
    clear_output(args.output, STAGE, overwrite=args.overwrite)
    cache = EvaluationCache(objective, cost, store=evaluations_file(args.output), settings=settings)
    if cache.reused:
        print(f"reusing {cache.reused} evaluations stored in {evaluations_file(args.output)}")
    run = run_search(space, cache, args.strategy, budget=args.budget, seed=args.seed, search_config=trained.search_settings,
                     cost_name=cost_name)
    run.summary["validation"] = {
        "protocol": protocol.name, "source": plan, "data": trained.training_data["data"] if carved else args.data,
        "split": f"{carved} records carved from the training data" if carved
        else "train (minus the training records)" if args.data == "default" else "validation",
        "tasks": sorted(records), "examples": sum(len(r) for r in records.values()), "seed": args.seed,
        "examples_seen_in_training": overlap,
    }
    write_search_folder(args.output, run, {
        "super_adapter": str(Path(args.super_adapter).resolve()), "base_model": base, "metric": args.metric,
        "dtype": dtype_name(dtype),
    })
    chosen = run.summary["chosen"]
    print(f"{args.strategy}: chose ranks {chosen['ranks']} ({args.metric} {chosen[args.metric]:.4g}, "
          f"{int(chosen['cost'])} {cost_name}) after {run.summary['strategy_evaluations']} evaluations; "
          f"wrote {Path(args.output) / SEARCH_FILE}")


def _choose_without_evaluating(args, trained: SuperAdapter, protocol: Protocol) -> None:
    """The reference's heuristic: the middle rank of every group, chosen without loading a model or any data; its
    cost is counted from the adapter's shapes (adapter parameters, whatever --cost says: MACs need the model)."""
    cost = adapter_cost(trained.parameters_per_rank())(trained.space.heuristic)
    summary = heuristic_choice(trained.space, COSTS["params"].label, cost)
    summary["validation"] = {"protocol": protocol.name, "source": None, "split": "none: nothing is evaluated",
                             "examples": 0}
    with atomic_output_dir(args.output, STAGE, overwrite=args.overwrite) as tmp:
        write_search_summary(tmp, summary, {"super_adapter": str(Path(args.super_adapter).resolve()),
                                            "base_model": args.model or trained.base_model, "metric": None, "dtype": None})
    print(f"heuristic ({protocol.name} protocol): chose ranks {summary['chosen']['ranks']} ({int(cost)} {COSTS['params'].label}) "
          f"as {REFERENCE_HEURISTIC}; wrote {Path(args.output) / SEARCH_FILE}")
