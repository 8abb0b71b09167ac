"""The `shears` console script: one sub-command per stage of the pipeline.

Each sub-command parses its flags and calls one function of the module that owns the stage;
heavy imports happen inside the handlers so that `shears --help` stays instant.
A `ShearsError` (bad input) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ShearsError


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _sparsify(args):
    from .sparsity.api import sparsify_to_folder

    sparsify_to_folder(
        model=args.model, output=args.output, ratio=args.ratio, method=args.method, pattern=args.pattern,
        calibration=args.calibration, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
        device=args.device,
    )


def _report(args):
    from .sparsity.report import print_report

    print_report(args.folder, as_json=args.json)


def _evaluate(args):
    from .evaluation.cli import evaluate_command

    evaluate_command(args)


def _score(args):
    from .evaluation.cli import score_command

    score_command(args)


def _train(args):
    from .nls.cli import train_command

    train_command(args)


def _search(args):
    from .search.cli import search_command

    search_command(args)


def _extract(args):
    from .export.sub_adapter import extract_command

    extract_command(args)


def _export(args):
    from .export.cli import export_command

    export_command(args)


def _bench(args):
    from .export.cli import bench_command

    bench_command(args)


def _run(args):
    from .pipeline import run_pipeline

    run_pipeline(args.config, args.output, model=args.model, data=args.data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shears",
        description="Shears on NNCF: Wanda sparsity, elastic LoRA super-adapters (NLS), sub-adapter search, OpenVINO deployment.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sparsify", help="prune a model (Wanda, magnitude; unstructured or N:M) and save it")
    p.add_argument("--model", required=True, help="HF folder, hub id, or 'smollm2-135m' (embedded default)")
    p.add_argument("--ratio", required=True, type=_ratio, help="fraction of each row's weights to zero, in (0, 1)")
    p.add_argument("--method", default="wanda", choices=["wanda", "magnitude"])
    p.add_argument("--pattern", default="unstructured", help="unstructured, 2:4 or 4:8 (N:M needs ratio N/M)")
    p.add_argument("--calibration", default="default", help=".txt file, .jsonl file, hub dataset id, or 'default'")
    p.add_argument("--nsamples", type=int, default=None, help="calibration samples (default: 32; a .jsonl: its line count)")
    p.add_argument("--seqlen", type=int, default=None, help="tokens per calibration sample (default 512, capped by the model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--output", required=True, help="folder for the sparse HF model and its manifest")
    p.set_defaults(func=_sparsify)

    p = sub.add_parser("report", help="print the per-layer sparsity and non-zero parameters of a model folder")
    p.add_argument("folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_report)

    p = sub.add_parser("evaluate", help="accuracy on tasks (generation) or perplexity on a text file")
    p.add_argument("--model", help="HF folder, hub id, or 'smollm2-135m'; default: the base named by --super-adapter")
    p.add_argument("--adapter", help="a PEFT adapter folder to apply to the model")
    p.add_argument("--super-adapter", help="a trained super-adapter folder (shears train)")
    p.add_argument("--subnet", default="heuristic", help="with --super-adapter: heuristic|maximal|minimal|FILE.json")
    p.add_argument("--openvino", help="an OpenVINO IR folder (shears export) to evaluate instead of a PyTorch model")
    p.add_argument("--tasks", type=_csv, help="comma-separated task names, e.g. boolq,piqa,gsm8k")
    p.add_argument("--data", default="default", help="a JSON/JSONL file, a folder of <task>/test.json, a hub id, or 'default'")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples of each task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--output", help="results JSON (every example and the per-task accuracy)")
    p.add_argument("--perplexity", metavar="TEXTFILE", help="measure perplexity on this text file instead of task accuracy")
    p.add_argument("--seqlen", type=int, default=512, help="with --perplexity: tokens per window")
    p.add_argument("--nsamples", type=int, default=None, help="with --perplexity: at most this many windows")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("score", help="score predictions made by any runtime")
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help='JSONL with lines {"prediction": str, "answer": str}')
    p.add_argument("--json", action="store_true", help='print only {"task", "accuracy", "count"}')
    p.set_defaults(func=_score)

    p = sub.add_parser("train", help="train an elastic-LoRA super-adapter (NLS), or a plain LoRA with --lora-only")
    p.add_argument("--config", required=True, help="NNCF JSON config with a bootstrapNAS section and a shears section")
    p.add_argument("--model", required=True, help="the (sparse) base model")
    p.add_argument("--data", default="default", help="training data: a JSON/JSONL file, a hub id, or 'default'")
    p.add_argument("--tasks", type=_csv, help="tasks or a named mixture (e.g. commonsense) when the data has several")
    p.add_argument("--output", required=True)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--epochs", type=float, default=None, help="override the config's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the config's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the config's per-device batch size")
    p.add_argument("--grad-accum", type=int, default=None, help="override the config's gradient accumulation")
    p.add_argument("--max-length", type=int, default=None, help="override the config's maximum sequence length")
    p.add_argument("--limit", type=int, default=None, help="use at most N training examples")
    p.add_argument("--lora-only", action="store_true", help="plain LoRA baseline: elasticity off")
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=_train)

    p = sub.add_parser("search", help="search the trained super-adapter for a sub-adapter")
    p.add_argument("--super-adapter", required=True)
    p.add_argument("--model", help="base model; default: the one named in the super-adapter's manifest")
    p.add_argument("--strategy", required=True, help="heuristic|hill-climbing|rnsga2|nsga2|maximal|minimal")
    p.add_argument("--budget", type=int, default=None, help="maximum number of evaluated configurations")
    p.add_argument("--tasks", type=_csv)
    p.add_argument("--data", default="default")
    p.add_argument("--limit", type=int, default=50, help="validation examples per task (a seeded draw; default 50)")
    p.add_argument("--metric", default="accuracy", help="accuracy (generation, as the paper) or loss (cheaper)")
    p.add_argument("--cost", default="params", help="params (adapter parameters) or macs (of the subnet, as NNCF counts them)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.set_defaults(func=_search)

    p = sub.add_parser("extract", help="write a sub-adapter as a standard PEFT adapter folder")
    p.add_argument("--super-adapter", required=True)
    p.add_argument("--subnet", default="heuristic", help="heuristic|maximal|minimal|FILE.json (search.json or ranks)")
    p.add_argument("--model", help="base model recorded in the manifest; default: the super-adapter's")
    p.add_argument("--output", required=True)
    p.set_defaults(func=_extract)

    p = sub.add_parser("export", help="export the sparse model (with an unmerged adapter) to OpenVINO IR")
    p.add_argument("--model", required=True, help="the sparse (or dense) HF model folder")
    p.add_argument("--adapter", help="a PEFT adapter folder (e.g. from shears extract)")
    p.add_argument("--output", required=True)
    p.add_argument("--weights", default="as-is", choices=["as-is", "int8", "w8a8"])
    p.add_argument("--calibration", default="default", help="with --weights w8a8: calibration text (as for sparsify)")
    p.set_defaults(func=_export)

    p = sub.add_parser("bench", help="benchmark inference of OpenVINO IR folders (or a PyTorch model) on CPU")
    p.add_argument("folders", nargs="+", metavar="DIR")
    p.add_argument("--prompts", help="a text file, one prompt per line")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sparse-rate", type=float, default=None, help="CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE, in [0, 1]")
    p.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="inference threads for every back end (default: their own)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("run", help="every stage in order (sparsify, train, search, extract, export, evaluate, bench), resumable")
    p.add_argument("--config", required=True, help="NNCF JSON config; its shears.pipeline section sets the stages")
    p.add_argument("--model", help="override the config's base model")
    p.add_argument("--data", help="override the config's training data")
    p.add_argument("--output", required=True, help="run folder: one sub-folder per stage, summary.md, summary.json")
    p.set_defaults(func=_run)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ShearsError as e:
        print(f"shears {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
