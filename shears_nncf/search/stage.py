"""The search stage as one call: super-adapter -> validation subset -> strategy through one evaluation cache ->
search folder (search.json, pareto.png, the evaluations).

`search_sub_adapter(super_adapter, SearchConfig(...), output)` is what `shears search` and `shears run` do; the
handler in `cli.py` only builds the `SearchConfig` from its flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..artifacts import atomic_output_dir, clear_output, content_digest
from ..data.prompts import protocol_for_model
from ..errors import ShearsError
from ..nls.folder import SuperAdapter
from ..protocol import PROTOCOLS, Protocol
from . import COSTS, METRICS, STRATEGIES
from .cache import Budget, EvaluationCache
from .objective import (AccuracyObjective, LoglikObjective, LossObjective, adapter_cost, nncf_macs_cost, validation_plan,
                        validation_records)
from .run import (REFERENCE_HEURISTIC, SEARCH_FILE, STAGE, SearchFolder, evaluations_file, heuristic_choice, run_search,
                  write_search_folder, write_search_summary)


@dataclass(frozen=True)
class SearchConfig:
    """How `shears search` chooses a sub-adapter: `shears search`'s flags, with their defaults. Made, its names are
    known ones (`STRATEGIES`, `METRICS`, `COSTS`) and its budget within bounds."""

    strategy: str
    budget: int | None = None
    metric: str = "accuracy"
    cost: str = "params"
    data: str = "default"
    tasks: list[str] | None = None
    limit: int | None = 50
    prompt_style: str = "lm-eval"
    batch_size: int = 8
    seed: int = 0
    protocol: str | None = None
    dtype: str = "auto"

    def __post_init__(self):
        STRATEGIES[self.strategy], METRICS[self.metric], COSTS[self.cost]  # an unknown name: one line listing them
        if self.budget is not None:
            Budget.check_limit(self.budget)

    @classmethod
    def from_args(cls, args) -> "SearchConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def search_sub_adapter(super_adapter: str | os.PathLike, config: SearchConfig, output: str | os.PathLike, *,
                       model: str | None = None, overwrite: bool = False) -> SearchFolder:
    """Search the trained super-adapter (on `model`, default the base it was trained on) for a sub-adapter and write
    the search folder; a rerun with the same settings reuses every evaluation stored there."""
    trained = SuperAdapter.read(super_adapter, quantization_aware=True)
    if trained.quantization and config.cost == "macs":
        raise ShearsError(f"{super_adapter} is quantization-aware: its MACs are not counted (NNCF counts them on a "
                          "BootstrapNAS supernet); use --cost params")
    protocol = PROTOCOLS[config.protocol] if config.protocol else trained.protocol  # else the one trained under
    carved = trained.config.training.val_set_size  # records training set aside, the search's when there are any
    plan = validation_plan(config.strategy, config.data, config.tasks, config.metric, protocol, carved,
                           trained.training_data["tasks"])
    if plan is None:
        return _choose_without_evaluating(super_adapter, trained, protocol, output, model, overwrite)
    records, overlap = validation_records(config.data, config.tasks, config.limit, config.seed, trained.training_data,
                                          carved)
    base = model or trained.base_model
    supernet, tokenizer, dtype = _open(trained, base, config.dtype)
    protocol = protocol_for_model(protocol, base)  # MPT under the reference: run_gsm8k.py's templates
    cost = nncf_macs_cost(supernet) if config.cost == "macs" else adapter_cost(trained.parameters_per_rank())
    cost_name = COSTS[config.cost].label
    # Everything an evaluation's value depends on: a rerun with the same settings reuses every stored one.
    settings = {"adapter": content_digest(trained.weights_file), "base_model": base,
                "data": content_digest(config.data) if Path(config.data).exists() else config.data,
                "tasks": config.tasks, "limit": config.limit, "seed": config.seed, "batch_size": config.batch_size,
                "cost": cost_name, "protocol": protocol.name,
                **({"prompt_style": config.prompt_style} if config.metric == "loglik" else {})}
    # The folder is filled in place: with overwrite, what another stage or the user left there goes now.
    clear_output(output, STAGE, overwrite=overwrite)
    cache = EvaluationCache(_objective(config, supernet, tokenizer, records, protocol, trained), cost,
                            store=evaluations_file(output), settings=settings)
    if cache.reused:
        print(f"reusing {cache.reused} evaluations stored in {evaluations_file(output)}")
    run = run_search(trained.space, cache, config.strategy, budget=config.budget, seed=config.seed,
                     search_config=trained.search_settings, cost_name=cost_name)
    run.summary["validation"] = {
        "protocol": protocol.name, "source": plan, "data": trained.training_data["data"] if carved else config.data,
        "split": f"{carved} records carved from the training data" if carved
        else "train (minus the training records)" if config.data == "default" else "validation",
        "tasks": sorted(records), "examples": sum(len(r) for r in records.values()), "seed": config.seed,
        "examples_seen_in_training": overlap,
    }
    write_search_folder(output, run, {"super_adapter": str(Path(super_adapter).resolve()), "base_model": base,
                                      "metric": config.metric, "dtype": dtype})
    chosen = run.summary["chosen"]
    print(f"{config.strategy}: chose ranks {chosen['ranks']} ({config.metric} {chosen[config.metric]:.4g}, "
          f"{int(chosen['cost'])} {cost_name}) after {run.summary['strategy_evaluations']} evaluations; "
          f"wrote {Path(output) / SEARCH_FILE}")
    return SearchFolder.read(output)


def _open(trained: SuperAdapter, base: str, dtype: str):
    """The trained supernet on `base` and its tokenizer, and the precision it runs in: the float super-adapter's
    BootstrapNAS supernet in `dtype`, or the quantization-aware model (fp32: what its fake quantizers compute in)."""
    from ..models import dtype_name, resolve_device, resolve_dtype

    if trained.quantization:
        from ..nls.qa_training import open_qa_super_adapter

        return (*open_qa_super_adapter(trained, base), "fp32")
    from ..nls.supernet import open_super_adapter

    torch_dtype = resolve_dtype(dtype, resolve_device("auto"))
    return (*open_super_adapter(trained, base, torch_dtype), dtype_name(torch_dtype))


def _objective(config: SearchConfig, supernet, tokenizer, records: dict, protocol: Protocol, trained: SuperAdapter):
    """What one evaluation of a sub-adapter measures on the validation records (`--metric`)."""
    if config.metric == "accuracy":
        return AccuracyObjective(supernet, tokenizer, records, batch_size=config.batch_size, protocol=protocol)
    if config.metric == "loglik":
        return LoglikObjective(supernet, tokenizer, records, batch_size=config.batch_size,
                               prompt_style=config.prompt_style, protocol=protocol)
    return LossObjective(supernet, tokenizer, records, trained.max_length, batch_size=config.batch_size,
                         protocol=protocol, truncation=trained.config.training.truncation)


def _choose_without_evaluating(super_adapter, trained: SuperAdapter, protocol: Protocol, output, model: str | None,
                               overwrite: bool) -> SearchFolder:
    """The reference's heuristic: the middle rank of every group, chosen without loading a model or any data; its
    cost is counted from the adapter's shapes (adapter parameters, whatever `cost` says: MACs need the model)."""
    cost = adapter_cost(trained.parameters_per_rank())(trained.space.heuristic)
    summary = heuristic_choice(trained.space, COSTS["params"].label, cost)
    summary["validation"] = {"protocol": protocol.name, "source": None, "split": "none: nothing is evaluated",
                             "examples": 0}
    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        write_search_summary(tmp, summary, {"super_adapter": str(Path(super_adapter).resolve()),
                                            "base_model": model or trained.base_model, "metric": None, "dtype": None})
    print(f"heuristic ({protocol.name} protocol): chose ranks {summary['chosen']['ranks']} ({int(cost)} "
          f"{COSTS['params'].label}) as {REFERENCE_HEURISTIC}; wrote {Path(output) / SEARCH_FILE}")
    return SearchFolder.read(output)
