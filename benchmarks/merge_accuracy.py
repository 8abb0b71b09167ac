"""Accuracy of a sub-adapter unmerged vs merged into the sparse base keeping its zeros, with and without
mask-aware training (`shears.lora.sparse_adapter`), by log-likelihood on the same documents.

Steps, each one `shears` command in its own process: sparsify SmolLM2 (Wanda, 50%); train the demo config
(nncf_configs/demo/smollm2_commonsense.json) twice on the same data, steps and seed, once as it is and once
with `shears.lora.sparse_adapter: true` (a derived config written into --output); extract each heuristic
sub-adapter unmerged and with --merge; score every deployment with `shears evaluate --scoring loglik` on the
same first --eval-limit documents of each task. The mask-aware super-adapter is also scored as it was
trained (`evaluate --super-adapter`, update masked), which its merge must equal.

Deployments: plain unmerged (the usual Shears deployment), plain merged (the update masked at merge time
only), mask-aware unmerged (the extracted folder, which `evaluate --adapter` masks as it was trained),
mask-aware as trained, mask-aware merged. The table gives each one's average (acc_norm where lm-eval defines it, else acc) with
its standard error and every task, then the paired differences on the same documents.

A step whose output is complete is skipped, so an interrupted run resumes (an interrupted training from
its last checkpoint, an interrupted evaluation from its last finished task). A step is known by its folder
alone: after changing a setting, use a new --output.

    python benchmarks/merge_accuracy.py --output runs/merge_accuracy --steps 40 --eval-limit 100
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from shears_nncf.artifacts import read_json, write_json
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.evaluation import compare
from shears_nncf.evaluation.harness import headline
from shears_nncf.models import EMBEDDED_MODEL
from shears_nncf.nls.training import checkpoint_dir

CONFIG = Path(__file__).resolve().parent.parent / "nncf_configs" / "demo" / "smollm2_commonsense.json"
# (deployment, training, how it is loaded): "adapter" the extracted folder through plain PEFT, "merged" the
# merged HF folder, "trained" the super-adapter itself (as `evaluate --super-adapter` loads it).
DEPLOYMENTS = (
    ("plain, unmerged", "plain", "adapter"),
    ("plain, merged (masked)", "plain", "merged"),
    ("mask-aware, unmerged (masked)", "mask-aware", "adapter"),
    ("mask-aware, as trained (masked)", "mask-aware", "trained"),
    ("mask-aware, merged", "mask-aware", "merged"),
)
# (first, second): first - second on the same documents
DIFFERENCES = (
    ("plain, merged (masked)", "plain, unmerged"),
    ("mask-aware, merged", "mask-aware, unmerged (masked)"),
    ("mask-aware, merged", "mask-aware, as trained (masked)"),
    ("mask-aware, merged", "plain, unmerged"),
)


class Study:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.output)

    def step(self, name: str, argv: list[str], done: bool) -> None:
        if done:
            return
        print(f"[merge-accuracy] {name}: shears {' '.join(argv)}", flush=True)
        subprocess.run([sys.executable, "-m", "shears_nncf", *argv], check=True)

    def sparse(self) -> Path:
        folder = self.out / "sparse"
        self.step("sparsify", ["sparsify", "--model", EMBEDDED_MODEL, "--ratio", "0.5", "--output", str(folder)],
                  folder.exists())
        return folder

    def config(self, training: str) -> Path:
        """The demo config, or a copy of it with the update masked by the base's zeros."""
        if training == "plain":
            return CONFIG
        path = self.out / "configs" / "smollm2_commonsense_sparse_adapter.json"
        raw = read_json(CONFIG, what="config")
        raw["shears"]["lora"]["sparse_adapter"] = True
        write_json(path, raw)
        return path

    def trained(self, training: str) -> Path:
        folder = self.out / "train" / training
        argv = ["train", "--config", str(self.config(training)), "--model", str(self.sparse()), "--data", "default",
                "--tasks", "commonsense", "--limit", str(self.args.train_limit), "--max-steps", str(self.args.steps),
                "--seed", str(self.args.seed), "--output", str(folder)]
        if self.args.lr is not None:
            argv += ["--lr", str(self.args.lr)]
        if not folder.exists() and any(checkpoint_dir(folder).glob("checkpoint-*")):
            argv.append("--resume")
        self.step(f"train {training}", argv, folder.exists())
        return folder

    def extracted(self, training: str, merge: bool) -> Path:
        folder = self.out / ("merged" if merge else "adapter") / training
        argv = ["extract", "--super-adapter", str(self.trained(training)), "--subnet", "heuristic",
                "--output", str(folder)]
        self.step(f"extract {training}{' --merge' if merge else ''}", argv + (["--merge"] if merge else []),
                  folder.exists())
        return folder

    def model_options(self, training: str, how: str) -> list[str]:
        if how == "adapter":
            return ["--model", str(self.sparse()), "--adapter", str(self.extracted(training, merge=False))]
        if how == "merged":
            return ["--model", str(self.extracted(training, merge=True))]
        return ["--super-adapter", str(self.trained(training)), "--subnet", "heuristic"]

    def evaluated(self, deployment: str, training: str, how: str) -> dict:
        output = self.out / "eval" / f"{training}-{how}.json"
        tasks = self.args.tasks.split(",")
        # `evaluate` rewrites its results after every task and scores only the missing ones when rerun.
        complete = output.exists() and set(tasks) <= set(read_json(output, what="evaluation results")["tasks"])
        self.step(f"evaluate {deployment}", [
            "evaluate", *self.model_options(training, how), "--data", "default", "--tasks", self.args.tasks,
            "--scoring", "loglik", "--prompt-style", self.args.prompt_style, "--limit", str(self.args.eval_limit),
            "--batch-size", str(self.args.batch_size), "--output", str(output)], complete)
        return read_json(output, what="evaluation results")


def table(results: dict[str, dict], tasks: list[str]) -> list[str]:
    lines = ["| deployment | average acc_norm ± s.e. | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for deployment, result in results.items():
        avg, err = compare.average(result, tasks), compare.standard_error(result, tasks)
        cells = [f"{100 * headline(result['tasks'][t]):.1f}" for t in tasks]
        lines.append(f"| {deployment} | {avg:.1f} ± {err:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference (same documents) | first - second [95% bootstrap interval] |", "|---|---|"]
    for first, second in DIFFERENCES:
        c = compare.paired_difference(results[first], results[second], tasks)
        lines.append(f"| {first} - {second} | {c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder of every step's output (resumable)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each training")
    parser.add_argument("--eval-limit", type=int, default=100, help="first N validation documents of each task")
    parser.add_argument("--tasks", default=",".join(COMMONSENSE), help="comma-separated log-likelihood tasks")
    parser.add_argument("--prompt-style", default="llm-adapters", choices=["llm-adapters", "lm-eval"],
                        help="the wording of the scored prompts; llm-adapters matches the training records")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of both trainings (default: the config's)")
    parser.add_argument("--train-limit", type=int, default=2000, help="training records drawn from the data")
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    study = Study(args)
    results = {deployment: study.evaluated(deployment, training, how) for deployment, training, how in DEPLOYMENTS}
    print("\n".join(table(results, args.tasks.split(","))))
    print("acc_norm where lm-eval defines it, else acc; in percent")


if __name__ == "__main__":
    main()
