"""A small-scale reproduction of Shears' commonsense findings on the embedded SmolLM2-135M.

Eight rows, read the way the paper's Tables 2 and 6 read, at a size two CPU cores can run:
zero-shot on the dense and the Wanda-50% model; LoRA on the dense and the Wanda-50% model; Shears
(NLS) on the Wanda-50% model with the heuristic and the hill-climbing sub-adapter; Shears on a
Wanda-40% and a magnitude-50% model (heuristic). Every trained row uses the same config, training
examples, optimizer steps and seed, and every row is scored on the same first N examples of each of
the eight commonsense tasks.

Every step is one `shears` command in its own process, writing its own folder under --output
atomically. A step whose output exists is skipped, so an interrupted study resumes where it stopped
(an interrupted training from its last checkpoint), and `--rows` runs a subset. A step is known by
its folder alone: after changing a setting, use a new --output. Once every row is complete, the
table and what it says against the paper's claims go to --results.

    python benchmarks/reproduce_small.py --jobs 2 --output runs/reproduce --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import collections
import functools
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from shears_nncf.artifacts import read_json, read_manifest, write_json, write_text
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.models import EMBEDDED_MODEL, resolve_model
from shears_nncf.nls.training import checkpoint_dir
from shears_nncf.sparsity.report import folder_sparsity

CONFIG = Path(__file__).resolve().parent.parent / "nncf_configs" / "demo" / "smollm2_commonsense.json"
SPARSE_MODELS = {"wanda-50": ("wanda", 0.5), "wanda-40": ("wanda", 0.4), "magnitude-50": ("magnitude", 0.5)}
SHORT = {"boolq": "BoolQ", "piqa": "PIQA", "social_i_qa": "SIQA", "hellaswag": "HellaS", "winogrande": "WinoG",
         "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "openbookqa": "OBQA"}


@dataclass(frozen=True)
class Row:
    slug: str  # what --rows takes
    title: str
    sparse: str | None  # a key of SPARSE_MODELS; None: the dense model
    training: str | None = None  # "lora" or "nls"; None: zero-shot
    subnet: str | None = None  # NLS rows: "heuristic" or "hill-climbing"

    @property
    def base(self) -> str:
        return self.sparse or "dense"

    @property
    def train_name(self) -> str:
        return f"{self.base}-{self.training}"


ROWS = (
    Row("zero-dense", "zero-shot, dense", None),
    Row("zero-wanda50", "zero-shot, Wanda 50%", "wanda-50"),
    Row("lora-dense", "LoRA, dense", None, "lora"),
    Row("lora-wanda50", "LoRA, Wanda 50%", "wanda-50", "lora"),
    Row("shears-wanda50", "Shears, Wanda 50%, heuristic", "wanda-50", "nls", "heuristic"),
    Row("shears-wanda50-hill", "Shears, Wanda 50%, hill-climbing", "wanda-50", "nls", "hill-climbing"),
    Row("shears-wanda40", "Shears, Wanda 40%, heuristic", "wanda-40", "nls", "heuristic"),
    Row("shears-magnitude50", "Shears, magnitude 50%, heuristic", "magnitude-50", "nls", "heuristic"),
)


class Study:
    """Runs the steps of the requested rows, skipping completed ones, and records each step's wall time
    in `steps/<step>.json` (one file per step, so that parallel workers never write the same file)."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.output)
        (self.out / "steps").mkdir(parents=True, exist_ok=True)

    def record(self, name: str) -> Path:
        return self.out / "steps" / f"{name.replace(' ', '_')}.json"

    def seconds(self, name: str) -> float:
        path = self.record(name)
        return read_json(path, what="step record")["seconds"] if path.exists() else 0.0

    def total_seconds(self) -> float:
        return sum(read_json(p, what="step record")["seconds"] for p in (self.out / "steps").glob("*.json"))

    def step(self, name: str, argv: list[str], product: Path) -> Path:
        if product.exists():
            return product
        print(f"[reproduce] {name}: shears {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shears_nncf", *argv], check=True)
        # an interrupted training resumes, so its seconds add up over the runs it took
        seconds = round(self.seconds(name) + time.perf_counter() - start, 1)
        write_json(self.record(name), {"argv": argv, "seconds": seconds})
        return product

    def base_model(self, row: Row) -> str:
        if row.sparse is None:
            return EMBEDDED_MODEL
        method, ratio = SPARSE_MODELS[row.sparse]
        folder = self.out / "sparse" / row.sparse
        self.step(f"sparsify {row.sparse}", ["sparsify", "--model", EMBEDDED_MODEL, "--method", method,
                                             "--ratio", str(ratio), "--nsamples", str(self.args.nsamples),
                                             "--output", str(folder)], folder)
        return str(folder)

    def trained(self, row: Row) -> Path:
        folder = self.out / "train" / row.train_name
        argv = ["train", "--config", str(CONFIG), "--model", self.base_model(row), "--data", "default",
                "--tasks", "commonsense", "--limit", str(self.args.train_limit),
                "--max-steps", str(self.args.steps), "--seed", str(self.args.seed), "--output", str(folder)]
        if row.training == "lora":
            argv.append("--lora-only")
        if not folder.exists() and any(checkpoint_dir(folder).glob("checkpoint-*")):
            argv.append("--resume")
        return self.step(f"train {row.train_name}", argv, folder)

    def adapter(self, row: Row) -> Path | None:
        """The adapter the row deploys: none (zero-shot), the LoRA itself, or the extracted sub-adapter."""
        if row.training is None:
            return None
        trained = self.trained(row)
        if row.training == "lora":
            return trained
        subnet = "heuristic"
        if row.subnet == "hill-climbing":
            search = self.out / "search" / f"{row.train_name}-hill-climbing"
            self.step(f"search {search.name}", [
                "search", "--super-adapter", str(trained), "--strategy", "hill-climbing",
                "--budget", str(self.args.search_budget), "--metric", "loss", "--tasks", ",".join(COMMONSENSE),
                "--limit", str(self.args.search_limit), "--seed", str(self.args.seed), "--output", str(search)],
                search)
            subnet = str(search / "search.json")
        folder = self.out / "adapter" / f"{row.train_name}-{row.subnet}"
        return self.step(f"extract {folder.name}", ["extract", "--super-adapter", str(trained), "--subnet", subnet,
                                                    "--output", str(folder)], folder)

    def evaluate(self, row: Row) -> dict:
        base, adapter = self.base_model(row), self.adapter(row)
        result = self.out / "eval" / f"{row.slug}.json"
        self.step(f"eval {row.slug}", [
            "evaluate", "--model", base, *(["--adapter", str(adapter)] if adapter else []), "--data", "default",
            "--tasks", ",".join(COMMONSENSE), "--limit", str(self.args.eval_limit),
            "--batch-size", str(self.args.batch_size), "--output", str(result)], result)
        scored = read_json(result, what="evaluation results")
        return {"row": row, "accuracy": scored["tasks"], "examples": scored["examples"], **self.sizes(row, base, adapter)}

    def sizes(self, row: Row, base: str, adapter: Path | None) -> dict:
        sizes = {"nonzero": nonzero_parameters(base),
                 "adapter": _numel(adapter / "adapter_model.safetensors") if adapter else 0,
                 "trainable": 0, "train_minutes": None}
        if row.training:
            sizes["trainable"] = _numel(self.out / "train" / row.train_name / "adapter_model.safetensors")
            sizes["train_minutes"] = self.seconds(f"train {row.train_name}") / 60
        return sizes


@functools.cache
def nonzero_parameters(base: str) -> int:
    """Read once per base model: several rows share one, and each read scans the whole checkpoint."""
    return folder_sparsity(resolve_model(base))["nonzero_parameters"]


def worker_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _numel(safetensors_file: Path) -> int:
    with safe_open(str(safetensors_file), "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())


CONSTANT_SHARE = 0.9  # a row giving one answer to this share of a task's examples has not learned the task


def average(result: dict) -> float:
    return 100 * sum(t["accuracy"] for t in result["accuracy"].values()) / len(result["accuracy"])


def constant_tasks(result: dict) -> int:
    """Tasks on which the row (almost) always gives the same answer, or none: there its accuracy is that
    answer's base rate, and comparing it with another row says nothing about the method."""
    count = 0
    for examples in result["examples"].values():
        top = collections.Counter(e["extracted"] for e in examples).most_common(1)[0][1]
        count += top >= CONSTANT_SHARE * len(examples)
    return count


def majority_accuracy(result: dict) -> dict[str, float]:
    """What always giving each task's most frequent gold answer scores on the same examples (%)."""
    shares = {}
    for task in COMMONSENSE:
        gold = collections.Counter(e["answer"] for e in result["examples"][task])
        shares[task] = 100 * gold.most_common(1)[0][1] / sum(gold.values())
    return shares


def majority_average(result: dict) -> float:
    shares = majority_accuracy(result)
    return sum(shares.values()) / len(shares)


def majority_row(result: dict) -> list[str]:
    shares = majority_accuracy(result)
    return ["*most frequent gold answer (reference)*", *(f"*{shares[t]:.1f}*" for t in COMMONSENSE),
            f"*{majority_average(result):.1f}*", "", "", "", "", "8/8"]


def table(results: list[dict]) -> list[str]:
    header = ["row", *(SHORT[t] for t in COMMONSENSE), "avg", "non-zero base", "trainable", "deployed adapter",
              "train min", "constant-answer tasks"]
    rows = [[r["row"].title, *(f"{100 * r['accuracy'][t]['accuracy']:.1f}" for t in COMMONSENSE),
             f"**{average(r):.1f}**", f"{r['nonzero'] / 1e6:.1f}M", f"{r['trainable'] / 1e6:.2f}M",
             f"{r['adapter'] / 1e6:.2f}M", f"{r['train_minutes']:.1f}" if r["train_minutes"] else "-",
             f"{constant_tasks(r)}/{len(COMMONSENSE)}"] for r in results]
    rows.append(majority_row(results[0]))
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


# The paper's claims this study can check, each as: the claim, the paper's figures, and the two rows
# whose averages it compares (first minus second), with the smallest difference that is still consistent.
CLAIMS = (
    ("Shears at 50% sparsity stays close to LoRA on the dense model",
     "LLaMA-7B commonsense-170k average: LoRA dense 74.7, Shears 50% 72.5 (-2.2)", "shears-wanda50", "lora-dense", -3.0),
    ("Shears at 40% sparsity matches LoRA on the dense model",
     "LoRA dense 74.7, Shears 40% 74.9 (+0.2)", "shears-wanda40", "lora-dense", -1.5),
    ("Less sparsity is at least as good (40% vs 50%)", "Shears 40% 74.9 vs 50% 72.5 (+2.4)",
     "shears-wanda40", "shears-wanda50", 0.0),
    ("NLS is at least as good as plain LoRA on the same sparse model",
     "the paper's ablation trains both on the same sparse model", "shears-wanda50", "lora-wanda50", 0.0),
    ("Hill-climbing finds a sub-adapter at least as good as the heuristic",
     "Table 6 (LLaMA-7B math, 50%): heuristic 45.3, hill-climbing 45.9 (+0.6)", "shears-wanda50-hill",
     "shears-wanda50", 0.0),
    ("Wanda keeps more accuracy than magnitude pruning at 50%",
     "why Shears prunes with Wanda (Sun et al., 2023)", "shears-wanda50", "shears-magnitude50", 0.0),
)


def claims(results: list[dict], examples_per_row: int) -> list[str]:
    """Each claim's verdict: not testable when either row does not beat always giving the most frequent
    answer, or answers (almost) constantly on most tasks; contradicted only when the difference is more
    than two standard errors below what the claim allows."""
    by_slug = {r["row"].slug: r for r in results}
    majority = majority_average(results[0])
    noise = 2 * 100 * math.sqrt(2 * 0.25 / examples_per_row)  # two standard errors of a difference of averages
    lines = ["| claim | paper | here (average, points) | verdict |", "|---|---|---|---|"]
    for claim, paper, first, second, tolerance in CLAIMS:
        if first not in by_slug or second not in by_slug:
            continue
        a, b = average(by_slug[first]), average(by_slug[second])
        if min(a, b) <= majority:
            verdict = f"not testable: a row does not beat always giving the most frequent answer ({majority:.1f})"
        elif max(constant_tasks(by_slug[first]), constant_tasks(by_slug[second])) > len(COMMONSENSE) // 2:
            verdict = "not testable: a row gives (almost) one answer on most tasks"
        elif a - b >= tolerance:
            verdict = "consistent" + (f" (allowing {-tolerance:.1f})" if tolerance else "")
        elif a - b < tolerance - noise:
            verdict = "contradicted"
        else:
            verdict = f"within noise (two standard errors: {noise:.1f})"
        lines.append(f"| {claim} | {paper} | {a:.1f} vs {b:.1f} ({a - b:+.1f}) | {verdict} |")
    return lines


def plain_words(results: list[dict]) -> list[str]:
    """What the table says, computed from it, so that a rerun cannot leave the words behind the numbers."""
    majority = majority_average(results[0])
    trained = [r for r in results if r["row"].training]
    learned = [r["row"].title for r in trained if average(r) > majority]
    by_slug = {r["row"].slug: r for r in results}
    lines = []
    if trained and not learned:
        lines.append(
            f"- No fine-tuned row beats always giving each task's most frequent answer ({majority:.1f}). At this size "
            "fine-tuning teaches the answer format (the zero-shot rows mostly give no answer word at all) but not the "
            "tasks: most trained rows give one answer to nearly every example of several tasks. So this table can "
            "neither confirm nor refute the paper's accuracy claims; their verdicts below say so rather than read "
            "noise as a finding.")
    elif learned:
        lines.append(f"- Rows that beat always giving the most frequent answer ({majority:.1f}): {', '.join(learned)}.")
    if "lora-wanda50" in by_slug and "shears-wanda50" in by_slug:
        lora, nls = by_slug["lora-wanda50"], by_slug["shears-wanda50"]
        lines.append(
            f"- Cost, which does not depend on accuracy: on the same Wanda-50% model NLS trained in "
            f"{nls['train_minutes']:.1f} min against LoRA's {lora['train_minutes']:.1f} "
            f"({nls['train_minutes'] / lora['train_minutes']:.2f}x) with the same {nls['trainable'] / 1e6:.2f}M trainable "
            f"parameters, and its heuristic sub-adapter deploys {nls['adapter'] / 1e6:.2f}M parameters "
            f"({nls['adapter'] / lora['adapter']:.2f}x LoRA's) on a base with {nls['nonzero'] / 1e6:.1f}M non-zero "
            "parameters.")
    if "zero-dense" in by_slug and "zero-wanda50" in by_slug:
        dense, sparse = by_slug["zero-dense"], by_slug["zero-wanda50"]
        lines.append(
            f"- Zero-shot, the Wanda-50% model scores {average(sparse):.1f} against the dense model's "
            f"{average(dense):.1f}; it gives no answer word to {no_answer(sparse):.0f}% of the examples "
            f"(dense: {no_answer(dense):.0f}%).")
    return lines


def no_answer(result: dict) -> float:
    examples = [e for task in result["examples"].values() for e in task]
    return 100 * sum(e["extracted"] is None for e in examples) / len(examples)


def report(args, results: list[dict], seconds: float) -> str:
    raw = read_json(CONFIG, what="config")
    config, ranks = raw["shears"], raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups_widths"][0]
    train = next((read_manifest(Path(args.output) / "train" / r["row"].train_name, stage="train")
                  for r in results if r["row"].training), None)
    n = args.eval_limit * len(COMMONSENSE)
    lines = [
        "# Small-scale reproduction of Shears (commonsense)",
        "",
        "Made in one go by:",
        "",
        "```",
        "python " + " ".join(["benchmarks/reproduce_small.py", *sys.argv[1:]]),
        "```",
        "",
        f"- Model: SmolLM2-135M (embedded), fp32 on the CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.jobs} worker(s) of {worker_threads(args.jobs)} thread(s) side by side); "
        f"the steps add up to {seconds / 60:.0f} min of worker time.",
        f"- Training (every trained row alike): config `{CONFIG.relative_to(CONFIG.parents[2])}` (LoRA r "
        f"{config['lora']['r']}, alpha {config['lora']['alpha']}, targets {', '.join(config['lora']['target_modules'])}; "
        f"NLS ranks {ranks}), "
        f"batch {config['training']['batch_size']} x {config['training']['grad_accum']} accumulation, max length "
        f"{config['training']['max_length']}, {args.steps} optimizer steps on {args.train_limit} examples "
        f"of the `commonsense` mixture of the eight training splits (seed {args.seed})"
        + (f"; {train['examples']} examples after tokenization" if train else "") + ".",
        f"- Sparsity: Wanda / magnitude, unstructured per output row, {args.nsamples} x 512 calibration tokens.",
        f"- Hill-climbing: from the heuristic, validation loss on {args.search_limit} held-out training examples per "
        f"task, budget {args.search_budget} evaluations.",
        f"- Evaluation: generation, greedy, the first {args.eval_limit} examples of each task "
        f"(LLM-Adapters wording); accuracy in %. One task's standard error is about "
        f"{100 * math.sqrt(0.25 / args.eval_limit):.1f} points, the average's about {100 * math.sqrt(0.25 / n):.1f}.",
        "- Columns: non-zero parameters of the base model (embeddings included); trainable parameters of the "
        "(super-)adapter; parameters of the adapter that is deployed (the sub-adapter for Shears); training minutes "
        "(wall time of `shears train`, model loading included); constant-answer tasks: tasks on which the row gives "
        f"one answer (or no answer) to at least {CONSTANT_SHARE:.0%} of the examples, where its accuracy is only "
        "that answer's base rate. The last row is what always giving each task's most frequent gold answer scores.",
        "",
        *table(results),
        "",
        "## In plain words",
        "",
        *plain_words(results),
        "",
        "## Against the paper's claims",
        "",
        *claims(results, n),
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/reproduce", help="folder of every step's output (resumable)")
    parser.add_argument("--results", help="write the markdown report here once every requested row is complete")
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(r.slug for r in ROWS)}")
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps of every training")
    parser.add_argument("--train-limit", type=int, default=2000, help="training examples drawn from the mixture")
    parser.add_argument("--eval-limit", type=int, default=200, help="first N test examples of each task")
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--nsamples", type=int, default=32, help="calibration samples of 512 tokens")
    parser.add_argument("--search-budget", type=int, default=10)
    parser.add_argument("--search-limit", type=int, default=8, help="validation examples per task for the search")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", type=int, default=1, help="run the rows in this many worker processes")
    args = parser.parse_args()

    wanted = args.rows.split(",") if args.rows else [r.slug for r in ROWS]
    unknown = set(wanted) - {r.slug for r in ROWS}
    if unknown:
        parser.error(f"unknown row(s) {sorted(unknown)}; rows are {', '.join(r.slug for r in ROWS)}")
    rows = [row for row in ROWS if row.slug in wanted]
    study = Study(args)
    if args.jobs > 1:
        run_workers(args, rows, study.out)
    results = [study.evaluate(row) for row in rows]  # with --jobs: every step is done, this only reads
    markdown = report(args, results, study.total_seconds())
    print(markdown)
    if args.results:
        write_text(args.results, markdown)


def run_workers(args, rows: list[Row], out: Path) -> None:
    """Run the rows in `--jobs` processes of this script, each with an equal share of the CPU threads.

    Rows that share a base model (and so its sparsify, training or search step) go to the same worker;
    the groups are dealt largest first to the least loaded worker. On 2 cores, two 1-thread workers do
    about 1.25x the work of one 2-thread process (a 1-thread step is ~1.6x slower, not 2x)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.base, []).append(row)
    shares: list[list[Row]] = [[] for _ in range(args.jobs)]
    for group in sorted(groups.values(), key=len, reverse=True):
        min(shares, key=len).extend(group)
    threads = worker_threads(args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    argv = _without(sys.argv[1:], "--jobs", "--rows", "--results")
    workers = []
    for i, share in enumerate(s for s in shares if s):
        log = out / f"worker-{i}.log"
        command = [sys.executable, __file__, *argv,
                   "--jobs", "1", "--rows", ",".join(r.slug for r in share)]
        print(f"[reproduce] worker {i} ({threads} thread(s), log {log}): {', '.join(r.slug for r in share)}", flush=True)
        workers.append(subprocess.Popen(command, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT))
    failed = [i for i, w in enumerate(workers) if w.wait() != 0]
    if failed:
        sys.exit(f"worker(s) {failed} failed; see {out}/worker-N.log; rerun the same command to resume")


def _without(argv: list[str], *options: str) -> list[str]:
    """argv minus the given options and their values (`--opt value` or `--opt=value`)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    main()
