"""`shears run`: every stage in order, each into its own sub-folder, skipping what is already done.

Each step is a stage of `stages.py` called directly with its options: the registry's defaults, the
config's `shears.pipeline.<stage>` section over them, and the folders of the steps before it. A step's
*key* hashes its options, the content of every input file it names that no earlier step wrote (data,
calibration, the training part of the config, copied into the run folder without `shears.pipeline`) and
the keys of the steps it depends on. `pipeline.json` records the key of every completed step, so a step
whose output exists and whose key is unchanged is skipped: an interrupted run resumes where it stopped,
and a changed setting or input file reruns exactly what depends on it. Stages write their outputs
atomically, so a half-finished step never looks complete.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import content_digest, read_json, read_manifest, write_json, write_text
from .bench import sparse_path
from .errors import ShearsError
from .evaluation.harness import headline
from .stages import STAGES

STATE_FILE = "pipeline.json"
TRAIN_CONFIG = "train_config.json"
# Settings of the whole run and the steps they go to: the model loaded for pruning, training and scoring is
# loaded in `dtype`; training reads the protocol from its copy of the config and the search from the
# super-adapter, so only the evaluation of the exported IR is told.
RUN_SETTINGS = {"dtype": ("sparsify", "train", "search"), "protocol": ("evaluate",)}


@dataclass
class Step:
    stage: str  # the name in stages.STAGES: CLI verb, manifest stage and step name alike
    args: argparse.Namespace
    product: Path  # exists only once the step has completed (stages write atomically)
    depends: list[str] = field(default_factory=list)
    name: str = ""  # the step's name in pipeline.json: the stage's, or for a second scoring "evaluate-loglik"

    def __post_init__(self):
        self.name = self.name or self.stage


def pipeline_settings(config_raw: dict, model: str | None, data: str | None, source: str = "config") -> dict:
    """The `shears.pipeline` section of the config, checked against the stages; --model / --data override it."""
    section = copy.deepcopy(config_raw.get("shears", {}).get("pipeline", {}))
    for name, options in section.items():
        if name in ("model", "dtype"):
            continue
        if name not in STEPS:
            raise ShearsError(f"{source}: shears.pipeline.{name} is neither a step of `shears run` "
                              f"({', '.join(STEPS)}) nor model or dtype")
        for dest, value in options.items():
            _check_option(name, dest, value, source)
    if model:
        section["model"] = model
    if data:
        section.setdefault("train", {})["data"] = data
    if not section.get("model"):
        raise ShearsError(f"{source} names no model (shears.pipeline.model) and no --model was given; "
                          "name one, e.g. --model smollm2-135m (the embedded demo model) or a hub id")
    return section


def _check_option(stage: str, dest: str, value, source: str) -> None:
    """One option of a stage section: the stage has it, the run does not set it itself, a choice is valid.
    The evaluation's `scoring` may also be a list: the run then scores the exported model each way."""
    if stage == "evaluate" and dest == "scoring" and isinstance(value, list):
        if not value or len(set(value)) != len(value):
            raise ShearsError(f"{source}: shears.pipeline.evaluate.scoring is {value!r}; give one scoring or a list of "
                              "different ones, e.g. [\"generate\", \"loglik\"]")
        for one in value:
            _check_option(stage, dest, one, source)
        return
    options = {o.dest: o for o in STAGES[stage].options}
    where = f"{source}: shears.pipeline.{stage}.{dest}"
    if dest in WIRED[stage]:
        raise ShearsError(f"{where} is set by `shears run` itself (the folders of the steps before); remove it")
    if dest not in options:
        known = sorted(set(options) - set(WIRED[stage]))
        raise ShearsError(f"{where}: `shears {stage}` has no option {dest!r}; its options are {', '.join(known)}")
    choices = options[dest].settings.get("choices")
    if choices and value not in choices:
        raise ShearsError(f"{where} is {value!r}; expected one of {', '.join(map(str, choices))}")


def check_inputs(settings: dict) -> None:
    """What must exist before a run writes anything: the base model (its config, a few KB) and a training file."""
    from .models import load_model_config

    load_model_config(settings["model"])
    data = settings.get("train", {}).get("data", STAGES["train"].option("data").default)
    if Path(data).suffix in (".json", ".jsonl") and not Path(data).expanduser().is_file():
        raise ShearsError(f"training data file {data} does not exist here; download it (the config's comment says "
                          "from where) or give --data")


# Step name -> (its product inside the run folder, the steps it reads from).
STEPS = {
    "sparsify": ("sparse", []),
    "train": ("super_adapter", ["sparsify"]),
    "search": ("search", ["train"]),
    "extract": ("sub_adapter", ["train", "search"]),
    "export": ("openvino", ["sparsify", "extract"]),
    "evaluate": ("eval/results.json", ["export"]),
    "bench": ("bench/bench.json", ["sparsify", "export"]),
}


def _wiring(out: Path, train_config: Path, settings: dict) -> dict[str, dict]:
    """The options of each step that come from the run itself: the model and the folders of earlier steps."""
    p = {name: out / product for name, (product, _) in STEPS.items()}
    return {
        "sparsify": {"model": settings["model"], "output": p["sparsify"]},
        "train": {"config": train_config, "model": p["sparsify"], "output": p["train"]},
        "search": {"super_adapter": p["train"], "output": p["search"]},
        "extract": {"super_adapter": p["train"], "subnet": p["search"] / "search.json", "output": p["extract"]},
        "export": {"model": p["sparsify"], "adapter": p["extract"], "output": p["export"]},
        "evaluate": {"openvino": p["export"], "output": p["evaluate"]},
        "bench": {"folders": [p["export"], p["sparsify"]], "json_out": p["bench"]},
    }


WIRED = {name: tuple(values) for name, values in _wiring(Path("."), Path("."), {"model": None}).items()}


def plan(train_config: Path, output: str | os.PathLike, settings: dict) -> list[Step]:
    """The steps of a run, in order, each with every option resolved (registry defaults, config, wiring)."""
    out = Path(output)
    wiring = _wiring(out, train_config, settings)
    steps = []
    for name, (product, depends) in STEPS.items():
        stage = STAGES[name]
        run_wide = {k: settings[k] for k, steps in RUN_SETTINGS.items() if name in steps and settings.get(k)}
        section = settings.get(name, {})
        for step_name, path, override in _variants(name, section, out / product):
            args = stage.namespace(**{**run_wide, **section, **wiring[name], **override})
            steps.append(Step(name, args, path, depends, name=step_name))
    return steps


def _variants(name: str, section: dict, product: Path) -> list[tuple[str, Path, dict]]:
    """(step name, product, options) of each step a stage makes: one, except evaluate with a list of scorings,
    whose first writes the stage's product and each other eval/results-<scoring>.json as step evaluate-<scoring>."""
    scorings = section.get("scoring") if name == "evaluate" else None
    if not isinstance(scorings, list):
        return [(name, product, {})]
    paths = [product] + [product.with_name(f"results-{scoring}.json") for scoring in scorings[1:]]
    names = [name] + [f"{name}-{scoring}" for scoring in scorings[1:]]
    return [(n, path, {"scoring": scoring, "output": path}) for n, path, scoring in zip(names, paths, scorings)]


def step_keys(steps: list[Step], digests: dict[str, str]) -> dict[str, str]:
    """Each step's key: its options, the content of the input files they name (other than earlier steps'
    outputs) and the keys of the steps it reads from. Known before anything runs."""
    keys: dict[str, str] = {}
    products = [step.product for step in steps]
    for step in steps:
        options = {k: v for k, v in sorted(vars(step.args).items()) if k != "command"}
        digest = hashlib.sha256(json.dumps(options, default=str).encode())
        for name in step.depends:
            digest.update(keys[name].encode())
        for value in options.values():
            for path in _paths(value):
                if not any(path == p or p in path.parents for p in products):  # those are keyed by `depends`
                    digest.update(_cached_digest(path, digests).encode())
        keys[step.name] = digest.hexdigest()[:16]
    return keys


def _paths(value) -> list[Path]:
    values = value if isinstance(value, list) else [value]
    return [Path(v) for v in values if isinstance(v, (str, Path)) and str(v) and Path(v).exists()]


def _cached_digest(path: Path, digests: dict[str, str]) -> str:
    """A file's (or folder's) content digest, recomputed only when a size or modification time changed."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    cache_key = hashlib.sha256(stamp.encode()).hexdigest()
    if cache_key not in digests:
        digests[cache_key] = content_digest(path)
    return digests[cache_key]


def argv(step: Step) -> str:
    return "shears " + " ".join(STAGES[step.stage].argv(step.args))


def run_pipeline(config: str | os.PathLike, output: str | os.PathLike, model: str | None = None,
                 data: str | None = None, protocol: str | None = None) -> dict:
    """Run (or resume) every step, then write summary.json and summary.md into `output`.

    `protocol` overrides the config's `shears.protocol`: training reads it from the run's copy of the
    config, the search from the super-adapter, the evaluation of the exported IR from its option."""
    from .config import load_config

    load_config(config, protocol=protocol)  # a bad config fails before any step runs
    raw = read_json(config, what="config")
    if protocol:
        raw["shears"]["protocol"] = protocol
    settings = pipeline_settings(raw, model, data, source=str(config))
    settings["protocol"] = raw["shears"].get("protocol")
    check_inputs(settings)  # offline without the model, or without the data: one line, and nothing written
    from .nls.training import checkpoint_dir  # imports NNCF: after the checks, which need none of it

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    # Training reads the config minus the pipeline section, so a changed evaluation setting retrains nothing.
    train_config = out / TRAIN_CONFIG
    training_part = copy.deepcopy(raw)
    training_part["shears"].pop("pipeline", None)
    if not train_config.exists() or read_json(train_config) != training_part:
        write_json(train_config, training_part)
    state_path = out / STATE_FILE
    state = read_json(state_path, what="pipeline state") if state_path.exists() else {"stages": {}}
    steps = plan(train_config, out, settings)
    keys = step_keys(steps, state.setdefault("digests", {}))
    for step in steps:
        key = keys[step.name]
        done = state["stages"].get(step.name, {})
        if step.product.exists() and done.get("key") == key and done.get("complete"):
            print(f"[shears run] {step.name}: up to date, skipped")
            continue
        if step.stage == "train" and done.get("key") == key and any(checkpoint_dir(step.product).glob("checkpoint-*")):
            step.args.resume = True  # the same training was interrupted: continue it
        command = argv(step)
        print(f"[shears run] {step.name}: {command}")
        state["stages"][step.name] = {"key": key, "command": command, "complete": False}
        write_json(state_path, state)
        start = time.perf_counter()
        STAGES[step.stage].run(step.args)
        state["stages"][step.name] = {"key": key, "command": command, "complete": True,
                                       "seconds": round(time.perf_counter() - start, 1)}
        write_json(state_path, state)
    summary = summarize(out, settings, state)
    write_json(out / "summary.json", summary)
    markdown = summary_markdown(summary)
    write_text(out / "summary.md", markdown)
    print(markdown)
    return summary


def summarize(out: Path, settings: dict, state: dict) -> dict:
    """The headline figures of every stage, read back from their outputs."""
    sparse = read_manifest(out / "sparse", stage="sparsify")
    train = read_manifest(out / "super_adapter", stage="train")
    search = read_json(out / "search" / "search.json", what="search results")
    export = read_manifest(out / "openvino", stage="export")
    results = read_json(out / "eval" / "results.json", what="evaluation results")
    scorings = settings.get("evaluate", {}).get("scoring")
    also = {scoring: read_json(out / "eval" / f"results-{scoring}.json", what="evaluation results")
            for scoring in (scorings[1:] if isinstance(scorings, list) else [])}
    bench = read_json(out / "bench" / "bench.json", what="benchmark results")
    return {
        "demonstration_size": True,
        "settings": settings,
        "sparsity": {k: sparse["sparsity"][k] for k in ("total_parameters", "nonzero_parameters",
                                                        "decoder_linear_sparsity")} | {"method": sparse["method"]},
        "training": {k: train.get(k) for k in ("optimizer_steps", "examples", "first_loss", "last_loss")},
        "sub_adapter": {"strategy": search["strategy"], "ranks": search["chosen"]["ranks"],
                        "cost": search["chosen"]["cost"], "cost_name": search["cost"]},
        "openvino": {"weights": export["weights"], "ir_sparsity": export["sparsity"]},
        "accuracy": _headlines(results),
        "scoring": results.get("scoring", "generate"),
        "also_scored": {scoring: _headlines(other) for scoring, other in also.items()},
        "bench": [{"folder": row["folder"], "backend": row["backend"], "sparse_rate": row["sparse_rate"],
                   "weights": row.get("weights"), "tokens_per_s": row.get("tokens_per_s"), "ttft_ms": row.get("ttft_ms"),
                   "tpot_ms": row.get("tpot_ms"), "peak_rss_mb": row.get("peak_rss_mb"), "status": row.get("status"),
                   "sparse_path": sparse_path(row, bench["cpu"]["amx"])} for row in bench["rows"]],
        "cpu": bench.get("cpu"),
        "stage_seconds": {name: s.get("seconds") for name, s in state["stages"].items()},
    }


def _headlines(results: dict) -> dict:
    return {name: headline(t) for name, t in results["tasks"].items()} | {"average": results["average"]}


_SCORING_HEADER = {"generate": "accuracy, generation (%)", "loglik": "acc_norm, log-likelihood (%)"}


def _accuracy_table(summary: dict) -> list[str]:
    """One column per scoring the run asked for: the first one's tasks, the others' beside them."""
    columns = {summary["scoring"]: summary["accuracy"], **summary.get("also_scored", {})}
    lines = ["| task | " + " | ".join(_SCORING_HEADER[s] for s in columns) + " |", "|---|" + "---|" * len(columns)]
    for name in summary["accuracy"]:
        cells = [f"{100 * acc[name]:.1f}" if name in acc else "-" for acc in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(summary: dict) -> str:
    sp, tr, sub = summary["sparsity"], summary["training"], summary["sub_adapter"]
    ir = summary["openvino"]["ir_sparsity"]
    lines = [
        "# shears run summary",
        "",
        "Demonstration size: few training steps and small evaluation subsets; the figures show that every stage "
        "works, not the method's accuracy at scale.",
        "",
        f"- Sparsity ({sp['method']}): decoder linears {sp['decoder_linear_sparsity']:.1%} zero; "
        f"{sp['nonzero_parameters']:,} non-zero of {sp['total_parameters']:,} parameters",
        f"- Training: {tr['optimizer_steps']} optimizer steps on {tr['examples']} examples, "
        f"loss {tr['first_loss']:.3f} -> {tr['last_loss']:.3f}",
        f"- Sub-adapter ({sub['strategy']}): {_rank_counts(sub['ranks'])}; {int(sub['cost']):,} {sub['cost_name']}",
        f"- OpenVINO IR ({summary['openvino']['weights']} weights, adapter unmerged): base linears "
        f"{ir['base_sparsity']:.1%} zero as counted in the IR ({ir['base_zeros']:,} of {ir['base_params']:,} weights)",
        "",
        *_accuracy_table(summary),
        "",
        f"CPU: {summary['cpu']['model']}, AMX: {'yes' if summary['cpu']['amx'] else 'no'}",
        "",
        "| model | backend | weights | sparse rate | tokens/s | TTFT ms | peak RSS MB | sparse path |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {Path(r['folder']).name} | {r['backend']} | {r['weights']} | {r['sparse_rate'] or '-'} | "
          f"{_number(r['tokens_per_s'])} | {_number(r['ttft_ms'])} | {_number(r['peak_rss_mb'])} | {r['sparse_path']} |"
          for r in summary["bench"]],
        "",
        "| stage | seconds (last run) |",
        "|---|---|",
        *[f"| {name} | {seconds} |" for name, seconds in summary["stage_seconds"].items()],
        "",
    ]
    return "\n".join(lines)


def _rank_counts(ranks: list[int]) -> str:
    counts = {rank: ranks.count(rank) for rank in sorted(set(ranks), reverse=True)}
    return ", ".join(f"{n} groups at rank {rank}" for rank, n in counts.items())


def _number(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def run_command(args) -> None:
    """`shears run`."""
    run_pipeline(args.config, args.output, model=args.model, data=args.data, protocol=args.protocol)
