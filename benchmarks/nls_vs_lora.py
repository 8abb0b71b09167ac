"""Does NLS beat LoRA on the sparse model? The paper's central ablation (Tables 4-6), decided at small scale on
the embedded SmolLM2-135M with several training seeds.

Three questions, each a difference of averages over the eight commonsense tasks, scored by log-likelihood
(lm-evaluation-harness, acc_norm where it defines one, else acc) on the same first --eval-limit validation
documents of every task:
1. Shears (NLS, heuristic sub-adapter) minus LoRA on the Wanda-50% model;
2. the same pair on the dense model (the paper: about equal);
3. the heuristic minus the maximal and minus the minimal sub-adapter of the same super-adapters.
Both methods train the same config (`nncf_configs/studies/smollm2_commonsense.json`: its targets, ranks, batch),
on the same records, for the same steps; each method at its own learning rate, the one of --lrs with the lower
held-out loss in a pilot on the Wanda-50% model with the first seed (the 120 records set aside from the
training data, `shears.training.val_set_size`, never trained on nor tested; NLS scored at its heuristic
sub-adapter), chosen before any test document is scored. The held-out loss is logged every --eval-steps
(`shears.training.eval_steps`) and drawn as the learning curves.

The interval of every difference holds both sources of noise: `evaluation.compare.seeded_difference`, a
two-level bootstrap that draws the documents (within each task, the same draw for every row) and the training
seeds (independently per method; the two sub-adapters of one super-adapter as a pair). The verdict rule is
fixed here, before the numbers: "A beats B" holds when the whole 95% interval is above zero, is refuted when it
is all below zero, and is otherwise inconclusive, with the difference the study detects at 80% power (2.8
standard errors); "about equal" (question 2) holds when the interval lies inside +-EQUAL points.

Every job (a training, or a row's extract and evaluation) is one worker process of this script, running its
`shears` steps through `shears run`'s step machinery (`shears_nncf.steps`). The step records and the small
results (every evaluation, every training log) are written under --results, which is committed; the models
and adapters under --output, which is not. A step is skipped when its record says it completed under the same
key and its product exists, and a step nothing pending needs is not run at all: a study whose results are
committed continues on another machine, row by row, without retraining what it already scored. It works from the
repository root (it changes there first), so the keys hold the same relative paths on every machine.

    python benchmarks/nls_vs_lora.py --jobs 2
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reproduce_small import CONFIG, SHORT, _without, worker_threads
from shears_nncf.artifacts import read_json, write_json, write_text
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.evaluation import compare
from shears_nncf.models import EMBEDDED_MODEL
from shears_nncf.nls.folder import SuperAdapter
from shears_nncf.steps import DIGESTS, RECORDS, Step, StepRunner, step_from_argv
from shears_nncf.tables import markdown_table

ROOT = Path(__file__).resolve().parent.parent
BASES = ("wanda-50", "dense")  # in the order they are studied
METHODS = ("nls", "lora")
SUBNETS = ("heuristic", "maximal", "minimal")
EQUAL = 1.0  # points: "about equal" holds when the whole interval lies inside +-EQUAL
BUDGET_HOURS = 6.0  # of the 2 cores, for the whole study: what it reaches within them is reported against the design
WORKER = "SHEARS_NLS_VS_LORA_JOB"


@dataclass(frozen=True)
class Training:
    base: str  # a key of BASES
    method: str  # "nls" or "lora"
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.base}-{self.method}-lr{self.lr:g}-s{self.seed}"


@dataclass(frozen=True)
class Row:
    """One scored model: a base, and a training with the sub-adapter it deploys (None: zero-shot)."""

    base: str
    training: Training | None = None
    subnet: str | None = None  # NLS rows: heuristic, maximal or minimal

    @property
    def name(self) -> str:
        if self.training is None:
            return f"zero-{self.base}"
        return self.training.name + (f"-{self.subnet}" if self.subnet else "")

    @property
    def kind(self) -> str:
        """What rows of different seeds share: e.g. "wanda-50 nls heuristic"."""
        if self.training is None:
            return f"{self.base} zero-shot"
        return " ".join(filter(None, (self.base, self.training.method, self.subnet)))


class Study:
    def __init__(self, args):
        self.args = args
        self.out, self.results = Path(args.output), Path(args.results)
        # Each job is its own worker process already (`schedule`): its steps run in it, not in one more.
        self.runner = StepRunner(self.results, label="nls-vs-lora")
        self.config = self.out / "config.json"
        self.data = self.out / "data" / "lm_eval_train.jsonl"

    # ---- inputs, written once before any step is keyed (their content is part of the keys)

    def prepare(self) -> None:
        from shears_nncf.data.lm_eval_documents import write_training_records

        raw = read_json(CONFIG, what="config")
        # Neither `shears run`'s part nor the demo's comment is read by training: no key should hash them.
        raw["shears"].pop("pipeline", None)
        raw["comment"] = "benchmarks/nls_vs_lora.py: the demo config with a held-out set and its loss every eval_steps"
        raw["shears"].setdefault("training", {}).update(val_set_size=self.args.val_set_size,
                                                        eval_steps=self.args.eval_steps)
        if not self.config.exists() or read_json(self.config, what="config") != raw:
            write_json(self.config, raw)
        write_training_records(self.data, list(COMMONSENSE), self.args.train_per_task)

    # ---- the steps of the plan

    def sparsify(self) -> Step:
        folder = self.out / "sparse" / "wanda-50"
        return step_from_argv(["sparsify", "--model", self.args.model, "--method", "wanda", "--ratio", "0.5",
                               "--nsamples", str(self.args.nsamples), "--output", str(folder)], folder,
                              name="sparsify wanda-50")

    def base_model(self, base: str) -> str:
        return str(self.sparsify().product) if base == "wanda-50" else self.args.model

    def train(self, t: Training) -> Step:
        folder = self.out / "train" / t.name
        argv = ["train", "--config", str(self.config), "--model", self.base_model(t.base), "--data", str(self.data),
                "--tasks", "commonsense", "--limit", str(self.args.train_limit), "--lr", str(t.lr),
                "--max-steps", str(self.args.steps), "--seed", str(t.seed), "--output", str(folder)]
        return step_from_argv(argv + (["--lora-only"] if t.method == "lora" else []), folder, name=f"train {t.name}")

    def extract(self, row: Row) -> Step:
        folder = self.out / "adapter" / row.name
        return step_from_argv(["extract", "--super-adapter", str(self.train(row.training).product), "--subnet",
                               row.subnet, "--output", str(folder)], folder, name=f"extract {row.name}")

    def evaluate(self, row: Row) -> Step:
        adapter = None
        if row.training is not None:
            adapter = self.extract(row).product if row.subnet else self.train(row.training).product
        result = self.results / "eval" / f"{row.name}.json"
        return step_from_argv(["evaluate", "--model", self.base_model(row.base),
                               *(["--adapter", str(adapter)] if adapter else []), "--data", "default",
                               "--tasks", ",".join(self.args.tasks), "--batch-size", str(self.args.batch_size),
                               "--scoring", "loglik", "--prompt-style", "lm-eval", "--limit", str(self.args.eval_limit),
                               "--output", str(result)], result, name=f"eval {row.name}")

    def steps_of(self, row: Row) -> list[Step]:
        """A row's steps in order: sparsify, train, extract, evaluate (those it has)."""
        steps = [self.sparsify()] if row.base == "wanda-50" else []
        if row.training is not None:
            steps.append(self.train(row.training))
            if row.subnet:
                steps.append(self.extract(row))
        return [*steps, self.evaluate(row)]

    # ---- the pilot and the plan

    def pilot(self) -> list[Training]:
        return [Training("wanda-50", method, lr, self.args.seeds[0]) for method in METHODS for lr in self.args.lrs]

    def held_out(self, t: Training) -> dict | None:
        """The kept summary of a finished training (its held-out and training losses), or None."""
        path = self.results / "train" / f"{t.name}.json"
        return read_json(path, what="training summary") if path.exists() else None

    def chosen_lr(self, method: str) -> float | None:
        """The pilot's learning rate of `method`: the lower final held-out loss; None until both ran."""
        losses = {t.lr: self.held_out(t) for t in self.pilot() if t.method == method}
        if any(v is None for v in losses.values()):
            return None
        return min(losses, key=lambda lr: losses[lr]["held_out"][-1][1])

    def rows(self) -> list[Row]:
        """Every row of the study in the order it is worth running, seed by seed: every row of a seed's two trainings
        (questions 1 and 3) is scored before the next seed trains, so that a study stopped early answers both; the
        zero-shot rows, which no question needs, come last."""
        lrs = {m: self.chosen_lr(m) for m in METHODS}
        if None in lrs.values():
            return []
        rows = []
        for base in self.args.bases:
            subnets = SUBNETS if base == "wanda-50" else SUBNETS[:1]
            for seed in self.args.seeds:
                nls = Training(base, "nls", lrs["nls"], seed)
                rows += [Row(base, nls, "heuristic"), Row(base, Training(base, "lora", lrs["lora"], seed)),
                         *(Row(base, nls, s) for s in subnets[1:])]
        return rows + [Row(base) for base in self.args.bases]

    def jobs(self) -> list[tuple[str, list[Step], set[str]]]:
        """(job, the steps it runs, the jobs it waits for), pending ones only, in priority order. A job is one
        worker process: a training (its summary kept under --results), or a row's extract and evaluation."""
        jobs, trainings = [], {}
        plan = [self.sparsify()]
        for t in self.pilot():
            plan.append(self.train(t))
            if self.held_out(t) is None:
                trainings[t.name] = t
        rows = self.rows()
        for row in rows:
            plan += [s for s in self.steps_of(row) if s.name not in {p.name for p in plan}]
        pending = self.runner.needed(plan, {self.evaluate(r).name for r in rows} | {self.train(t).name for t in trainings.values()})
        names = {s.name for s in pending}
        sparsify = self.sparsify().name
        if sparsify in names:
            jobs.append((sparsify, [self.sparsify()], set()))

        def add_training(t: Training) -> None:
            step = self.train(t)
            if step.name in names and step.name not in {j[0] for j in jobs}:
                jobs.append((step.name, [step], {sparsify} if t.base == "wanda-50" else set()))

        for t in self.pilot():
            add_training(t)
        for row in rows:  # each row right after its training: a seed's rows are scored before the next seed trains
            if row.training:
                add_training(row.training)
            steps = [s for s in self.steps_of(row) if s.name in names and s.stage in ("extract", "evaluate")]
            if steps:
                waits = {self.train(row.training).name} if row.training else set()
                jobs.append((f"row {row.name}", steps, ({sparsify} if row.base == "wanda-50" else set()) | waits))
        return jobs

    def run_job(self, name: str) -> None:
        """In a worker: the job's steps; a training's summary is kept under --results."""
        job = next((j for j in self.jobs() if j[0] == name), None)
        if job is None:
            return  # done meanwhile
        for step in job[1]:
            self.runner.run(step)
            if step.stage == "train":
                keep_training_summary(step.product, self.results / "train" / f"{step.product.name}.json")

    def log_invocation(self, start: float, new: bool = False) -> None:
        """This run's wall time so far, in invocations.json beside the earlier runs' (a run stopped midway counts up
        to its last finished job)."""
        path = self.results / "invocations.json"
        runs = read_json(path, what="invocation log") if path.exists() else []
        runs = runs if new or not runs else runs[:-1]
        write_json(path, [*runs, {"argv": sys.argv[1:], "seconds": round(time.perf_counter() - start, 1)}])


def keep_training_summary(folder: Path, path: Path) -> None:
    """What the report needs of a training, small enough to commit: its held-out and training losses per step."""
    trained = SuperAdapter.read(folder)
    log = trained.training_log
    write_json(path, {"held_out": [[e["step"], e["eval_loss"]] for e in log if "eval_loss" in e],
                      "train_loss": [[e["step"], e["loss"]] for e in log if "loss" in e],
                      "optimizer_steps": trained.manifest["optimizer_steps"],
                      "train_seconds": trained.summary["train_seconds"], "examples": trained.manifest["examples"]})


def schedule(study: Study, jobs: int, start: float) -> None:
    """Run the pending jobs in `jobs` worker processes of this script (each with its share of the CPU threads),
    the first ready one in priority order whenever a worker is free; the plan is recomputed after each job (the
    pilot's choice adds the seeds' rows)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(worker_threads(jobs))}
    argv = _without(sys.argv[1:], "--jobs", "--job", "--report")
    running: dict[str, subprocess.Popen] = {}
    done: set[str] = set()
    log = Path(study.args.output) / "workers.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    while True:
        pending = [j for j in study.jobs() if j[0] not in running and j[0] not in done]
        ready = [j for j in pending if not (j[2] & ({p[0] for p in pending} | set(running)))]
        while ready and len(running) < jobs:
            name = ready.pop(0)[0]
            print(f"[nls-vs-lora] start {name} (log {log})", flush=True)
            running[name] = subprocess.Popen([sys.executable, __file__, *argv, "--job", name], env={**env, WORKER: name},
                                             stdout=log.open("a"), stderr=subprocess.STDOUT)
        if not running:
            if pending:
                sys.exit(f"[nls-vs-lora] pending jobs wait for nothing that runs: {[j[0] for j in pending]}")
            return
        while not (finished := [n for n, p in running.items() if p.poll() is not None]):
            time.sleep(5)
        for name in finished:
            if running.pop(name).returncode != 0:
                sys.exit(f"[nls-vs-lora] {name} failed; see {log}; rerun the same command to resume")
            done.add(name)
            study.log_invocation(start)
            print(f"[nls-vs-lora] done {name}", flush=True)


# ---- the report


def comparisons(study: Study, results: dict[str, list[dict]]) -> list[dict]:
    """The study's differences, each with the verdict rule applied: (question, first kind, second kind, claim)."""
    wanted = [("1. NLS vs LoRA, Wanda 50%", "wanda-50 nls heuristic", "wanda-50 lora", "beats", 2.0,
               "Table 4 (LLaMA-7B, 50%, math): LoRA 43.3, NLS 45.3 (+2.0); Table 5 (MPT-7B): +2.7 at 40%, +1.6 at 50%"),
              ("2. NLS vs LoRA, dense", "dense nls heuristic", "dense lora", "equals", EQUAL,
               "Table 4, no sparsity: LoRA 46.9, NLS 47.0 (about equal); NNCF's NLS example: +0.1 to +0.8 (3B-8B), "
               "-0.6 on SmolLM-1.7B"),
              ("3a. heuristic vs maximal", "wanda-50 nls heuristic", "wanda-50 nls maximal", "beats", 0.8,
               "Table 6 (7B, 50%, math): heuristic 45.3, maximal 44.5 (+0.8)"),
              ("3b. heuristic vs minimal", "wanda-50 nls heuristic", "wanda-50 nls minimal", "beats", 1.8,
               "Table 6: heuristic 45.3, minimal 43.5 (+1.8)")]
    def difference(firsts: list[dict], seconds: list[dict], tasks: list[str], paired: bool) -> dict:
        return compare.seeded_difference([r["loglik"] for r in firsts], [r["loglik"] for r in seconds], tasks,
                                         paired_seeds=paired)

    out = []
    for question, first, second, claim, effect, paper in wanted:
        if not results.get(first) or not results.get(second):
            continue
        paired = first.split()[:2] == second.split()[:2]  # sub-adapters of the same super-adapters: seeds pair up
        firsts, seconds = _same_seeds(results[first], results[second]) if paired else (results[first], results[second])
        c = difference(firsts, seconds, study.args.tasks, paired)
        others = [t for t in study.args.tasks if t != "boolq"]
        if others and others != study.args.tasks:  # post hoc: BoolQ's yes/no bias moves with the seed (see the rows)
            c["without_boolq"] = difference(firsts, seconds, others, paired)
        if not paired:  # post hoc, not the rule: a seed draws the same training records for both methods
            firsts, seconds = _same_seeds(firsts, seconds)
            c["by_seed"] = difference(firsts, seconds, study.args.tasks, True) if firsts else None
        out.append({"question": question, "first": first, "second": second, "paper": paper, "claim": claim,
                    "effect": effect, **c, "verdict": judge(c, claim)})
    return out


def seeds_to_decide(c: dict, claim: str, effect: float) -> str:
    """The seeds per method at which this design would decide the paper's difference by the rule, projected from the
    seeds run (`compare.seeds_to_detect`); for "about equal", those that narrow the interval to +-EQUAL."""
    if min(c["seeds"]) < 2:
        return "- (one seed: no spread to project)"
    n = compare.seeds_to_detect(c, effect) if claim == "beats" else compare.seeds_to_detect(c, EQUAL, 1.96)
    target = f"+{effect:.1f}" if claim == "beats" else f"+-{EQUAL:g}"
    return f"{n} ({target})" if n else f"none: more documents ({target} is inside the documents' noise)"


def against_paper(c: dict, claim: str, effect: float) -> str:
    """Where the paper's difference (for "about equal": its +-EQUAL band) falls against this interval: a sign-rule
    verdict of inconclusive can still exclude the paper's size."""
    if claim != "beats":
        band = f"+-{EQUAL:g}"
        return f"the interval is inside {band}" if -EQUAL < c["low"] and c["high"] < EQUAL else f"wider than {band}"
    if effect > c["high"]:
        return f"+{effect:.1f} is above the interval"
    return f"+{effect:.1f} is inside the interval" if effect >= c["low"] else f"+{effect:.1f} is below the interval"


def _same_seeds(firsts: list[dict], seconds: list[dict]) -> tuple[list[dict], list[dict]]:
    """The rows of the seeds both sides have, in seed order, so that they pair up by position."""
    seeds = set(r["seed"] for r in firsts) & set(r["seed"] for r in seconds)
    return tuple(sorted((r for r in rows if r["seed"] in seeds), key=lambda r: r["seed"]) for rows in (firsts, seconds))


def judge(c: dict, claim: str) -> str:
    """The rule stated in the module docstring, applied."""
    if claim == "beats":
        return compare.verdict(c)
    if -EQUAL < c["low"] and c["high"] < EQUAL:
        return f"holds (inside +-{EQUAL:g})"
    if c["low"] > 0 or c["high"] < 0:
        return "refuted (the interval excludes zero)"
    return f"inconclusive (the interval is wider than +-{EQUAL:g}; detects ~{2.8 * c['se']:.1f} points)"


def scored(study: Study) -> dict[str, list[dict]]:
    """Every finished row's results, by kind, one entry per seed."""
    by_kind: dict[str, list[dict]] = {}
    for row in study.rows():
        step = study.evaluate(row)
        if study.runner.up_to_date(step):
            by_kind.setdefault(row.kind, []).append({"row": row, "seed": row.training.seed if row.training else None,
                                                     "loglik": read_json(step.product, what="evaluation results")})
    return by_kind


def curves(study: Study, folder: Path) -> list[str]:
    """learning_curves.png: held-out loss against optimizer step of every kept training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = sorted((study.results / "train").glob("*.json"))
    if not summaries:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"nls": "tab:blue", "lora": "tab:orange"}
    for path in summaries:
        s = read_json(path, what="training summary")
        method = "nls" if "-nls-" in path.stem else "lora"
        steps, losses = zip(*s["held_out"]) if s["held_out"] else ((), ())
        lr = next((i for i, lr in enumerate(study.args.lrs) if f"-lr{lr:g}-" in path.stem), 0)
        ax.plot(steps, losses, marker="os^v"[lr % 4], ms=4, color=colors[method], alpha=0.9 - 0.3 * (lr % 2),
                linestyle="-" if path.stem.startswith("wanda") else "--", label=path.stem)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"held-out loss ({study.args.val_set_size} records set aside)")
    ax.set_title(f"{Path(study.args.model).name}: NLS (heuristic sub-adapter) and LoRA")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / "nls_vs_lora_curves.png", dpi=120)
    plt.close(fig)
    return ["![held-out loss against optimizer step](nls_vs_lora_curves.png)"]


def flattening(s: dict) -> str:
    """The held-out loss's fall over the last quarter of the training, against its fall over the whole."""
    points = s["held_out"]
    if len(points) < 2:
        return "-"
    first, last = points[0][1], points[-1][1]
    quarter = next(loss for step, loss in points if step >= 0.75 * points[-1][0])
    share = f", {(quarter - last) / (first - last):.0%} of the fall" if first > last else ""
    return f"{first:.3f} -> {last:.3f} (last quarter {last - quarter:+.3f}{share})"


def report(study: Study, results: dict[str, list[dict]], images: list[str]) -> str:
    args = study.args
    pilot = [(t, study.held_out(t)) for t in study.pilot()]
    lines = [f"# NLS against LoRA at small scale ({Path(args.model).name}, commonsense)", "",
             "Written by `python benchmarks/nls_vs_lora.py " + " ".join(_without(sys.argv[1:], "--job")) + "`; "
             "rerun it to continue (the results and step records are kept under "
             f"`{study.results.as_posix()}`).", "",
             "## Settings and the rule, fixed before the numbers", "",
             f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             + ", then ".join(f"{jobs} worker(s) of {worker_threads(jobs)} thread(s)" for jobs in worker_counts(study))
             + f". Wall time so far: {wall_minutes(study):.0f} min over every run of this script; the steps add up to "
             f"{worker_minutes(study):.0f} min of worker time.",
             f"- Training: `{CONFIG.relative_to(ROOT)}` for both methods (LoRA only: `--lora-only`), {args.steps} optimizer "
             f"steps, {args.train_limit} records drawn from the eight embedded train splits as lm-eval poses them "
             f"(first {args.train_per_task} documents of each), {args.val_set_size} records set aside as the held-out set, "
             f"its loss every {args.eval_steps} steps. Seeds {', '.join(map(str, args.seeds))} (the seed draws the "
             "records, the adapter's initialisation and NLS's sub-adapters).",
             f"- Learning rate: per method, the one of {', '.join(f'{lr:g}' for lr in args.lrs)} with the lower final "
             f"held-out loss on Wanda 50% with seed {args.seeds[0]}; the dense rows use the same choice (a pilot of "
             "their own would double its cost).",
             f"- Scoring: log-likelihood (lm-eval wording) on the first {args.eval_limit} validation documents of each "
             f"of {', '.join(SHORT[t] for t in args.tasks)}"
             f"{' (ARC-c has 299: all of them)' if args.eval_limit > 299 and 'arc_challenge' in args.tasks else ''}; "
             "acc_norm where lm-eval defines one, else acc.",
             "- Interval: `seeded_difference`, a two-level bootstrap (documents within each task, the same draw for "
             f"every row; seeds with replacement, paired for two sub-adapters of one super-adapter), "
             f"{compare.BOOTSTRAP_SAMPLES} resamples, 95% percentile interval. With 3 seeds the resampled seed spread is "
             "narrower than the true one (by sqrt(2/3) in variance): read the per-seed figures beside it.",
             "- Verdicts: **holds** when the whole interval is above zero, **refuted** when it is all below, else "
             f"**inconclusive** with the difference detected at 80% power (2.8 standard errors); for \"about equal\": "
             f"holds when the interval lies inside +-{EQUAL:g} points.", "",
             "## Pilot: the learning rate of each method", "",
             *markdown_table(["method", "lr", "held-out loss (first -> last eval)", "train minutes"],
                             [[t.method, f"{t.lr:g}", flattening(s) if s else "pending",
                               f"{s['train_seconds'] / 60:.1f}" if s else "-"] for t, s in pilot])]
    lines += ["", "Chosen: " + ", ".join(f"{m} {study.chosen_lr(m):g}" if study.chosen_lr(m) else f"{m} pending"
                                         for m in METHODS) + ".", ""]
    rows = [[kind, r["seed"] if r["seed"] is not None else "-",
             *(f"{100 * compare.document_scores(r['loglik'], t).mean():.1f}" for t in args.tasks),
             f"**{compare.average(r['loglik'], args.tasks):.1f}** ± {compare.standard_error(r['loglik'], args.tasks):.1f}"]
            for kind, runs in results.items() for r in runs]
    lines += ["## Rows", "", *markdown_table(["row", "seed", *(SHORT[t] for t in args.tasks), "avg ± se"], rows)]
    found = comparisons(study, results)
    differences = []
    for c in found:
        spread = c["seed_spread"]
        per_seed = "; ".join(" ".join(f"{v:.1f}" for v in spread[k]) for k in ("first", "second"))
        differences.append([c["question"], f"{c['first']} - {c['second']}", f"{c['seeds'][0]}, {c['seeds'][1]}",
                            f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]", per_seed, f"**{c['verdict']}**",
                            against_paper(c, c["claim"], c["effect"]), seeds_to_decide(c, c["claim"], c["effect"]),
                            c["paper"]])
    lines += ["", "## The differences", "",
              *markdown_table(["question", "first - second", "seeds", "difference (95% interval)",
                               "per seed (first; second)", "verdict", "the paper's difference",
                               "seeds to decide the paper's difference", "paper"], differences),
              "", "Seeds to decide: the seeds per method at which the rule would detect the paper's difference at 80% "
              f"power (for question 2: narrow the interval to +-{EQUAL:g} if the true difference is 0), projected from the "
              "seeds run, with the documents' part of the variance held (the same documents); an estimate from few seeds. "
              "The paper's differences are of a 7B model on math, these of a 135M model on commonsense: a size to look "
              "for, not a figure to reproduce."]
    by_seed = [c for c in found if c.get("by_seed")]
    if by_seed:
        lines += ["", "Post hoc, not the verdict rule (chosen after seeds 1-2 were scored): a training seed draws the "
                  "same records in the same order for both methods, and much of the seed-to-seed spread is shared by the "
                  "two (see the rows), so the methods can also be compared paired by seed:", "",
                  *markdown_table(["question", "seeds", "paired by seed (95% interval)", "per-seed differences",
                                   "the paper's difference", "seeds to decide the paper's difference"],
                                  [[c["question"], str(c["by_seed"]["seeds"][0]),
                                    f"{c['by_seed']['diff']:+.2f} [{c['by_seed']['low']:+.2f}, "
                                    f"{c['by_seed']['high']:+.2f}]",
                                    " ".join(f"{d:+.2f}" for d in c["by_seed"]["seed_spread"]["differences"]),
                                    against_paper(c["by_seed"], c["claim"], c["effect"]),
                                    seeds_to_decide(c["by_seed"], c["claim"], c["effect"])]
                                   for c in by_seed])]
    without = [c for c in found if c.get("without_boolq")]
    if without:
        lines += ["", "Post hoc, not the verdict rule (chosen after the Wanda-50% rows were scored): most of the "
                  "seed-to-seed spread is BoolQ's, whose yes/no bias flips with the seed for every row of that seed "
                  f"alike (see the rows); each difference over the other {len(args.tasks) - 1} task(s), by the rule's "
                  "interval:", "",
                  *markdown_table(["question", "without BoolQ (95% interval)", "per seed (first; second)"],
                                  [[c["question"], f"{w['diff']:+.2f} [{w['low']:+.2f}, {w['high']:+.2f}]",
                                    "; ".join(" ".join(f"{v:.1f}" for v in w["seed_spread"][k])
                                              for k in ("first", "second"))]
                                   for c in without for w in [c["without_boolq"]]])]
    missing = {"1", "2", "3a", "3b"} - {c["question"].split(".")[0] for c in found}
    if missing:
        lines += ["", f"Not yet scored: question(s) {', '.join(sorted(missing))}; rerun the command to continue."]
    lines += ["", "Reached: " + "".join(f"question {c['question'].split('.')[0]} at {min(c['seeds'])} of "
                                        f"{len(args.seeds)} seeds; " for c in found)
              + f"{wall_minutes(study) / 60:.1f} hours of the {BUDGET_HOURS:g}-hour budget."]
    lines += ["", "## Learning curves", "", *images, "",
              *markdown_table(["training", "held-out loss (first -> last eval)"],
                              [[p.stem, flattening(read_json(p, what="training summary"))]
                               for p in sorted((study.results / "train").glob("*.json"))]), ""]
    return "\n".join(lines)


def wall_minutes(study: Study) -> float:
    path = study.results / "invocations.json"
    return sum(r["seconds"] for r in read_json(path, what="invocation log")) / 60 if path.exists() else 0.0


def worker_counts(study: Study) -> list[int]:
    """The --jobs of the runs that did the work, in the order they ran (not this run's, which may only report)."""
    path = study.results / "invocations.json"
    counts = [parse_args(r["argv"]).jobs for r in read_json(path, what="invocation log")] if path.exists() else []
    return list(dict.fromkeys(counts)) or [study.args.jobs]


def worker_minutes(study: Study) -> float:
    return sum(read_json(p, what="step record").get("seconds", 0.0) for p in (study.results / RECORDS).glob("*.json")
               if p.name != DIGESTS) / 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/nls_vs_lora", help="models and adapters (not committed)")
    parser.add_argument("--results", default="benchmarks/results/nls_vs_lora",
                        help="step records, evaluations and training logs (committed: the study continues from them)")
    parser.add_argument("--report", default="benchmarks/NLS_VS_LORA.md", help="the markdown report (its picture beside it)")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="the dense base model")
    parser.add_argument("--bases", default=",".join(BASES), help=f"comma-separated subset of {', '.join(BASES)}")
    parser.add_argument("--seeds", default="1,2,3", help="training seeds (the first one is the pilot's)")
    parser.add_argument("--lrs", default="1e-3,3e-3", help="the pilot's learning rates")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of every training")
    parser.add_argument("--eval-steps", type=int, default=20, help="held-out loss every this many steps")
    parser.add_argument("--val-set-size", type=int, default=120, help="training records set aside as the held-out set")
    parser.add_argument("--train-limit", type=int, default=2000, help="training records drawn from the data")
    parser.add_argument("--train-per-task", type=int, default=500, help="documents of each train split")
    parser.add_argument("--eval-limit", type=int, default=500, help="first N validation documents of each task")
    parser.add_argument("--tasks", default=",".join(COMMONSENSE), help="comma-separated commonsense tasks scored "
                        "(default: all eight; training always draws from all eight)")
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--nsamples", type=int, default=32, help="Wanda's calibration samples of 512 tokens")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes side by side")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the rows scored so far and run nothing")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # a worker's one job
    args = parser.parse_args(argv)
    args.bases = [b for b in BASES if b in args.bases.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.lrs = [float(lr) for lr in args.lrs.split(",")]
    args.tasks = args.tasks.split(",")
    if unknown := [t for t in args.tasks if t not in COMMONSENSE]:
        parser.error(f"--tasks: unknown task(s) {', '.join(unknown)}; expected some of {', '.join(COMMONSENSE)}")
    return args


def main(argv: list[str] | None = None) -> None:
    os.chdir(ROOT)  # the step keys hold the relative paths: the same on every machine
    args = parse_args(argv)
    study = Study(args)
    if args.job:
        return study.run_job(args.job)
    start = time.perf_counter()
    study.prepare()
    if not args.report_only:
        study.log_invocation(start, new=True)
        schedule(study, args.jobs, start)
        study.log_invocation(start)
    else:
        study.jobs()  # nothing runs: this keys the plan's steps, so that the report can tell which rows are up to date
    folder = Path(args.report).parent
    folder.mkdir(parents=True, exist_ok=True)
    markdown = report(study, scored(study), curves(study, folder))
    write_text(args.report, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
