"""`shears search`: super-adapter -> validation subset -> strategy through one evaluation cache -> search.json, pareto.png."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import content_digest
from ..errors import ShearsError
from ..protocol import get_protocol
from ..nls.folder import ADAPTER_WEIGHTS, adapter_parameters, super_adapter_groups
from .cache import Budget, EvaluationCache
from .objective import (COSTS, METRICS, AccuracyObjective, LoglikObjective, LossObjective, adapter_cost, nncf_macs_cost,
                        validation_records)
from .run import SEARCH_FILE, evaluations_file, run_search, write_search_folder
from ..nls.space import SearchSpace
from .strategies import check_strategy


def search_command(args) -> None:
    # Bad flags fail before anything is loaded.
    check_strategy(args.strategy)
    if args.budget is not None:
        Budget.check_limit(args.budget)
    if args.metric not in METRICS:
        raise ShearsError(f"unknown metric {args.metric!r}; expected {' or '.join(METRICS)}")
    if args.cost not in COSTS:
        raise ShearsError(f"unknown cost {args.cost!r}; expected {' or '.join(COSTS)}")
    names, widths, modules, manifest = super_adapter_groups(args.super_adapter)
    space = SearchSpace.of(widths, names)
    search_config = manifest["config"]["bootstrapNAS"].get("search", {})
    protocol = args.protocol or manifest.get("protocol") or "shears"  # the flag, else the one it was trained under
    records, overlap = validation_records(args.data, args.tasks, args.limit, args.seed, manifest, protocol, args.metric)

    from ..models import dtype_name, resolve_device, resolve_dtype
    from ..nls.supernet import open_super_adapter

    base = args.model or manifest["base_model"]
    dtype = resolve_dtype(args.dtype, resolve_device("auto"))
    supernet, tokenizer = open_super_adapter(args.super_adapter, base, dtype)
    if args.metric == "accuracy":
        objective = AccuracyObjective(supernet, tokenizer, records, batch_size=args.batch_size, protocol=protocol)
    elif args.metric == "loglik":
        objective = LoglikObjective(supernet, tokenizer, records, batch_size=args.batch_size,
                                    prompt_style=args.prompt_style, protocol=protocol)
    else:
        max_length = manifest["config"].get("shears", {}).get("training", {}).get("max_length", 256)
        objective = LossObjective(supernet, tokenizer, records, max_length, batch_size=args.batch_size, protocol=protocol)
    if args.cost == "macs":
        cost, cost_name = nncf_macs_cost(supernet), "MACs (NNCF)"
    else:
        cost, cost_name = adapter_cost(adapter_parameters(args.super_adapter, modules)), "adapter parameters"
    # Everything an evaluation's value depends on: a rerun with the same settings reuses every stored one.
    settings = {"adapter": content_digest(Path(args.super_adapter) / ADAPTER_WEIGHTS), "base_model": base,
                "data": content_digest(args.data) if Path(args.data).exists() else args.data, "tasks": args.tasks, "limit": args.limit, "seed": args.seed,
                "batch_size": args.batch_size, "cost": cost_name, "protocol": protocol,
                **({"prompt_style": args.prompt_style} if args.metric == "loglik" else {})}
    cache = EvaluationCache(objective, cost, store=evaluations_file(args.output), settings=settings)
    if cache.reused:
        print(f"reusing {cache.reused} evaluations stored in {evaluations_file(args.output)}")
    run = run_search(space, cache, args.strategy, budget=args.budget, seed=args.seed, search_config=search_config,
                     cost_name=cost_name)
    carved = get_protocol(protocol).val_set_size
    run.summary["validation"] = {
        "protocol": protocol, "data": manifest["data"] if carved else args.data,
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
