"""A small-scale reproduction of Shears' commonsense claims on the embedded SmolLM2-135M, scored so that it can decide them.

Seventeen rows, in the shape of the paper's Tables 2, 5 and 6: zero-shot on the dense model, on
Wanda 40/50/60/70% and on magnitude 50%; LoRA on the dense and the Wanda-50% model; Shears (NLS) on
Wanda 50% with its maximal, heuristic, minimal, hill-climbing and RNSGA-II sub-adapters; Shears
(heuristic) on Wanda 40/60/70% and magnitude 50%. Every trained row uses the same data, steps,
learning rate and seed; every row is scored by log-likelihood (lm-evaluation-harness, acc_norm where
it defines one, else acc) on the same first N validation documents of each of the eight commonsense
tasks, and by generation (the paper's protocol) on fewer. Each claim is a *paired* comparison of two
rows on the same documents: a bootstrap over documents (stratified by task) gives the difference of
the task-averaged scores, its 95% interval and a verdict.

Every step is one `shears` command in its own process, writing its own folder under --output
atomically, run through `shears run`'s step machinery (`shears_nncf.steps`): a step is skipped when it
completed under the same key (its options, its input files, the steps it reads from), so an interrupted
study resumes where it stopped (an interrupted training from its last checkpoint), a changed setting
reruns what depends on it, and `--rows` runs a subset. Once every row is complete, the
report goes to --results and its two pictures beside it.

    python benchmarks/reproduce_small.py --jobs 2 --output runs/reproduce --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open

from shears_nncf.artifacts import read_json, write_json, write_text
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.evaluation import compare
from shears_nncf.evaluation.harness import headline_metric
from shears_nncf.models import EMBEDDED_MODEL, resolve_model
from shears_nncf.nls.folder import ADAPTER_WEIGHTS, SuperAdapter
from shears_nncf.search.run import SEARCH_FILE
from shears_nncf.sparsity.report import folder_sparsity
from shears_nncf.steps import DIGESTS, RECORDS, StepRunner, step_from_argv
from shears_nncf.tables import markdown_table

# The studies' training config: the demo's as these results were made with it (the demo's own has moved on since; a
# step's key hashes its config's content, so the studies keep theirs).
CONFIG = Path(__file__).resolve().parent.parent / "nncf_configs" / "studies" / "smollm2_commonsense.json"
SPARSE_MODELS = {"wanda-40": ("wanda", 0.4), "wanda-50": ("wanda", 0.5), "wanda-60": ("wanda", 0.6),
                 "wanda-70": ("wanda", 0.7), "magnitude-50": ("magnitude", 0.5)}
SHORT = {"boolq": "BoolQ", "piqa": "PIQA", "social_i_qa": "SIQA", "hellaswag": "HellaS", "winogrande": "WinoG",
         "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "openbookqa": "OBQA"}
# Training data: "lm-eval" is the eight train splits as lm-eval poses them (prompt, then the gold choice's
# text), scored in lm-eval's wording; "llm-adapters" is LLM-Adapters' records, scored with its answer sentences.
FORMATS = {"lm-eval": "lm-eval", "llm-adapters": "llm-adapters"}  # training format -> log-likelihood wording
SEARCHES = {"hill-climbing": "hill-climbing", "rnsga2": "rnsga2"}  # subnet -> search strategy
# The pilot that chose the training data: (training format, learning rate) of a LoRA on Wanda 50%.
PILOT = {"a-1e-3": ("lm-eval", 1e-3), "b-1e-3": ("llm-adapters", 1e-3)}
WORKER = "SHEARS_STUDY_WORKER"  # set in the environment of the --jobs worker processes
DETECTABLE = 2.8  # standard errors: a difference this large is found 80% of the time at the 5% level


@dataclass(frozen=True)
class Row:
    slug: str  # what --rows takes
    title: str
    sparse: str | None  # a key of SPARSE_MODELS; None: the dense model
    training: str | None = None  # "lora" or "nls"; None: zero-shot
    subnet: str | None = None  # NLS rows: maximal, heuristic, minimal, hill-climbing or rnsga2

    @property
    def base(self) -> str:
        return self.sparse or "dense"

    @property
    def train_name(self) -> str:
        return f"{self.base}-{self.training}"

    @property
    def sparsity(self) -> int:
        return round(100 * SPARSE_MODELS[self.sparse][1]) if self.sparse else 0


ROWS = (
    Row("zero-dense", "zero-shot, dense", None),
    Row("zero-wanda40", "zero-shot, Wanda 40%", "wanda-40"),
    Row("zero-wanda50", "zero-shot, Wanda 50%", "wanda-50"),
    Row("zero-wanda60", "zero-shot, Wanda 60%", "wanda-60"),
    Row("zero-wanda70", "zero-shot, Wanda 70%", "wanda-70"),
    Row("zero-magnitude50", "zero-shot, magnitude 50%", "magnitude-50"),
    Row("lora-dense", "LoRA, dense", None, "lora"),
    Row("lora-wanda50", "LoRA, Wanda 50%", "wanda-50", "lora"),
    Row("shears-wanda50-maximal", "Shears, Wanda 50%, maximal", "wanda-50", "nls", "maximal"),
    Row("shears-wanda50", "Shears, Wanda 50%, heuristic", "wanda-50", "nls", "heuristic"),
    Row("shears-wanda50-minimal", "Shears, Wanda 50%, minimal", "wanda-50", "nls", "minimal"),
    Row("shears-wanda50-hill", "Shears, Wanda 50%, hill-climbing", "wanda-50", "nls", "hill-climbing"),
    Row("shears-wanda50-rnsga2", "Shears, Wanda 50%, RNSGA-II", "wanda-50", "nls", "rnsga2"),
    Row("shears-wanda40", "Shears, Wanda 40%, heuristic", "wanda-40", "nls", "heuristic"),
    Row("shears-wanda60", "Shears, Wanda 60%, heuristic", "wanda-60", "nls", "heuristic"),
    Row("shears-wanda70", "Shears, Wanda 70%, heuristic", "wanda-70", "nls", "heuristic"),
    Row("shears-magnitude50", "Shears, magnitude 50%, heuristic", "magnitude-50", "nls", "heuristic"),
)


class Study:
    """Runs the steps of the requested rows through `shears run`'s step machinery (`shears_nncf.steps`): a step is
    skipped when its product exists and its record (`steps/<step>.json`, one file per step, so that parallel
    workers never write the same file) says it completed under the same key; the record keeps its wall time."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.output)
        self.runner = StepRunner(self.out, label="reproduce", isolate=True)

    @property
    def wording(self) -> str:
        return FORMATS[self.args.train_format]

    def log_invocation(self, seconds: float) -> None:
        """Each run of this script and its wall time (a resumed study took several): invocations.json."""
        path = self.out / "invocations.json"
        runs = read_json(path, what="invocation log") if path.exists() else []
        write_json(path, [*runs, {"argv": sys.argv[1:], "seconds": round(seconds, 1)}])

    def wall_seconds(self) -> float:
        path = self.out / "invocations.json"
        return sum(r["seconds"] for r in read_json(path, what="invocation log")) if path.exists() else 0.0

    def total_seconds(self) -> float:
        return sum(read_json(p, what="step record").get("seconds", 0.0) for p in (self.out / RECORDS).glob("*.json")
                   if p.name != DIGESTS)

    def step(self, name: str, argv: list[str], product: Path) -> Path:
        """`shears argv` in its own process, unless it is up to date; an interrupted training resumes."""
        return self.runner.run(step_from_argv(argv, product, name=name))

    def training_data(self, train_format: str | None = None) -> str:
        """The training records: for the lm-eval format, written once (before any worker starts) into the output."""
        if (train_format or self.args.train_format) == "llm-adapters":
            return "default"
        from shears_nncf.data.lm_eval_documents import write_training_records

        return str(write_training_records(self.out / "data" / "lm_eval_train.jsonl", list(COMMONSENSE),
                                          self.args.train_per_task))

    def pilot(self) -> list[dict]:
        """LoRA on the Wanda-50% model for each (format, learning rate) of PILOT, with the study's steps and data
        size, scored on the first --pilot-limit documents in the format's wording against the zero-shot model."""
        base, folder, runs = self.base_model(next(r for r in ROWS if r.sparse == "wanda-50")), self.out / "pilot", []
        for key, (train_format, lr) in PILOT.items():
            wording, trained = FORMATS[train_format], folder / key
            self.step(f"pilot train {key}", [
                "train", "--config", str(CONFIG), "--model", base, "--data", self.training_data(train_format),
                "--tasks", "commonsense", "--limit", str(self.args.train_limit), "--lr", str(lr),
                "--max-steps", str(self.args.steps), "--lora-only", "--seed", str(self.args.seed), "--output", str(trained)],
                trained)
            scoring = ["--model", base, "--data", "default", "--tasks", ",".join(COMMONSENSE), "--batch-size",
                       str(self.args.batch_size), "--scoring", "loglik", "--prompt-style", wording,
                       "--limit", str(self.args.pilot_limit)]
            zero = self.scored(f"pilot eval zero-{wording}", scoring, folder / f"eval-zero-{wording}.json")
            tuned = self.scored(f"pilot eval {key}", [*scoring, "--adapter", str(trained)], folder / f"eval-{key}.json")
            runs.append({"format": train_format, "lr": lr, "wording": wording, "manifest": SuperAdapter.read(trained).manifest,
                         "zero": {"loglik": read_json(zero, what="evaluation results")},
                         "tuned": {"loglik": read_json(tuned, what="evaluation results")}})
        return runs

    def base_model(self, row: Row) -> str:
        if row.sparse is None:
            return self.args.model
        method, ratio = SPARSE_MODELS[row.sparse]
        folder = self.out / "sparse" / row.sparse
        self.step(f"sparsify {row.sparse}", ["sparsify", "--model", self.args.model, "--method", method,
                                             "--ratio", str(ratio), "--nsamples", str(self.args.nsamples),
                                             "--output", str(folder)], folder)
        return str(folder)

    def trained(self, row: Row) -> Path:
        folder = self.out / "train" / row.train_name
        argv = ["train", "--config", str(CONFIG), "--model", self.base_model(row), "--data", self.training_data(),
                "--tasks", "commonsense", "--limit", str(self.args.train_limit), "--lr", str(self.args.lr),
                "--max-steps", str(self.args.steps), "--seed", str(self.args.seed), "--output", str(folder)]
        if row.training == "lora":
            argv.append("--lora-only")
        return self.step(f"train {row.train_name}", argv, folder)

    def search(self, row: Row) -> Path:
        """The search run of a hill-climbing or RNSGA-II row: log-likelihood on held-out training documents."""
        folder = self.out / "search" / f"{row.train_name}-{row.subnet}"
        return self.step(f"search {folder.name}", [
            "search", "--super-adapter", str(self.trained(row)), "--strategy", SEARCHES[row.subnet],
            "--budget", str(self.args.search_budget), "--metric", "loglik", "--prompt-style", self.wording,
            "--tasks", ",".join(COMMONSENSE), "--limit", str(self.args.search_limit), "--seed", str(self.args.seed),
            "--batch-size", str(self.args.batch_size), "--output", str(folder)], folder)

    def adapter(self, row: Row) -> Path | None:
        """The adapter the row deploys: none (zero-shot), the LoRA itself, or the extracted sub-adapter."""
        if row.training is None:
            return None
        trained = self.trained(row)
        if row.training == "lora":
            return trained
        subnet = str(self.search(row) / SEARCH_FILE) if row.subnet in SEARCHES else row.subnet
        folder = self.out / "adapter" / f"{row.train_name}-{row.subnet}"
        return self.step(f"extract {folder.name}", ["extract", "--super-adapter", str(trained), "--subnet", subnet,
                                                    "--output", str(folder)], folder)

    def evaluate(self, row: Row) -> dict:
        base, adapter = self.base_model(row), self.adapter(row)
        model = ["--model", base, *(["--adapter", str(adapter)] if adapter else []), "--data", "default",
                 "--tasks", ",".join(COMMONSENSE), "--batch-size", str(self.args.batch_size)]
        loglik = self.scored(f"eval {row.slug}", [*model, "--scoring", "loglik", "--prompt-style", self.wording,
                                                 "--limit", str(self.args.eval_limit)], self.out / "eval" / f"{row.slug}.json")
        generated = None
        if self.args.generate_limit:
            generated = self.scored(f"generate {row.slug}", [*model, "--scoring", "generate",
                                                             "--limit", str(self.args.generate_limit)],
                                    self.out / "eval" / f"{row.slug}-generate.json")
        return {"row": row, "loglik": read_json(loglik, what="evaluation results"),
                "generate": read_json(generated, what="evaluation results") if generated else None,
                **self.sizes(row, base, adapter)}

    def scored(self, name: str, argv: list[str], result: Path) -> Path:
        """`shears evaluate` into `result`: the file is rewritten after every task, and an interrupted one resumes
        with the missing tasks."""
        return self.step(name, ["evaluate", *argv, "--output", str(result)], result)

    def sizes(self, row: Row, base: str, adapter: Path | None) -> dict:
        sizes = {"nonzero": nonzero_parameters(base),
                 "adapter": _numel(adapter / ADAPTER_WEIGHTS) if adapter else 0,
                 "trainable": 0, "train_seconds": None}
        if row.training:
            folder = self.out / "train" / row.train_name
            sizes["trainable"] = _numel(folder / ADAPTER_WEIGHTS)
            sizes["train_seconds"] = SuperAdapter.read(folder).summary["train_seconds"]
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


# ---- statistics: per-document scores, averages over tasks and paired bootstrap intervals


def scores(result: dict) -> dict[str, np.ndarray]:
    """Each task's per-document 0/1 scores (acc_norm where lm-eval defines it, else acc), in document order."""
    return {task: compare.document_scores(result["loglik"], task) for task in COMMONSENSE}


def average(result: dict) -> float:
    return compare.average(result["loglik"], list(COMMONSENSE))


def standard_error(result: dict) -> float:
    return compare.standard_error(result["loglik"], list(COMMONSENSE))


def paired_difference(first: dict, second: dict) -> dict:
    return compare.paired_difference(first["loglik"], second["loglik"], list(COMMONSENSE))


def verdict(comparisons: list[dict]) -> str:
    """holds: every interval above zero; refuted: one entirely below; else inconclusive at this size."""
    if any(c["high"] < 0 for c in comparisons):
        return "**refuted**"
    if all(c["low"] > 0 for c in comparisons):
        return "**holds**"
    detectable = max(DETECTABLE * c["se"] for c in comparisons if c["low"] <= 0)
    return f"**inconclusive at this size** (an interval spans zero; the study detects about {detectable:.1f} points)"


# The paper's claims: the claim, what the paper (or the method it builds on) reports, and the pairs of rows
# (first, second) whose paired difference first - second must be positive for the claim to hold.
CLAIMS = (
    ("Pruning costs accuracy: dense beats Wanda 50%, zero-shot", "Wanda and Shears prune *because* 50% costs little, "
     "not nothing", [("zero-dense", "zero-wanda50")]),
    ("Wanda keeps more than magnitude at 50%, zero-shot", "why Shears prunes with Wanda (Sun et al., 2023)",
     [("zero-wanda50", "zero-magnitude50")]),
    ("Wanda keeps more than magnitude at 50%, after fine-tuning (Shears, heuristic)", "as above, after NLS",
     [("shears-wanda50", "shears-magnitude50")]),
    ("Accuracy falls monotonically with sparsity, zero-shot (0 > 40 > 50 > 60 > 70%)", "MPT-7B GSM8K 36.1/35.7/33.4/30.4/22.8 "
     "(after Shears)", [("zero-dense", "zero-wanda40"), ("zero-wanda40", "zero-wanda50"), ("zero-wanda50", "zero-wanda60"),
                        ("zero-wanda60", "zero-wanda70")]),
    ("Accuracy falls monotonically with sparsity, Shears heuristic (40 > 50 > 60 > 70%)", "as above",
     [("shears-wanda40", "shears-wanda50"), ("shears-wanda50", "shears-wanda60"), ("shears-wanda60", "shears-wanda70")]),
    ("Fine-tuning the sparse model recovers part of what pruning cost: LoRA on Wanda 50% beats its zero-shot",
     "LLaMA-7B: Shears 50% 72.5 after fine-tuning", [("lora-wanda50", "zero-wanda50")]),
    ("... and so does Shears (heuristic) on Wanda 50%", "as above", [("shears-wanda50", "zero-wanda50")]),
    ("Shears at 50% is at least as good as LoRA on the same sparse model", "the paper's ablation: no worse",
     [("shears-wanda50", "lora-wanda50")]),
    ("Shears at 50% stays close to LoRA on the dense model", "LLaMA-7B commonsense: LoRA dense 74.7, Shears 50% 72.5 "
     "(-2.2)", [("shears-wanda50", "lora-dense")]),
    ("Less sparsity is at least as good: Shears 40% vs 50%", "Shears 40% 74.9 vs 50% 72.5 (+2.4)",
     [("shears-wanda40", "shears-wanda50")]),
    ("The heuristic sub-adapter beats the minimal one", "Table 6 (7B, 50%, math): heuristic 45.3, minimal 43.5",
     [("shears-wanda50", "shears-wanda50-minimal")]),
    ("The heuristic sub-adapter is at least as good as the maximal one", "Table 6: maximal 44.5, heuristic 45.3",
     [("shears-wanda50", "shears-wanda50-maximal")]),
    ("Hill-climbing is at least as good as the heuristic (test)", "Table 6: heuristic 45.3, hill-climbing 45.9 (+0.6)",
     [("shears-wanda50-hill", "shears-wanda50")]),
    ("RNSGA-II is at least as good as the heuristic (test)", "Table 6: heuristic 45.3, RNSGA-II 45.7",
     [("shears-wanda50-rnsga2", "shears-wanda50")]),
)


def claims(results: list[dict]) -> tuple[list[str], dict]:
    by_slug = {r["row"].slug: r for r in results}
    rows, verdicts = [], {}
    for claim, paper, pairs in CLAIMS:
        if not all(a in by_slug and b in by_slug for a, b in pairs):
            continue
        comparisons = [paired_difference(by_slug[a], by_slug[b]) for a, b in pairs]
        here = "; ".join(f"{_name(a)} - {_name(b)}: {c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"
                         for (a, b), c in zip(pairs, comparisons))
        verdicts[claim] = verdict(comparisons)
        rows.append([claim, paper, here, verdicts[claim]])
    return markdown_table(["claim", "paper", "here: first - second (points, 95% interval)", "verdict"], rows), verdicts


def _name(slug: str) -> str:
    return next(r.title for r in ROWS if r.slug == slug).replace(", heuristic", "")


def table(results: list[dict]) -> list[str]:
    header = ["row", *(SHORT[t] for t in COMMONSENSE), "avg ± se", "generation avg (n)", "non-zero base",
              "deployed adapter", "train min"]
    rows = []
    for r in results:
        per_task = scores(r)
        generation = "-"
        if r["generate"]:
            tasks = r["generate"]["tasks"].values()
            n = sum(t["count"] for t in tasks)
            generation = f"{100 * r['generate']['average']:.1f} ({n})"
        tasks = r["loglik"]["tasks"]
        rows.append([r["row"].title, *(f"{100 * per_task[t].mean():.1f} ±{100 * tasks[t][headline_metric(tasks[t]) + '_stderr']:.0f}"
                                       for t in COMMONSENSE),
                     f"**{average(r):.1f}** ± {standard_error(r):.1f}", generation, f"{r['nonzero'] / 1e6:.1f}M",
                     f"{r['adapter'] / 1e6:.2f}M", f"{r['train_seconds'] / 60:.1f}" if r["train_seconds"] else "-"])
    return markdown_table(header, rows)


def pilot_lines(runs: list[dict], limit: int, chosen: str) -> list[str]:
    lines = [f"LoRA on the Wanda-50% model, scored on the first {limit} documents of each task in the wording of its "
             "training data, against the zero-shot model in the same wording (paired, 95% interval):", ""]
    rows = []
    for run in runs:
        m, c = run["manifest"], paired_difference(run["tuned"], run["zero"])
        rows.append([run["format"], run["wording"], f"{run['lr']:g}",
                     f"{m['optimizer_steps']} x {m['settings']['global_batch']}",
                     f"{average(run['zero']):.1f} ± {standard_error(run['zero']):.1f}",
                     f"{average(run['tuned']):.1f} ± {standard_error(run['tuned']):.1f}",
                     f"{c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"])
    lines += markdown_table(["training data", "wording", "lr", "steps x batch", "zero-shot", "LoRA", "change"], rows)
    best = max(runs, key=lambda run: paired_difference(run["tuned"], run["zero"])["diff"])
    lines += ["", f"Steps and learning rate were fixed beforehand for the CPU budget (a {runs[0]['manifest']['optimizer_steps']}"
              f"-step LoRA trains in a few minutes; {runs[0]['lr']:g}, high as short LoRA runs need); the pilot picks the "
              "training data. The largest measured "
              f"recovery is {best['format']}'s; every trained row of the study is trained on `{chosen}` records."]
    return lines


def search_lines(study: Study) -> list[str]:
    """What each search saw on its validation documents: the heuristic it starts from (or compares with) and its choice."""
    lines = []
    for subnet in SEARCHES:
        path = study.out / "search" / f"wanda-50-nls-{subnet}" / SEARCH_FILE
        if path.exists():
            s = read_json(path, what="search result")
            heuristic, chosen = s["anchors"]["heuristic"], s["chosen"]
            lines.append(f"- {subnet}: {s['strategy_evaluations']} evaluations on {study.args.search_limit} held-out "
                         f"training documents per task; validation {s['metric']} {chosen[s['metric']]:.1f} at "
                         f"{int(chosen['cost']):,} adapter parameters, against the heuristic's {heuristic[s['metric']]:.1f} "
                         f"at {int(heuristic['cost']):,}.")
    return lines


def plain_words(results: list[dict], verdicts: dict) -> list[str]:
    """What the table says, computed from it, so that a rerun cannot leave the words behind the numbers."""
    by_slug = {r["row"].slug: r for r in results}
    lines = []
    held = [c for c, v in verdicts.items() if "holds" in v]
    refuted = [c for c, v in verdicts.items() if "refuted" in v]
    open_ = [c for c, v in verdicts.items() if "inconclusive" in v]
    lines.append(f"- Of {len(verdicts)} claims, {len(held)} hold, {len(refuted)} are refuted and {len(open_)} stay "
                 "inconclusive at this size." + (f" Refuted here: {'; '.join(refuted)}." if refuted else ""))
    if {"zero-dense", "zero-wanda50", "lora-wanda50"} <= by_slug.keys():
        dense, sparse, lora = (average(by_slug[s]) for s in ("zero-dense", "zero-wanda50", "lora-wanda50"))
        gap = dense - sparse
        lines.append(f"- Pruning half the weights with Wanda costs {gap:.1f} points zero-shot ({dense:.1f} -> {sparse:.1f}). "
                     f"LoRA on the sparse model scores {lora:.1f}: "
                     + (f"{100 * (lora - sparse) / gap:.0f}% of that gap recovered." if gap > 0 and lora < dense else
                        "past the dense model's zero-shot score, since it is trained on the tasks' own training splits."))
    zero = [r for r in results if r["row"].training is None]
    if len(zero) > 2:
        per_task = {t: [100 * scores(r)[t].mean() for r in zero] for t in COMMONSENSE}
        noisy = max(per_task, key=lambda t: max(per_task[t]) - min(per_task[t]))
        without = ", ".join(f"{r['row'].title.removeprefix('zero-shot, ')} {np.mean([v[i] for t, v in per_task.items() if t != noisy]):.1f}"
                            for i, r in enumerate(zero))
        lines.append(f"- Zero-shot, the rows differ most on {SHORT[noisy]} ({min(per_task[noisy]):.0f} to "
                     f"{max(per_task[noisy]):.0f} across the zero-shot rows, more than any other task); without "
                     f"{SHORT[noisy]} the zero-shot averages are: {without}.")
    if "lora-wanda50" in by_slug and "shears-wanda50" in by_slug:
        lora, nls = by_slug["lora-wanda50"], by_slug["shears-wanda50"]
        dense = f" (dense: {by_slug['zero-dense']['nonzero'] / 1e6:.1f}M)" if "zero-dense" in by_slug else ""
        lines.append(
            f"- Cost, which does not depend on accuracy: NLS trains the same {nls['trainable'] / 1e6:.2f}M parameters as "
            f"LoRA, and its heuristic sub-adapter deploys {nls['adapter'] / 1e6:.2f}M ({nls['adapter'] / lora['adapter']:.2f}x "
            f"LoRA's) on a base with {nls['nonzero'] / 1e6:.1f}M non-zero parameters{dense}. The training minutes in the "
            "table were taken while other steps shared the cores, so they do not compare NLS with LoRA; "
            "`benchmarks/nls_overhead.py` does, interleaving both in one process.")
    generated = [r for r in results if r["generate"]]
    if generated:
        best = max(generated, key=lambda r: r["generate"]["average"])
        lines.append(f"- By generation (the paper's protocol, few examples) the best row is {best['row'].title} at "
                     f"{100 * best['generate']['average']:.1f}%; read beside the log-likelihood column it shows how "
                     "much of a small model's generated score is the answer format rather than the task.")
    return lines


def plot(results: list[dict], study: Study, folder: Path) -> list[str]:
    """accuracy_vs_sparsity.png and search_pareto.png beside the report; the markdown lines that show them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_slug = {r["row"].slug: r for r in results}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, slugs, marker in (
            ("zero-shot (Wanda)", ["zero-dense", "zero-wanda40", "zero-wanda50", "zero-wanda60", "zero-wanda70"], "o"),
            ("Shears, heuristic (Wanda)", ["shears-wanda40", "shears-wanda50", "shears-wanda60", "shears-wanda70"], "s"),
            ("zero-shot, magnitude", ["zero-magnitude50"], "x"), ("Shears, magnitude", ["shears-magnitude50"], "D"),
            ("LoRA", ["lora-dense", "lora-wanda50"], "^")):
        rows = [by_slug[s] for s in slugs if s in by_slug]
        if rows:
            ax.errorbar([r["row"].sparsity for r in rows], [average(r) for r in rows],
                        yerr=[1.96 * standard_error(r) for r in rows], marker=marker, capsize=3, label=label,
                        linestyle="-" if len(rows) > 2 else "none")
    ax.set_xlabel("sparsity of the base model (%)")
    ax.set_ylabel("average accuracy, 8 commonsense tasks (%)")
    ax.set_title("SmolLM2-135M: log-likelihood accuracy (95% intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "accuracy_vs_sparsity.png", dpi=120)
    plt.close(fig)
    images = ["![accuracy against sparsity](accuracy_vs_sparsity.png)"]

    searches = {s: read_json(p, what="search result") for s in SEARCHES
                if (p := study.out / "search" / f"wanda-50-nls-{s}" / SEARCH_FILE).exists()}
    if searches:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        metric = next(iter(searches.values()))["metric"]
        for (subnet, s), color in zip(searches.items(), ("tab:blue", "tab:green")):
            ax.scatter([e["cost"] for e in s["evaluated"]], [e[metric] for e in s["evaluated"]], s=14, c=color, alpha=0.4,
                       label=f"evaluated by {subnet}")
            front = s["pareto_front"]
            ax.plot([e["cost"] for e in front], [e[metric] for e in front], "-", c=color, lw=1)
            ax.scatter([s["chosen"]["cost"]], [s["chosen"][metric]], s=120, marker="*", c=color, edgecolors="black",
                       label=f"{subnet} choice", zorder=3)
        anchors = next(iter(searches.values()))["anchors"]
        for (name, anchor), marker in zip(anchors.items(), "sDv"):
            ax.scatter([anchor["cost"]], [anchor[metric]], s=60, marker=marker, c="white", edgecolors="black", label=name,
                       zorder=3)
        ax.set_xlabel("adapter parameters of the sub-adapter")
        ax.set_ylabel(f"validation {metric} (%)")
        ax.set_title("Sub-adapter search on Shears, Wanda 50%")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "search_pareto.png", dpi=120)
        plt.close(fig)
        images.append("![sub-adapter search: validation accuracy against adapter parameters](search_pareto.png)")
    return images


def report(args, results: list[dict], study: Study, images: list[str], pilot: list[dict]) -> str:
    raw = read_json(CONFIG, what="config")
    config, ranks = raw["shears"], raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups_widths"][0]
    train = next((SuperAdapter.read(study.out / "train" / r["row"].train_name).manifest
                  for r in results if r["row"].training), None)
    n_docs = {t: len(next(iter(results))["loglik"]["examples"][t]) for t in COMMONSENSE}
    claim_lines, verdicts = claims(results)
    data = ("the eight embedded train splits as lm-eval poses them (`data.lm_eval_documents.training_records`: lm-eval's "
            f"prompt, then the gold choice's text; the first {args.train_per_task} documents of each task)"
            if args.train_format == "lm-eval" else "the `commonsense` mixture of the eight training splits in "
            "LLM-Adapters' wording")
    lines = [
        "# Small-scale reproduction of Shears (commonsense)",
        "",
        "Made in one go by:",
        "",
        "```",
        "python " + " ".join(["benchmarks/reproduce_small.py", *sys.argv[1:]]),
        "```",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.jobs} worker(s) of "
        f"{worker_threads(args.jobs)} thread(s) side by side. Wall time of the study: {study.wall_seconds() / 60:.0f} min "
        f"over every run of this script (it resumes); the steps add up to {study.total_seconds() / 60:.0f} min of worker time.",
        "- Model: SmolLM2-135M (embedded), fp32 on the CPU.",
        f"- Sparsity: Wanda / magnitude, unstructured per output row, {args.nsamples} x 512 calibration tokens.",
        f"- Training (every trained row alike): config `{CONFIG.relative_to(CONFIG.parents[2])}` (LoRA r "
        f"{config['lora']['r']}, alpha {config['lora']['alpha']}, targets {', '.join(config['lora']['target_modules'])}; "
        f"NLS ranks {ranks}), batch {config['training']['batch_size']} x {config['training']['grad_accum']} accumulation, "
        f"max length {config['training']['max_length']}, learning rate {args.lr}, {args.steps} optimizer steps drawn "
        f"from {args.train_limit} records of {data} (seed {args.seed})"
        + (f"; {train['examples']} examples after tokenization" if train else "") + ".",
        f"- Search (hill-climbing, RNSGA-II): validation log-likelihood on {args.search_limit} held-out training documents "
        f"per task, budget {args.search_budget} evaluations each.",
        f"- Scoring: log-likelihood through lm-evaluation-harness in the `{study.wording}` wording on the first "
        f"{', '.join(f'{n_docs[t]}' for t in COMMONSENSE)} validation documents of {', '.join(SHORT[t] for t in COMMONSENSE)}"
        f" ({sum(n_docs.values())} per row); acc_norm where lm-eval defines one (all but BoolQ and WinoGrande), else acc, "
        "in %. The average is over tasks; its standard error adds the tasks' in quadrature. Generation (greedy, "
        f"LLM-Adapters' prompt and answer extraction): the first {args.generate_limit} examples of each task.",
        f"- Claims: paired bootstrap over documents ({compare.BOOTSTRAP_SAMPLES} resamples, within each task), the difference of "
        "averages with its 95% interval. **holds**: every interval above zero; **refuted**: one below zero; otherwise "
        f"**inconclusive at this size**, with the difference the study detects with 80% power ({DETECTABLE} standard errors).",
        "- Columns: per-task accuracy ± its standard error (lm-eval's, rounded to a point) and the average with its "
        "standard error (log-likelihood); generation accuracy and "
        "its number of examples; non-zero parameters of the base model (embeddings included); parameters of the "
        "deployed adapter (the sub-adapter for Shears); training minutes (`train_runtime` of the training loop).",
        "",
        *table(results),
        "",
        *[f"{image}\n" for image in images],
        *(["## Pilot: which training the scoring can see", "", *pilot_lines(pilot, args.pilot_limit, args.train_format), ""] if pilot else []),
        "## In plain words",
        "",
        *plain_words(results, verdicts),
        *search_lines(study),
        "",
        "## Against the paper's claims",
        "",
        *claim_lines,
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/reproduce", help="folder of every step's output (resumable)")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="the dense base model")
    parser.add_argument("--results", help="write the markdown report here (and its pictures beside it) once every "
                                          "requested row is complete")
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(r.slug for r in ROWS)}")
    parser.add_argument("--train-format", choices=sorted(FORMATS), default="lm-eval",
                        help="training records: lm-eval's prompts and choice texts, or LLM-Adapters' answer labels")
    parser.add_argument("--train-per-task", type=int, default=500, help="lm-eval format: documents of each train split")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps of every training")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of every training")
    parser.add_argument("--train-limit", type=int, default=2000, help="training records drawn from the data")
    parser.add_argument("--eval-limit", type=int, default=100, help="first N validation documents of each task")
    parser.add_argument("--pilot-limit", type=int, default=60, help="first N documents of each task for the pilot "
                                                                     "(0: no pilot)")
    parser.add_argument("--generate-limit", type=int, default=5, help="first N examples of each task scored by "
                                                                      "generation (0: none)")
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--nsamples", type=int, default=32, help="calibration samples of 512 tokens")
    parser.add_argument("--search-budget", type=int, default=10)
    parser.add_argument("--search-limit", type=int, default=10, help="validation documents per task for the search")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", type=int, default=1, help="run the rows in this many worker processes")
    args = parser.parse_args(argv)
    wanted = args.rows.split(",") if args.rows else [r.slug for r in ROWS]
    unknown = set(wanted) - {r.slug for r in ROWS}
    if unknown:
        parser.error(f"unknown row(s) {sorted(unknown)}; rows are {', '.join(r.slug for r in ROWS)}")
    args.selected = [row for row in ROWS if row.slug in wanted]
    return args


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    rows = args.selected
    study = Study(args)
    start = time.perf_counter()
    study.training_data()
    pilot = study.pilot() if args.pilot_limit else []
    if args.jobs > 1:
        run_workers(args, rows, study.out)
    results = [study.evaluate(row) for row in rows]  # with --jobs: every step is done, this only reads
    if not os.environ.get(WORKER):  # a worker's time is inside its parent's
        study.log_invocation(time.perf_counter() - start)
    if args.results:
        folder = Path(args.results).parent
        folder.mkdir(parents=True, exist_ok=True)
        images = plot(results, study, folder)
        markdown = report(args, results, study, images, pilot)
        write_text(args.results, markdown)
    else:
        markdown = report(args, results, study, [], pilot)
    print(markdown)


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
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), WORKER: "1"}
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
