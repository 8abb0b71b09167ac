"""`shears run`: every stage in order, each into its own sub-folder, skipping what is already done.

Each step is a stage of `stages.py` called directly with its options: the registry's defaults, the
config's `shears.pipeline.<stage>` section over them, and the folders of the steps before it. The steps run
through `steps.StepRunner`, the machinery the benchmark studies use too: a step's key hashes its options, the
content of the input files it names that no earlier step wrote (data, calibration, the training part of the
config, copied into the run folder without `shears.pipeline`) and the keys of the steps whose products it
reads; a step whose output exists and whose key is unchanged is skipped, so an interrupted run resumes where
it stopped and a changed setting or input file reruns exactly what depends on it. `pipeline.json` lists every
step's record (`steps/<name>.json`) and marks the folder as a run's. summary.md tells a newcomer what happened:
each stage's figures, the scores (by log-likelihood, dense, sparse and adapted rows on the same documents with their
paired differences), the deployed forms as `shears bench` measured them, and the `shears generate` line to try the IR.
"""

from __future__ import annotations

import copy
import os
import shlex
from pathlib import Path

from .artifacts import clear_output, read_json, write_json, write_text
from .bench import sparse_path
from .errors import ShearsError
from .evaluation.harness import headline, headline_metric
from .protocol import Protocol
from .search.run import SEARCH_FILE
from .stages import STAGES
from .steps import Step, StepRunner
from .tables import markdown_table

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
    from .data.sources import load_records
    from .models import load_model_config
    from .search.objective import validation_plan

    load_model_config(settings["model"])
    train = {dest: settings.get("train", {}).get(dest, STAGES["train"].option(dest).default) for dest in ("data", "tasks")}
    if Path(train["data"]).suffix in (".json", ".jsonl") and not Path(train["data"]).expanduser().is_file():
        raise ShearsError(f"training data file {train['data']} does not exist here; download it (the config's comment "
                          "says from where) or give --data")
    search = {o.dest: settings.get("search", {}).get(o.dest, o.default) for o in STAGES["search"].options}
    if search["strategy"]:
        validation_plan(search["strategy"], search["data"], search["tasks"], search["metric"], protocol, val_set_size,
                        train["tasks"])
    evaluate = {dest: settings.get("evaluate", {}).get(dest, STAGES["evaluate"].option(dest).default)
                for dest in ("data", "tasks", "limit", "scoring")}
    if "generate" in (evaluate["scoring"] if isinstance(evaluate["scoring"], list) else [evaluate["scoring"]]):
        load_records(evaluate["data"], evaluate["tasks"], split="test", limit=evaluate["limit"])


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


def plan(train_config: Path, output: str | os.PathLike, settings: dict) -> list[Step]:
    """The steps of a run, in order, each with every option resolved (registry defaults, config, wiring)."""
    out = Path(output)
    wiring = _wiring(out, train_config, settings)
    models = evaluate_on(settings)
    steps = []
    for name, product in STEPS.items():
        if name in ("export", "bench") and "openvino" not in models:
            continue
        stage = STAGES[name]
        run_wide = {k: settings[k] for k, steps in RUN_SETTINGS.items() if name in steps and settings.get(k)}
        section = settings.get(name, {})
        for step_name, path, override in _variants(name, section, out / product, models, settings["model"]):
            args = stage.namespace(**{**run_wide, **section, **wiring[name], **override})
            steps.append(Step(name, args, path, name=step_name))
    return steps


def _variants(name: str, section: dict, product: Path, models: list[str], base: str) -> list[tuple[str, Path, dict]]:
    """(step name, product, options) of each step a stage makes: one, except evaluate, which makes one
    per model it scores (`evaluate_on`) and scoring (`scoring` may be a list), and for log-likelihood one per
    model of `COMPARED` besides. The first writes the stage's product as step `evaluate`; each other writes
    eval/results-<what>.json as step evaluate-<what>, where <what> names its model where that is not the first one's
    and its scoring where that is not the first one's (evaluate-loglik, evaluate-dense-loglik)."""
    if name != "evaluate":
        return [(name, product, {})]
    scorings = section["scoring"] if isinstance(section.get("scoring"), list) else [None]  # None: the section's one
    logliks = [scoring for scoring in scorings if (scoring or section.get("scoring")) == "loglik"]
    pairs = [(model, scoring) for model in models for scoring in scorings]
    pairs += [(model, scoring) for scoring in logliks for model in COMPARED if model not in models]
    variants = []
    for model, scoring in pairs:
        what = "-".join(part for part, first in ((model, models[0]), (scoring, scorings[0])) if part != first)
        path = product.with_name(f"results-{what}.json") if what else product
        clears = {**_EVALUATED[model], **({"model": base} if model == "dense" else {})}
        variants.append((f"{name}-{what}" if what else name, path,
                         {**clears, "output": path, **({"scoring": scoring} if scoring else {})}))
    return variants


def run_pipeline(config: str | os.PathLike, output: str | os.PathLike, model: str | None = None,
                 data: str | None = None, protocol: str | None = None, overwrite: bool = False) -> dict:
    """Run (or resume) every step, then write summary.json and summary.md into `output`.

    `protocol` overrides the config's `shears.protocol`: training reads it from the run's copy of the
    config, the search from the super-adapter, the evaluation of the exported IR from its option.
    An `output` holding anything but a run's folder is refused, or with `overwrite` replaced."""
    from .config import load_config

    loaded = load_config(config, protocol=protocol)  # a bad config fails before any step runs
    if loaded.quantization:
        raise ShearsError(f"{config}: shears.quantization (quantization-aware NLS) is not a `shears run` pipeline yet; "
                          "run shears train, shears extract and shears export --adapter by hand")
    raw = read_json(config, what="config")
    if protocol:
        raw["shears"]["protocol"] = protocol
    settings = pipeline_settings(raw, model, data, source=str(config))
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
    steps = plan(train_config, out, settings)
    runner = StepRunner(out, label="shears run", index=state_path)
    for step in steps:
        runner.run(step)
    summary = summarize(out, settings, {name: runner.record(name) for name in runner.keys}, steps)
    write_json(out / "summary.json", summary)
    markdown = summary_markdown(summary)
    write_text(out / "summary.md", markdown)
    print(markdown)
    return summary


def summarize(out: Path, settings: dict, records: dict[str, dict], steps: list[Step]) -> dict:
    """The headline figures of every stage, read back from their outputs, and what each evaluation scored."""
    from .evaluation.harness import read_results
    from .export.openvino import OpenVINOModel
    from .nls.folder import SuperAdapter
    from .search.run import read_search
    from .sparsity.api import SparseModel

    sparse = SparseModel.read(out / "sparse")
    trained = SuperAdapter.read(out / "super_adapter")
    train = trained.summary
    search = read_search(out / "search")
    evaluations = [step for step in steps if step.stage == "evaluate"]
    results = {step.name: read_results(step.product) for step in evaluations}
    first = results[evaluations[0].name]
    exported = any(step.stage == "export" for step in steps)
    export = OpenVINOModel.read(out / "openvino") if exported else None
    bench = read_json(out / "bench" / "bench.json", what="benchmark results") if exported else {"rows": [], "cpu": None}
    scaled_down = [f"{stage}.{dest}" for stage, dest in (("train", "max_steps"), ("train", "limit"), ("evaluate", "limit"))
                   if settings.get(stage, {}).get(dest) is not None]
    names = {"strategy": search["strategy"], "sparse": out / STEPS["sparsify"], "method": sparse.method,
             "sparsity": sparse.sparsity["decoder_sparsity"], "weights": export.weights if export else None}
    scored = {step.name: _scored(step, names) for step in evaluations}
    return {
        "demonstration_size": bool(scaled_down),
        "scaled_down_by": scaled_down,
        "settings": settings,
        "sparsity": {k: sparse.sparsity[k] for k in ("total_parameters", "nonzero_parameters",
                                                     "decoder_sparsity")} | {"method": sparse.method},
        "training": {k: train[k] for k in ("optimizer_steps", "examples", "first_loss", "last_loss")},
        "sub_adapter": {"strategy": search["strategy"], "ranks": search["chosen"]["ranks"],
                        "cost": search["chosen"]["cost"], "cost_name": search["cost"]},
        "openvino": {"weights": export.weights, "ir_sparsity": export.sparsity, "ir_bytes": export.ir_bytes}
                    if export else None,
        "scored": scored,
        "accuracy": _headlines(first),
        "scoring": first.get("scoring", "generate"),
        "also_scored": {step.name.removeprefix("evaluate-"): _headlines(results[step.name]) for step in evaluations[1:]},
        "comparison": _comparison(scored, results),
        # Non-zero parameters of a deployed form: the sparse base's, counted in sparse/ (the IR's own count of its base
        # zeros is in "openvino"), plus those of the adapter the row runs.
        "bench": [{"folder": row["folder"], "route": row.get("route"), "backend": row["backend"],
                   "sparse_rate": row["sparse_rate"], "weights": row.get("weights"),
                   "nonzero_parameters": sparse.sparsity["nonzero_parameters"] + (row.get("adapter_parameters") or 0),
                   "size_mb": row.get("size_mb"), "decode_tokens_per_s": row.get("decode_tokens_per_s"),
                   "tokens_per_s": row.get("tokens_per_s"), "ttft_ms": row.get("ttft_ms"),
                   "tpot_ms": row.get("tpot_ms"), "peak_rss_mb": row.get("peak_rss_mb"), "status": row.get("status"),
                   "sparse_path": sparse_path(row, bench["cpu"]["amx"])} for row in bench["rows"]],
        "cpu": bench["cpu"],
        "try": _try_command(out / STEPS["export"], trained.protocol.name) if export else None,
        "stage_seconds": {name: record.get("seconds") for name, record in records.items()},
    }


def _scored(step: Step, names: dict) -> dict:
    """What an evaluate step scored (a model of `_EVALUATED`), in words, as a short label and as settings: the dense
    or the sparse base alone or with the sub-adapter in PyTorch, or the exported IR."""
    from .models import dtype_name, resolve_device, resolve_dtype

    args = step.args
    scoring = args.scoring
    adapted = f"sparse + {names['strategy']} sub-adapter"
    if args.openvino:
        return {"model": "openvino", "scoring": scoring, "results": str(step.product),
                "label": f"{adapted}, OpenVINO IR ({names['weights']})",
                "what": f"the OpenVINO IR ({Path(args.openvino).name}/, adapter unmerged) on the CPU"}
    device = resolve_device(args.device)
    dtype = dtype_name(resolve_dtype(args.dtype, device))
    on = {"scoring": scoring, "results": str(step.product), "dtype": dtype, "device": str(device)}
    if args.adapter:
        return {"model": "pytorch", **on, "label": adapted,
                "what": f"PyTorch, {dtype} on {device}: the sparse base ({Path(args.model).name}/) with the "
                        f"{names['strategy']} sub-adapter ({Path(args.adapter).name}/, the super-adapter's "
                        "sub-network), unmerged"}
    if Path(args.model) == names["sparse"]:
        return {"model": "sparse", **on, "label": f"sparse ({names['method']} {names['sparsity']:.0%})",
                "what": f"PyTorch, {dtype} on {device}: the sparse base ({Path(args.model).name}/) alone"}
    return {"model": "dense", **on, "label": f"dense ({Path(args.model).name})",
            "what": f"PyTorch, {dtype} on {device}: the dense base model ({args.model}) the run pruned"}


# The paired differences the summary reports, first minus second, where the run scored both, and what each measures.
_DIFFERENCES = (
    ("pytorch", "sparse", "what the sub-adapter changed on the sparse base"),
    ("sparse", "dense", "what pruning changed (negative: what it cost)"),
    ("openvino", "pytorch", "what the export changed (the IR's weight format, OpenVINO's arithmetic)"),
)


def _comparison(scored: dict, results: dict) -> dict | None:
    """The log-likelihood scores, all on the same documents: each model's average over tasks with its standard error,
    and the `_DIFFERENCES` it allows with their 95% paired bootstrap intervals (evaluation/compare.py)."""
    from .evaluation.compare import average, paired_difference, standard_error

    step = {s["model"]: name for name, s in scored.items() if s["scoring"] == "loglik"}
    if not step:
        return None
    models = [model for model in _EVALUATED if model in step]  # dense, sparse, with the sub-adapter, its IR
    tasks = list(results[step[models[0]]]["tasks"])
    return {
        "tasks": tasks,
        "metrics": {task: headline_metric(results[step[models[0]]]["tasks"][task]) for task in tasks},
        "documents": {task: results[step[models[0]]]["tasks"][task]["n"] for task in tasks},
        "rows": [{"model": model, "step": step[model], "label": scored[step[model]]["label"],
                  "tasks": {task: headline(results[step[model]]["tasks"][task]) for task in tasks},
                  "average": average(results[step[model]], tasks), "se": standard_error(results[step[model]], tasks)}
                 for model in models],
        "differences": [{"first": first, "second": second, "measures": measures,
                         **paired_difference(results[step[first]], results[step[second]], tasks)}
                        for first, second, measures in _DIFFERENCES if first in step and second in step],
    }


# What the summary's `shears generate` line asks: a question worded as the commonsense training data words BoolQ's.
TRY_PROMPT = ("Please answer the following question with true or false, question: is the pacific ocean the largest "
              "ocean on earth? Answer format: true/false")


def _try_command(ir: Path, template: str) -> str:
    """The `shears generate` command line that talks to the exported IR in `template`, the name of the protocol the
    adapter was trained under; built from the stage's declaration, so it is what the CLI parses."""
    generate = STAGES["generate"]
    args = generate.namespace(openvino=ir, prompt=TRY_PROMPT, max_new_tokens=32, template=template)
    return shlex.join(["shears", *generate.argv(args)])


def _headlines(results: dict) -> dict:
    return {name: headline(t) for name, t in results["tasks"].items()} | {"average": results["average"]}


def _accuracy_table(summary: dict) -> list[str]:
    """One column per evaluation by generation the run made (log-likelihood has the comparison's table): the first
    column's tasks, the others' beside them."""
    headlines = [summary["accuracy"], *summary["also_scored"].values()]
    shown = [(s, acc) for s, acc in zip(summary["scored"].values(), headlines)
             if s["scoring"] == "generate"]
    if not shown:
        return []
    several = len({s["model"] for s, _ in shown}) > 1
    headers = ["accuracy, generation (%)" + (f", {_MODEL_HEADER[s['model']]}" if several else "") for s, _ in shown]
    rows = [[name, *(f"{100 * acc[name]:.1f}" if name in acc else "-" for _, acc in shown)] for name in shown[0][1]]
    return [*markdown_table(["task", *headers], rows), ""]


def _comparison_section(summary: dict) -> list[str]:
    """The dense, sparse and adapted models by log-likelihood on the same documents, and their paired differences."""
    c = summary["comparison"]
    if not c:
        return []
    counts = set(c["documents"].values())
    documents = (f"the first {counts.pop()} documents of each task" if len(counts) == 1 else
                 "the first " + ", ".join(f"{n} of {task}" for task, n in c["documents"].items()) + " documents")
    size = ("; a demonstration size: an interval that spans 0 says that this many documents cannot tell the two "
            "apart" if "evaluate.limit" in summary["scaled_down_by"] else "")
    labels = {row["model"]: row["label"] for row in c["rows"]}
    return [
        "## Log-likelihood, on the same documents",
        "",
        "Accuracy (%) by log-likelihood through lm-evaluation-harness (`shears evaluate --scoring loglik`: "
        f"acc_norm, or acc where lm-eval defines no acc_norm), on {documents}, the same for every row{size}.",
        "",
        *markdown_table(["model", *(f"{t} ({c['metrics'][t]})" for t in c["tasks"]), "average ± s.e."],
                        [[row["label"], *(f"{100 * row['tasks'][t]:.1f}" for t in c["tasks"]),
                          f"{row['average']:.1f} ± {row['se']:.1f}"] for row in c["rows"]]),
        "",
        "Paired differences, in points, with their 95% bootstrap intervals (the documents resampled, the same draw "
        "for both rows):",
        "",
        *[f"- {labels[d['first']]} minus {labels[d['second']]}: {d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}], "
          f"{d['measures']}" for d in c["differences"]],
        "",
    ]


def _deployed_section(summary: dict) -> list[str]:
    """What `shears bench` measured of each deployed form, beside its size."""
    if not summary["cpu"]:
        return []
    return [
        "## Deployed forms",
        "",
        f"CPU: {summary['cpu']['model']}, AMX: {'yes' if summary['cpu']['amx'] else 'no'}. Non-zero parameters: the "
        "sparse base's and the adapter's; size: the model files on disk.",
        "",
        *markdown_table(
            ["model", "route", "backend", "weights", "sparse rate", "non-zero parameters", "size MB", "decode tok/s",
             "TTFT ms", "peak RSS MB", "sparse path"],
            [[Path(r["folder"]).name, r["route"] or "-", r["backend"], r["weights"], r["sparse_rate"] or "-",
              f"{r['nonzero_parameters']:,}", _number(r["size_mb"]), _number(r["decode_tokens_per_s"]),
              _number(r["ttft_ms"]), _number(r["peak_rss_mb"]), r["sparse_path"]] for r in summary["bench"]]),
        "",
    ]


_MODEL_HEADER = {"pytorch": "PyTorch", "openvino": "OpenVINO IR"}


def summary_markdown(summary: dict) -> str:
    sp, tr, sub, ov = summary["sparsity"], summary["training"], summary["sub_adapter"], summary["openvino"]
    lines = [
        "# shears run summary",
        "",
        *([f"Demonstration size ({', '.join(summary['scaled_down_by'])} set): the figures show that every stage "
           "works, not the method's accuracy at scale.", ""] if summary["demonstration_size"] else []),
        f"- Sparsity ({sp['method']}): decoder weights {sp['decoder_sparsity']:.1%} zero; "
        f"{sp['nonzero_parameters']:,} non-zero of {sp['total_parameters']:,} parameters",
        f"- Training: {tr['optimizer_steps']} optimizer steps on {tr['examples']} examples, "
        f"loss {tr['first_loss']:.3f} -> {tr['last_loss']:.3f}",
        f"- Sub-adapter ({sub['strategy']}): {_rank_counts(sub['ranks'])}; {int(sub['cost']):,} {sub['cost_name']}",
        *([f"- OpenVINO IR ({ov['weights']} weights, adapter unmerged): base linears "
           f"{ov['ir_sparsity']['base_sparsity']:.1%} zero as counted in the IR ({ov['ir_sparsity']['base_zeros']:,} "
           f"of {ov['ir_sparsity']['base_params']:,} weights); {ov['ir_bytes']:,} bytes of weights"] if ov else []),
        *[f"- Scored ({name}): {s['what']}" for name, s in summary["scored"].items()],
        "",
        *_accuracy_table(summary),
        *_comparison_section(summary),
        *_deployed_section(summary),
        *(["## Try it", "", "The exported IR, through OpenVINO GenAI (greedy, streamed):", "",
           "```", summary["try"], "```", ""] if summary["try"] else []),
        "## Time",
        "",
        *markdown_table(["stage", "seconds (last run)"], summary["stage_seconds"].items()),
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
    run_pipeline(args.config, args.output, model=args.model, data=args.data, protocol=args.protocol,
                 overwrite=args.overwrite)
