"""Which deployment of a Shears sub-adapter: unmerged or merged into the sparse base (keeping its zeros),
plain or mask-aware training (`shears.lora.sparse_adapter`), and OpenVINO IR in fp32, INT8, W8A8 or INT4;
each one's accuracy by log-likelihood on the same documents, and its CPU speed and size, in one run.

Steps, each one `shears` command in its own process: sparsify SmolLM2 (Wanda, 50%); train the studies' config
(nncf_configs/studies/smollm2_commonsense.json, the demo's as it was) twice on the same data, steps, learning rate and seed, once as
it is and once with `shears.lora.sparse_adapter: true` (a derived config written into --output); extract
each heuristic sub-adapter unmerged and with --merge; export IRs; score every deployment with
`shears evaluate --scoring loglik` on the same first --eval-limit documents of each task; last, `shears
bench` times every IR in one run (on a quiet machine: nothing else should run then).

The training records are, as in the reproduction study, the eight train splits as lm-eval poses them
(`data.lm_eval_documents.write_training_records`), scored in lm-eval's wording, so that training moves what
log-likelihood scoring measures; --train-format llm-adapters trains on LLM-Adapters' records instead.

PyTorch deployments: plain unmerged (the usual Shears deployment), plain merged (the update masked at merge
time only), mask-aware unmerged (the extracted folder, which `evaluate --adapter` masks as it was trained),
mask-aware merged (equal to the one before it). OpenVINO
deployments: the plain sub-adapter unmerged on the sparse base and the mask-aware merged model, each in
INT8 weights, plus the merged one in W8A8 and INT4; fp32 IRs of both are timed but not scored (their
scores are PyTorch's, tested in tests/test_loglik.py). The table gives each one's average (acc_norm where
lm-eval defines it, else acc) with its standard error and every task, then paired differences on the same
documents; then the speed table, merged / unmerged decode speed per weight format, and the choice.

Every step goes through `shears run`'s step machinery (`shears_nncf.steps`): one that completed under the
same key (its options, its input files, the steps it reads from) is skipped, so an interrupted run resumes
(an interrupted training from its last checkpoint, an interrupted evaluation from its last finished task)
and a changed setting reruns what depends on it.

    python benchmarks/deployment_choice.py --output runs/deployment_choice --steps 50 --eval-limit 100
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shears_nncf.artifacts import read_json, write_json
from shears_nncf.bench import format_choice, format_table
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.evaluation import compare
from shears_nncf.evaluation.harness import headline
from shears_nncf.models import EMBEDDED_MODEL
from shears_nncf.steps import StepRunner, step_from_argv
from shears_nncf.tables import markdown_table

CONFIG = Path(__file__).resolve().parent.parent / "nncf_configs" / "studies" / "smollm2_commonsense.json"
# deployment -> (training, how it is loaded, IR weights or None for PyTorch): "adapter" the extracted folder
# on the sparse base, "merged" the merged HF folder.
DEPLOYMENTS = {
    "plain, unmerged": ("plain", "adapter", None),
    "plain, merged (masked)": ("plain", "merged", None),
    "mask-aware, unmerged (masked)": ("mask-aware", "adapter", None),
    "mask-aware, merged": ("mask-aware", "merged", None),
    "plain, unmerged, INT8 IR": ("plain", "adapter", "int8"),
    "mask-aware, merged, INT8 IR": ("mask-aware", "merged", "int8"),
    "mask-aware, merged, W8A8 IR": ("mask-aware", "merged", "w8a8"),
    "mask-aware, merged, INT4 IR": ("mask-aware", "merged", "int4"),
}
# IRs timed but not scored: the fp32 ones, and W8A8 unmerged, so that every weight format has its pair
TIMED_ONLY = {
    "plain, unmerged, fp32 IR": ("plain", "adapter", "as-is"),
    "mask-aware, merged, fp32 IR": ("mask-aware", "merged", "as-is"),
    "plain, unmerged, W8A8 IR": ("plain", "adapter", "w8a8"),
}
# (first, second): first - second on the same documents
DIFFERENCES = (
    ("plain, merged (masked)", "plain, unmerged"),
    ("mask-aware, merged", "mask-aware, unmerged (masked)"),
    ("mask-aware, merged", "plain, unmerged"),
    ("mask-aware, merged, INT8 IR", "mask-aware, merged"),
    ("mask-aware, merged, W8A8 IR", "mask-aware, merged, INT8 IR"),
    ("mask-aware, merged, INT4 IR", "mask-aware, merged, INT8 IR"),
    ("mask-aware, merged, INT8 IR", "plain, unmerged, INT8 IR"),
)


class Study:
    """The steps, run through `shears run`'s step machinery (`shears_nncf.steps`), each in its own process."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.output)
        self.runner = StepRunner(self.out, label="deployment-choice", isolate=True)

    def step(self, name: str, argv: list[str], product: Path) -> Path:
        return self.runner.run(step_from_argv(argv, product, name=name))

    def sparse(self) -> Path:
        return self.step("sparsify", ["sparsify", "--model", self.args.model, "--ratio", "0.5", "--nsamples", "32",
                                      "--output", str(self.out / "sparse")], self.out / "sparse")

    def training_data(self) -> str:
        if self.args.train_format == "llm-adapters":
            return "default"
        from shears_nncf.data.lm_eval_documents import write_training_records

        return str(write_training_records(self.out / "data" / "lm_eval_train.jsonl", list(COMMONSENSE),
                                          self.args.train_per_task))

    def config(self, training: str) -> Path:
        """The studies' config, or a copy of it with the update masked by the base's zeros (written when it differs)."""
        if training == "plain":
            return CONFIG
        path = self.out / "configs" / "smollm2_commonsense_sparse_adapter.json"
        raw = read_json(CONFIG, what="config")
        raw["shears"]["lora"]["sparse_adapter"] = True
        if not path.exists() or read_json(path, what="config") != raw:
            write_json(path, raw)
        return path

    def trained(self, training: str) -> Path:
        folder = self.out / "train" / training
        return self.step(f"train {training}", [
            "train", "--config", str(self.config(training)), "--model", str(self.sparse()),
            "--data", self.training_data(), "--tasks", "commonsense", "--limit", str(self.args.train_limit),
            "--max-steps", str(self.args.steps), "--lr", str(self.args.lr), "--seed", str(self.args.seed),
            "--output", str(folder)], folder)

    def extracted(self, training: str, merge: bool) -> Path:
        folder = self.out / ("merged" if merge else "adapter") / training
        argv = ["extract", "--super-adapter", str(self.trained(training)), "--subnet", "heuristic",
                "--output", str(folder)]
        return self.step(f"extract {training}{' --merge' if merge else ''}", argv + (["--merge"] if merge else []),
                         folder)

    def model_options(self, training: str, how: str) -> list[str]:
        if how == "adapter":
            return ["--model", str(self.sparse()), "--adapter", str(self.extracted(training, merge=False))]
        return ["--model", str(self.extracted(training, merge=True))]

    def ir(self, training: str, how: str, weights: str) -> Path:
        folder = self.out / "ir" / f"{training}-{how}-{weights}"
        return self.step(f"export {folder.name}", ["export", *self.model_options(training, how), "--weights", weights,
                                                   "--output", str(folder)], folder)

    def evaluated(self, deployment: str) -> Path:
        """`evaluate` rewrites its results after every task; an interrupted one resumes with the missing tasks."""
        training, how, weights = DEPLOYMENTS[deployment]
        output = self.out / "eval" / f"{training}-{how}{'-' + weights if weights else ''}.json"
        return self.step(f"evaluate {deployment}", [
            "evaluate", *(["--openvino", str(self.ir(training, how, weights))] if weights
                          else self.model_options(training, how)), "--data", "default", "--tasks", self.args.tasks,
            "--scoring", "loglik", "--prompt-style", self.args.train_format, "--limit", str(self.args.eval_limit),
            "--batch-size", str(self.args.batch_size), "--output", str(output)], output)

    def speed(self, scored: dict[str, Path]) -> dict:
        """`shears bench` on every IR in one run (kept: its key changes only with the IRs or the bench options)."""
        path = self.out / "bench.json"
        irs = {name: self.ir(*spec) for name, spec in {**DEPLOYMENTS, **TIMED_ONLY}.items() if spec[2]}
        print(f"[deployment-choice] bench {len(irs)} IRs; load average {os.getloadavg()[0]:.1f}", flush=True)
        options = [flag for flag, value in (("--sparse-rate", self.args.sparse_rate), ("--threads", self.args.threads))
                   if value is not None for flag in (flag, str(value))]
        self.step("bench", ["bench", *map(str, irs.values()), "--max-new-tokens", str(self.args.max_new_tokens),
                            *options, "--json", str(path)], path)
        report = read_json(path, what="bench report")
        accuracy = {str(irs[name]): read_json(scored[name], what="evaluation results") for name in irs if name in scored}
        return {"report": report, "irs": irs, "accuracy": accuracy}


def accuracy_table(results: dict[str, dict], tasks: list[str]) -> list[str]:
    rows = [[deployment, f"{compare.average(result, tasks):.1f} ± {compare.standard_error(result, tasks):.1f}",
             *(f"{100 * headline(result['tasks'][t]):.1f}" for t in tasks)] for deployment, result in results.items()]
    differences = []
    for first, second in DIFFERENCES:
        c = compare.paired_difference(results[first], results[second], tasks)
        differences.append([f"{first} - {second}", f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"])
    return [*markdown_table(["deployment", "average ± s.e.", *tasks], rows), "",
            *markdown_table(["paired difference (same documents)", "first - second [95% bootstrap interval]"],
                            differences)]


def merged_vs_unmerged(report: dict, irs: dict[str, Path]) -> list[str]:
    """Decode tokens/s of the merged model over the unmerged adapter, per weight format and sparse rate."""
    rows = {(r["folder"], r["sparse_rate"]): r for r in report["rows"]}
    lines = []
    for weights in ("fp32", "INT8", "W8A8"):
        merged, unmerged = irs[f"mask-aware, merged, {weights} IR"], irs[f"plain, unmerged, {weights} IR"]
        for rate in sorted({r for _, r in rows}, key=lambda r: -1 if r is None else r):
            one, other = rows.get((str(merged), rate)), rows.get((str(unmerged), rate))
            if one and other and one["status"] == other["status"] == "ok":
                rate_note = "" if rate is None else f", sparse rate {rate:g}"
                lines.append(f"{weights}{rate_note}: merged {one['tokens_per_s']:.1f} tok/s, unmerged adapter "
                             f"{other['tokens_per_s']:.1f} tok/s: merged / unmerged {one['tokens_per_s'] / other['tokens_per_s']:.2f}x; "
                             f"size {one['size_mb']:.0f} vs {other['size_mb']:.0f} MB")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder of every step's output (resumable)")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="the dense base model")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps of each training")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of both trainings")
    parser.add_argument("--eval-limit", type=int, default=100, help="first N validation documents of each task")
    parser.add_argument("--tasks", default=",".join(COMMONSENSE), help="comma-separated log-likelihood tasks")
    parser.add_argument("--train-format", choices=["lm-eval", "llm-adapters"], default="lm-eval",
                        help="training records, and the wording they are scored in")
    parser.add_argument("--train-per-task", type=int, default=500, help="lm-eval format: documents of each train split")
    parser.add_argument("--train-limit", type=int, default=2000, help="training records drawn from the data")
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-speed", action="store_true", help="stop before timing (run again on a quiet machine)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="bench: tokens generated per prompt")
    parser.add_argument("--sparse-rate", type=float, default=None,
                        help="bench: also time every IR with CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE (AMX CPUs)")
    parser.add_argument("--threads", type=int, default=None, help="bench: inference threads")
    args = parser.parse_args()

    study = Study(args)
    tasks = args.tasks.split(",")
    scored = {deployment: study.evaluated(deployment) for deployment in DEPLOYMENTS}
    results = {deployment: read_json(path, what="evaluation results") for deployment, path in scored.items()}
    print("\n".join(accuracy_table(results, tasks)))
    print(f"acc_norm where lm-eval defines it, else acc; in percent; {args.eval_limit} documents per task, "
          f"{args.train_format} wording")
    if args.no_speed:
        return
    speed = study.speed(scored)
    print(format_table(speed["report"]))
    print("\n".join(merged_vs_unmerged(speed["report"], speed["irs"])))
    print(format_choice(speed["report"], speed["accuracy"]))


if __name__ == "__main__":
    main()
