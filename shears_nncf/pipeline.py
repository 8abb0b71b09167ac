"""`shears run`: every stage in order, each into its own sub-folder, skipping what is already done.

A stage is one `shears` sub-command with its arguments; its *key* hashes those arguments, the
content of the files it reads that are not stage outputs (the training part of the config, copied
into the run folder without its `shears.pipeline` section) and the keys of the stages it depends on. `pipeline.json` records the key of every completed stage, so a stage whose
output exists and whose key is unchanged is skipped: an interrupted run resumes where it stopped
and a changed setting reruns only what depends on it. Stage outputs are written atomically by the
stages themselves, so a half-finished stage never looks complete.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import read_json, read_manifest, write_json, write_text
from .bench import sparse_path

STATE_FILE = "pipeline.json"
TRAIN_CONFIG = "train_config.json"
PIPELINE_DEFAULTS = {
    "model": "smollm2-135m",
    "sparsity": {"method": "wanda", "ratio": 0.5, "pattern": "unstructured", "calibration": "default",
                 "nsamples": 32, "seqlen": 512},
    "training": {"data": "default", "tasks": None, "limit": None, "max_steps": None},
    "search": {"strategy": "heuristic", "budget": None, "data": "default", "tasks": None, "limit": 20, "metric": "loss"},
    "evaluation": {"data": "default", "tasks": ["boolq", "piqa", "arc_easy"], "limit": 50, "batch_size": 8},
    "export": {"weights": "int8"},
    "bench": {"max_new_tokens": 32, "sparse_rate": 0.5},
}


@dataclass
class Stage:
    name: str
    argv: list[str]
    product: Path  # exists only once the stage has completed (stages write atomically)
    depends: list[str] = field(default_factory=list)
    reads: list[Path] = field(default_factory=list)  # input files whose content is part of the key


def pipeline_settings(config_raw: dict, model: str | None, data: str | None) -> dict:
    """The `shears.pipeline` section of the config over the defaults; --model / --data override it."""
    section = config_raw.get("shears", {}).get("pipeline", {})
    settings = {k: ({**v, **section.get(k, {})} if isinstance(v, dict) else section.get(k, v))
                for k, v in PIPELINE_DEFAULTS.items()}
    if model:
        settings["model"] = model
    if data:
        settings["training"]["data"] = data
    return settings


def plan(train_config: Path, output: str | os.PathLike, settings: dict) -> list[Stage]:
    """The stages of a run, in order. Each one's argv is exactly what a user would type after `shears`."""
    out = Path(output)
    s, t, q, e, x, b = (settings[k] for k in ("sparsity", "training", "search", "evaluation", "export", "bench"))

    def flags(**options) -> list[str]:
        argv = []
        for name, value in options.items():
            if value is None or value is False:
                continue
            argv.append("--" + name.replace("_", "-"))
            if value is not True:
                argv.append(",".join(map(str, value)) if isinstance(value, list) else str(value))
        return argv

    sparse, super_adapter, search = out / "sparse", out / "super_adapter", out / "search"
    sub_adapter, openvino = out / "sub_adapter", out / "openvino"
    return [
        Stage("sparse", ["sparsify", *flags(model=settings["model"], ratio=s["ratio"], method=s["method"],
                                            pattern=s["pattern"], calibration=s["calibration"],
                                            nsamples=s["nsamples"], seqlen=s["seqlen"], output=sparse)],
              sparse),
        Stage("super_adapter", ["train", *flags(config=train_config, model=sparse, data=t["data"], tasks=t["tasks"],
                                                limit=t["limit"], max_steps=t["max_steps"], output=super_adapter)],
              super_adapter, ["sparse"], [train_config]),
        Stage("search", ["search", *flags(super_adapter=super_adapter, strategy=q["strategy"], budget=q["budget"],
                                          data=q["data"], tasks=q["tasks"], limit=q["limit"], metric=q["metric"],
                                          output=search)],
              search, ["super_adapter"]),
        Stage("sub_adapter", ["extract", *flags(super_adapter=super_adapter, subnet=search / "search.json",
                                                output=sub_adapter)],
              sub_adapter, ["super_adapter", "search"]),
        Stage("openvino", ["export", *flags(model=sparse, adapter=sub_adapter, weights=x["weights"], output=openvino)],
              openvino, ["sparse", "sub_adapter"]),
        Stage("eval", ["evaluate", *flags(openvino=openvino, data=e["data"], tasks=e["tasks"], limit=e["limit"],
                                          batch_size=e["batch_size"], output=out / "eval" / "results.json")],
              out / "eval" / "results.json", ["openvino"]),
        Stage("bench", ["bench", str(openvino), str(sparse), *flags(max_new_tokens=b["max_new_tokens"],
                                                                     sparse_rate=b["sparse_rate"],
                                                                     json=out / "bench" / "bench.json")],
              out / "bench" / "bench.json", ["sparse", "openvino"]),
    ]


def stage_key(stage: Stage, keys: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(stage.argv).encode())
    for name in stage.depends:
        digest.update(keys[name].encode())
    for path in stage.reads:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_pipeline(config: str | os.PathLike, output: str | os.PathLike, model: str | None = None,
                 data: str | None = None) -> dict:
    """Run (or resume) every stage, then write summary.json and summary.md into `output`."""
    from .cli import build_parser
    from .config import load_config
    from .nls.training import checkpoint_dir

    load_config(config)  # a bad config fails before any stage runs
    raw = read_json(config, what="config")
    settings = pipeline_settings(raw, model, data)
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
    keys: dict[str, str] = {}
    for stage in plan(train_config, out, settings):
        key = keys[stage.name] = stage_key(stage, keys)
        done = state["stages"].get(stage.name, {})
        if stage.product.exists() and done.get("key") == key and done.get("complete"):
            print(f"[shears run] {stage.name}: up to date, skipped")
            continue
        argv = list(stage.argv)
        if stage.name == "super_adapter":
            checkpoints = checkpoint_dir(stage.product)
            if done.get("key") == key and any(checkpoints.glob("checkpoint-*")):
                argv.append("--resume")  # the same training was interrupted: continue it
        print(f"[shears run] {stage.name}: shears {' '.join(argv)}")
        state["stages"][stage.name] = {"key": key, "argv": argv, "complete": False}
        write_json(state_path, state)
        start = time.perf_counter()
        args = build_parser().parse_args(argv)
        args.func(args)
        state["stages"][stage.name] = {"key": key, "argv": argv, "complete": True,
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
        "accuracy": {name: t["accuracy"] for name, t in results["tasks"].items()} | {"average": results["average"]},
        "bench": [{"folder": row["folder"], "backend": row["backend"], "sparse_rate": row["sparse_rate"],
                   "weights": row.get("weights"), "tokens_per_s": row.get("tokens_per_s"), "ttft_ms": row.get("ttft_ms"),
                   "tpot_ms": row.get("tpot_ms"), "peak_rss_mb": row.get("peak_rss_mb"), "status": row.get("status"),
                   "sparse_path": sparse_path(row, bench["cpu"]["amx"])} for row in bench["rows"]],
        "cpu": bench.get("cpu"),
        "stage_seconds": {name: s.get("seconds") for name, s in state["stages"].items()},
    }


def summary_markdown(summary: dict) -> str:
    sp, tr, sub, acc = summary["sparsity"], summary["training"], summary["sub_adapter"], summary["accuracy"]
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
        "| task | accuracy (%) |",
        "|---|---|",
        *[f"| {name} | {100 * value:.1f} |" for name, value in acc.items()],
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
