"""The steps of `shears run`, each with its options resolved, and the run itself: check, plan, run, summarize.

Each step is a stage of `stages.py` called directly with its options: the registry's defaults, the
config's `shears.pipeline.<stage>` section over them, and the folders of the steps before it. The steps run
through `steps.StepRunner`, the machinery the benchmark studies use too: a step's key hashes its options, the
content of the input files it names that no earlier step wrote (data, calibration, the training part of the
config, copied into the run folder without `shears.pipeline`) and the keys of the steps whose products it
reads; a step whose output exists and whose key is unchanged is skipped, so an interrupted run resumes where
it stopped and a changed setting or input file reruns exactly what depends on it. `pipeline.json` lists every
step's record (`steps/<name>.json`) and marks the folder as a run's.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from ..artifacts import clear_output, read_json, write_json, write_text
from ..errors import ShearsError
from ..protocol import Protocol
from ..search.run import SEARCH_FILE
from ..stages import STAGES
from ..steps import Step, StepRunner
from .render import summary_markdown
from .summary import RunSummary, summarize

STATE_FILE = "pipeline.json"
TRAIN_CONFIG = "train_config.json"
# Settings of the whole run and the steps they go to: the model loaded for pruning, training and scoring is
# loaded in `dtype`; training reads the protocol from its copy of the config and the search from the
# super-adapter, so only the evaluation is told (the exported IR has no manifest of it).
RUN_SETTINGS = {"dtype": ("sparsify", "train", "search", "evaluate"), "protocol": ("evaluate",)}
# What the evaluation scores (shears.pipeline.evaluate_on, one or both): "pytorch", the sparse base with the chosen
# sub-adapter unmerged, in PyTorch at the run's dtype on the model's device, as the reference scores it (run_math.py
# `test_subnetwork`: the super-adapter's sub-network); "openvino", the exported IR on the CPU. Export and bench run
# only for "openvino". Default: the reference protocol's way under `reference`, the deployed IR under `shears`.
EVALUATE_ON = ("pytorch", "openvino")
DEFAULT_EVALUATE_ON = {"reference": ["pytorch"], "shears": ["openvino"]}
# A run that scores by log-likelihood also scores, the same way on the same documents, the dense base, the sparse base
# alone and the sparse base with its sub-adapter in PyTorch ("pytorch" above), each its own step: with them the
# summary can say what pruning and the sub-adapter each changed, as paired differences
# (evaluation/compare.py). Log-likelihood is cheap (one forward pass per choice) and needs no training of its own.
COMPARED = ("dense", "sparse", "pytorch")


def pipeline_settings(config_raw: dict, model: str | None, data: str | None, source: str = "config") -> dict:
    """The `shears.pipeline` section of the config, checked against the stages; --model / --data override it."""
    section = copy.deepcopy(config_raw.get("shears", {}).get("pipeline", {}))
    for name, options in section.items():
        if name in ("model", "dtype"):
            continue
        if name == "evaluate_on":
            evaluate_on = [options] if isinstance(options, str) else options
            if not evaluate_on or len(set(evaluate_on)) != len(evaluate_on) or not set(evaluate_on) <= set(EVALUATE_ON):
                raise ShearsError(f"{source}: shears.pipeline.evaluate_on is {options!r}; give one or both of "
                                  f"{', '.join(EVALUATE_ON)}")
            section[name] = evaluate_on
            continue
        if name not in STEPS:
            raise ShearsError(f"{source}: shears.pipeline.{name} is neither a step of `shears run` "
                              f"({', '.join(STEPS)}) nor model, dtype or evaluate_on")
        for dest, value in options.items():
            _check_option(name, dest, value, source)
    if model:
        section["model"] = model
    if data:
        section.setdefault("train", {})["data"] = data
    if not section.get("model"):
        raise ShearsError(f"{source} names no model (shears.pipeline.model) and no --model was given; "
                          "name one, e.g. --model smollm2-135m (the embedded demo model) or a hub id")
    section["protocol"] = config_raw.get("shears", {}).get("protocol")
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
    try:
        options[dest].parse(value)  # the flag's own check (a positive size, a ratio in range...)
    except ShearsError as e:
        raise ShearsError(f"{where}: {e}") from None


def check_inputs(settings: dict, protocol: Protocol, val_set_size: int) -> None:
    """What must hold before a run writes anything: the base model exists (its config, a few KB), and so do the
    training file and the test files; the search can choose its validation data (`validation_plan`)."""
    from ..data.sources import LM_EVAL, MIXTURE, load_records
    from ..models import load_model_config
    from ..search.objective import validation_plan

    load_model_config(settings["model"])
    train = {dest: settings.get("train", {}).get(dest, STAGES["train"].option(dest).default) for dest in ("data", "tasks")}
    if Path(train["data"]).suffix in (".json", ".jsonl") and not Path(train["data"]).expanduser().is_file():
        raise ShearsError(f"training data file {train['data']} does not exist here; download it (the config's comment "
                          "says from where) or give --data")
    if train["data"] == LM_EVAL:  # lm-eval words only the tasks with choices to rank: say so before pruning
        from ..data.lm_eval_documents import worded_tasks

        tasks = train["tasks"]
        worded_tasks(None if tasks in (None, [MIXTURE]) else tasks)
    search = {o.dest: settings.get("search", {}).get(o.dest, o.default) for o in STAGES["search"].options}
    if search["strategy"]:
        validation_plan(search["strategy"], search["data"], search["tasks"], search["metric"], protocol, val_set_size,
                        train["tasks"])
    evaluate = {dest: settings.get("evaluate", {}).get(dest, STAGES["evaluate"].option(dest).default)
                for dest in ("data", "tasks", "limit", "scoring")}
    if "generate" in (evaluate["scoring"] if isinstance(evaluate["scoring"], list) else [evaluate["scoring"]]):
        load_records(evaluate["data"], evaluate["tasks"], split="test", limit=evaluate["limit"])


def check_quantization_aware(settings: dict, source: str) -> None:
    """A run of a quantization-aware config deploys the sub-adapter as one IR at the format it was trained in, and
    scores it as that IR: a setting that asks for another format or a PyTorch score of it is refused up front."""
    if "pytorch" in evaluate_on(settings):
        raise ShearsError(f"{source}: shears.quantization trains a quantization-aware super-adapter, scored as the INT4 "
                          "IR it deploys as (PyTorch evaluation of it is not supported); set shears.pipeline.evaluate_on "
                          "to [\"openvino\"]")
    fixed = sorted(set(settings.get("export", {})) & {"weights", "int4_ratio", "group_size", "int4_mode",
                                                      "int4_all_layers", "runtime_adapter"})
    if fixed:
        raise ShearsError(f"{source}: shears.pipeline.export.{fixed[0]}: a quantization-aware sub-adapter is exported "
                          "as it was trained (shears.quantization sets its format), folded into the integer weights; "
                          "remove it")


# Step name -> its product inside the run folder. A step reads the products its wiring names (steps.py keys it so).
STEPS = {
    "sparsify": "sparse",
    "train": "super_adapter",
    "search": "search",
    "extract": "sub_adapter",
    "export": "openvino",
    "evaluate": "eval/results.json",
    "bench": "bench/bench.json",
}


def _wiring(out: Path, train_config: Path, settings: dict) -> dict[str, dict]:
    """The options of each step that come from the run itself: the model and the folders of earlier steps."""
    p = {name: out / product for name, product in STEPS.items()}
    return {
        "sparsify": {"model": settings["model"], "output": p["sparsify"]},
        "train": {"config": train_config, "model": p["sparsify"], "output": p["train"]},
        "search": {"super_adapter": p["train"], "output": p["search"]},
        "extract": {"super_adapter": p["train"], "subnet": p["search"] / SEARCH_FILE, "output": p["extract"]},
        "export": {"model": p["sparsify"], "adapter": p["extract"], "output": p["export"]},
        "evaluate": {"model": p["sparsify"], "adapter": p["extract"], "openvino": p["export"], "output": p["evaluate"]},
        "bench": {"folders": [p["export"], p["sparsify"]], "json_out": p["bench"]},
    }


WIRED = {name: tuple(values) for name, values in _wiring(Path("."), Path("."), {"model": None}).items()}
# Each model `evaluate` scores: the wired options it clears. In PyTorch it is the sparse
# base with the extracted sub-adapter: the super-adapter's sub-network at the search's ranks (the same model, tested in
# test_extract.py), without NNCF's per-op tracing around every generated token. "dense" is the run's base model
# (`_variants` names it), "sparse" the pruned one alone.
_EVALUATED = {
    "dense": {"adapter": None, "openvino": None},
    "sparse": {"adapter": None, "openvino": None},
    "pytorch": {"openvino": None},
    "openvino": {"model": None, "adapter": None},
}


def evaluate_on(settings: dict) -> list[str]:
    """The models the run scores: shears.pipeline.evaluate_on, else the protocol's default."""
    return settings.get("evaluate_on") or DEFAULT_EVALUATE_ON[settings.get("protocol") or "shears"]


def plan(train_config: Path, output: str | os.PathLike, settings: dict, quantization_aware: bool = False) -> list[Step]:
    """The steps of a run, in order, each with every option resolved (registry defaults, config, wiring).

    `quantization_aware` (the config has shears.quantization): the sub-adapter is scored only as the INT4 IR it deploys
    as, since PyTorch evaluation of such a super-adapter is not supported; the dense and sparse rows stay."""
    out = Path(output)
    wiring = _wiring(out, train_config, settings)
    models = evaluate_on(settings)
    compared = [model for model in COMPARED if not (quantization_aware and model == "pytorch")]
    steps = []
    for name, product in STEPS.items():
        if name in ("export", "bench") and "openvino" not in models:
            continue
        stage = STAGES[name]
        run_wide = {k: settings[k] for k, steps in RUN_SETTINGS.items() if name in steps and settings.get(k)}
        section = settings.get(name, {})
        for step_name, path, override in _variants(name, section, out / product, models, compared, settings["model"]):
            args = stage.namespace(**{**run_wide, **section, **wiring[name], **override})
            steps.append(Step(name, args, path, name=step_name))
    return steps


def _variants(name: str, section: dict, product: Path, models: list[str], compared: list[str],
              base: str) -> list[tuple[str, Path, dict]]:
    """(step name, product, options) of each step a stage makes: one, except evaluate, which makes one
    per model it scores (`evaluate_on`) and scoring (`scoring` may be a list), and for log-likelihood one per
    model of `compared` (`COMPARED`, or what of it applies) besides. The first writes the stage's product as step `evaluate`; each other writes
    eval/results-<what>.json as step evaluate-<what>, where <what> names its model where that is not the first one's
    and its scoring where that is not the first one's (evaluate-loglik, evaluate-dense-loglik)."""
    if name != "evaluate":
        return [(name, product, {})]
    scorings = section["scoring"] if isinstance(section.get("scoring"), list) else [None]  # None: the section's one
    logliks = [scoring for scoring in scorings if (scoring or section.get("scoring")) == "loglik"]
    pairs = [(model, scoring) for model in models for scoring in scorings]
    pairs += [(model, scoring) for scoring in logliks for model in compared if model not in models]
    variants = []
    for model, scoring in pairs:
        what = "-".join(part for part, first in ((model, models[0]), (scoring, scorings[0])) if part != first)
        path = product.with_name(f"results-{what}.json") if what else product
        clears = {**_EVALUATED[model], **({"model": base} if model == "dense" else {})}
        variants.append((f"{name}-{what}" if what else name, path,
                         {**clears, "output": path, **({"scoring": scoring} if scoring else {})}))
    return variants


def run_pipeline(config: str | os.PathLike, output: str | os.PathLike, model: str | None = None,
                 data: str | None = None, protocol: str | None = None, overwrite: bool = False) -> RunSummary:
    """Run (or resume) every step, then write summary.json and summary.md into `output`.

    `protocol` overrides the config's `shears.protocol`: training reads it from the run's copy of the
    config, the search from the super-adapter, the evaluation of the exported IR from its option.
    An `output` holding anything but a run's folder is refused, or with `overwrite` replaced."""
    from ..config import load_config

    loaded = load_config(config, protocol=protocol)  # a bad config fails before any step runs
    raw = read_json(config, what="config")
    if protocol:
        raw["shears"]["protocol"] = protocol
    settings = pipeline_settings(raw, model, data, source=str(config))
    if loaded.quantization:
        check_quantization_aware(settings, str(config))
    # Offline without the model, without the data, or with a search or evaluation that cannot be made: one line, and
    # nothing written.
    check_inputs(settings, loaded.protocol, loaded.training.val_set_size)

    out = Path(output)
    clear_output(out, "run", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE  # written first: it marks the folder as a run's (artifacts.written_by)
    if not state_path.exists():
        write_json(state_path, {"stages": {}})
    # Training reads the config minus the pipeline section, so a changed evaluation setting retrains nothing.
    train_config = out / TRAIN_CONFIG
    training_part = copy.deepcopy(raw)
    training_part["shears"].pop("pipeline", None)
    if not train_config.exists() or read_json(train_config) != training_part:
        write_json(train_config, training_part)
    steps = plan(train_config, out, settings, quantization_aware=bool(loaded.quantization))
    runner = StepRunner(out, label="shears run", index=state_path)
    for step in steps:
        runner.run(step)
    summary = summarize(settings, {name: runner.record(name) for name in runner.keys}, steps)
    summary.write(out)
    markdown = summary_markdown(summary)
    write_text(out / "summary.md", markdown)
    print(markdown)
    return summary


def run_command(args) -> None:
    """`shears run`."""
    run_pipeline(args.config, args.output, model=args.model, data=args.data, protocol=args.protocol,
                 overwrite=args.overwrite)
