"""Pruning past Wanda, measured side by side: magnitude, Wanda, SparseGPT, OWL + Wanda and OWL + SparseGPT.

For each model (default: the embedded SmolLM2-135M, and Gemma-3-270M where its wheels are installed) at 50/60/70%:
perplexity on held-out text the calibration never saw (BoolQ *validation* passages; the calibration samples are
BoolQ *train* passages), and each method's time relative to one plain forward pass of the same calibration tokens.
On the first model, log-likelihood on the 8 commonsense tasks for Wanda, SparseGPT and OWL + Wanda at 50% and 70%, with
paired bootstrap intervals against Wanda (`evaluation/compare.py`). And the recovery: on the first model at 50%, a
Shears super-adapter trained on each of those three sparse models with the NLS-vs-LoRA study's settings
(`nncf_configs/studies/smollm2_commonsense.json`, lm-eval-worded commonsense train records, --recovery-steps steps at
lr 0.003, seed 1), its heuristic sub-adapter scored the same way, to say whether a better pruner still matters once an
adapter is trained on top. Every cell is a `shears` command run through the step machinery (`steps.py`): rerun the
script and it continues where it stopped, each cell once. The order is what answers most first: the first model's
perplexity, its log-likelihood, the other models' perplexity, then the recovery.

    python benchmarks/pruners.py [--output /work/runs/pruners] [--models smollm2-135m,gemma3-270m] [--report-only] [--timing-only]

The report is written to benchmarks/PRUNERS.md with a plot of perplexity against sparsity, one line per method.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

from shears_nncf.artifacts import read_json, write_json, write_text
from shears_nncf.data.calibration import heldout_text
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.evaluation import compare
from shears_nncf.models import EMBEDDED, EMBEDDED_MODEL
from shears_nncf.nls.folder import SuperAdapter
from shears_nncf.steps import StepRunner, step_from_argv
from shears_nncf.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
# (label, --method, --allocation)
METHODS = [("magnitude", "magnitude", "uniform"), ("Wanda", "wanda", "uniform"), ("SparseGPT", "sparsegpt", "uniform"),
           ("OWL + Wanda", "wanda", "owl"), ("OWL + SparseGPT", "sparsegpt", "owl")]
LOGLIK_METHODS, LOGLIK_RATIOS = ("Wanda", "OWL + Wanda", "SparseGPT"), (0.5, 0.7)
RECOVERY_RATIO, RECOVERY_SEED, RECOVERY_LR = 0.5, 1, 0.003  # the NLS-vs-LoRA study's chosen NLS rate, its first seed
CONFIG = ROOT / "nncf_configs" / "studies" / "smollm2_commonsense.json"


def slug(label: str) -> str:
    return label.lower().replace(" + ", "-")


class Study:
    def __init__(self, args):
        self.args, self.out = args, Path(args.output)
        self.runner = StepRunner(self.out, label="pruners")
        self.heldout = self.out / "heldout.txt"
        self.timings = self.out / "timing.json"
        self.config, self.records = self.out / "config.json", self.out / "data" / "lm_eval_train.jsonl"

    def prepare_recovery(self) -> None:
        """The NLS-vs-LoRA study's inputs, written once before any step is keyed: its config without `shears run`'s
        part and the lm-eval-worded train records (500 documents of each commonsense task)."""
        from shears_nncf.data.lm_eval_documents import write_training_records

        raw = read_json(CONFIG, what="config")
        raw["shears"].pop("pipeline", None)
        raw["shears"].setdefault("training", {})["val_set_size"] = 120  # the study's held-out records, not trained on
        if not self.config.exists():
            write_json(self.config, raw)
        if not self.records.exists():
            write_training_records(self.records, list(COMMONSENSE), 500)

    def sparsify(self, model: str, label: str, ratio: float):
        _, method, allocation = next(m for m in METHODS if m[0] == label)
        folder = self.out / "sparse" / Path(model).name / f"{slug(label)}-{ratio:.2f}"
        return step_from_argv(["sparsify", "--model", model, "--method", method, "--allocation", allocation,
                               "--ratio", str(ratio), "--calibration", "default", "--nsamples", str(self.args.nsamples),
                               "--seqlen", str(self.args.seqlen), "--output", str(folder)], folder, name=f"sparsify {model} {slug(label)} {ratio}")

    def perplexity(self, model: str, label: str | None, ratio: float | None):
        base = str(self.sparsify(model, label, ratio).product) if label else model
        result = self.out / "ppl" / Path(model).name / (f"{slug(label)}-{ratio:.2f}.json" if label else "dense.json")
        return step_from_argv(["evaluate", "--model", base, "--perplexity", str(self.heldout), "--seqlen", str(self.args.seqlen),
                               "--nsamples", str(self.args.ppl_windows), "--device", "cpu", "--output", str(result)],
                              result, name=f"ppl {model} {slug(label) if label else 'dense'} {ratio or ''}".strip())

    def loglik(self, model: str, label: str | None, ratio: float | None, recovered: bool = False):
        base = str(self.sparsify(model, label, ratio).product) if label else model
        cell = f"{slug(label)}-{ratio:.2f}" if label else "dense"
        adapter = ["--adapter", str(self.extract(model, label, ratio).product)] if recovered else []
        result = self.out / ("recovered" if recovered else "loglik") / Path(model).name / f"{cell}.json"
        return step_from_argv(["evaluate", "--model", base, *adapter, "--data", "default", "--tasks", ",".join(self.args.tasks),
                               "--scoring", "loglik", "--prompt-style", "lm-eval", "--limit", str(self.args.eval_limit),
                               "--batch-size", "16", "--device", "cpu", "--output", str(result)],
                              result, name=f"{'recovered' if recovered else 'loglik'} {model} {cell}")

    def train(self, model: str, label: str, ratio: float):
        """The Shears recovery of one sparse model: NLS with the NLS-vs-LoRA study's config, records, steps and rate."""
        folder = self.out / "train" / Path(model).name / f"{slug(label)}-{ratio:.2f}"  # saved every 25 steps, to resume
        return step_from_argv(["train", "--config", str(self.config), "--model", str(self.sparsify(model, label, ratio).product),
                               "--data", str(self.records), "--tasks", "commonsense", "--limit", "2000",
                               "--lr", str(RECOVERY_LR), "--max-steps", str(self.args.recovery_steps),
                               "--seed", str(RECOVERY_SEED), "--save-steps", "25", "--output", str(folder)],
                              folder, name=f"train {model} {slug(label)} {ratio}")

    def extract(self, model: str, label: str, ratio: float):
        folder = self.out / "adapter" / Path(model).name / f"{slug(label)}-{ratio:.2f}"
        return step_from_argv(["extract", "--super-adapter", str(self.train(model, label, ratio).product),
                               "--subnet", "heuristic", "--output", str(folder)],
                              folder, name=f"extract {model} {slug(label)} {ratio}")

    def plan(self) -> list:
        """The first model's perplexity and log-likelihood, the other models' perplexity, then the recovery."""
        steps, first = [], self.args.models[0]
        for model in self.args.models:
            steps.append(self.perplexity(model, None, None))
            for ratio in self.args.ratios:
                for label, *_ in METHODS:
                    steps += [self.sparsify(model, label, ratio), self.perplexity(model, label, ratio)]
            if model == first:
                steps.append(self.loglik(first, None, None))
                steps += [self.loglik(first, label, ratio) for ratio in self.loglik_ratios() for label in LOGLIK_METHODS]
        for label in self.recovered():
            steps += [self.train(first, label, RECOVERY_RATIO), self.extract(first, label, RECOVERY_RATIO),
                      self.loglik(first, label, RECOVERY_RATIO, recovered=True)]
        return steps

    def recovered(self) -> tuple[str, ...]:
        return LOGLIK_METHODS if RECOVERY_RATIO in self.args.ratios and self.args.recovery_steps else ()

    def loglik_ratios(self) -> list[float]:
        return [r for r in LOGLIK_RATIOS if r in self.args.ratios]

    def run(self) -> None:
        if not self.heldout.exists():
            write_text(self.heldout, heldout_text())
        if self.recovered():
            self.prepare_recovery()
        for step in self.plan():
            self.runner.run(step)

    def timing(self, model: str) -> None:
        """Each method's seconds and one plain forward pass over the same calibration tokens, measured side by side in
        one process, in --timing-rounds interleaved rounds (a fresh copy of the dense model for each pruning, loaded
        outside the clock), at the first ratio; kept in timing.json, measured once per model. The cells' own
        `pruning_seconds` are not used: they ran as the machine was shared with whatever else ran."""
        timings = read_json(self.timings, what="timings") if self.timings.exists() else {}
        if model in timings:
            return
        import statistics

        import torch

        from shears_nncf.data.calibration import calibration_samples
        from shears_nncf.models import load_model, load_tokenizer
        from shears_nncf.sparsity.api import sparsify

        samples = calibration_samples("default", load_tokenizer(model), self.args.nsamples, self.args.seqlen, 0)
        ratio, seconds = self.args.ratios[0], {"plain forward": []} | {label: [] for label, *_ in METHODS}
        for _ in range(self.args.timing_rounds):
            for label in seconds:
                net = load_model(model)
                start = time.perf_counter()
                if label == "plain forward":
                    with torch.no_grad():
                        for ids in samples:  # the head on the last token only: the pruners never run it
                            net(input_ids=ids, use_cache=False, logits_to_keep=1)
                else:
                    _, method, allocation = next(m for m in METHODS if m[0] == label)
                    sparsify(net, samples, ratio, method, allocation=allocation)
                seconds[label].append(time.perf_counter() - start)
        timings[model] = {"ratio": ratio, "rounds": self.args.timing_rounds,
                          "median_seconds": {label: round(statistics.median(s), 3) for label, s in seconds.items()}}
        write_json(self.timings, timings)


def report(study: Study) -> str:
    args, out = study.args, study.out
    timings = read_json(study.timings, what="timings") if study.timings.exists() else {}
    lines = ["# Pruners side by side (magnitude, Wanda, SparseGPT, OWL)", "",
             f"Written by `python benchmarks/pruners.py`; results and step records under `{args.output}`.", "",
             f"- Calibration: {args.nsamples} x {args.seqlen} tokens of BoolQ train passages (`--calibration default`), "
             "seed 0.",
             f"- Perplexity: {args.ppl_windows} windows of {args.seqlen} tokens of BoolQ validation passages (never "
             "calibrated on).",
             f"- Time: each method's seconds over one plain forward pass of the same calibration tokens (head on the last "
             f"token only), measured side by side in one process at the first ratio, the median of "
             f"{args.timing_rounds} interleaved rounds (`timing.json`); a fresh dense model for each, loaded outside "
             "the clock.", ""]
    for model in args.models:
        dense = finished(study.runner, study.perplexity(model, None, None), "perplexity")
        timing = timings.get(model)
        header = ["method"] + [f"{r:.0%}" for r in args.ratios] + [
            f"time / forward ({timing['ratio']:.0%})" if timing else "time / forward"]
        rows = []
        for label, *_ in METHODS:
            ppl = [finished(study.runner, study.perplexity(model, label, r), "perplexity") for r in args.ratios]
            cost = (f"{timing['median_seconds'][label] / timing['median_seconds']['plain forward']:.1f}x" if timing
                    else "-")
            rows.append([label] + [f"{p:.1f}" if p is not None else "-" for p in ppl] + [cost])
        lines += [f"## {model}: held-out perplexity (dense {dense:.1f})" if dense else f"## {model}", "",
                  *markdown_table(header, rows), ""]
    lines += loglik_section(study) + recovery_section(study)
    return "\n".join(lines) + "\n"


def loglik_section(study: Study) -> list[str]:
    model = study.args.models[0]
    results = {(label, r): finished(study.runner, study.loglik(model, label, r))
               for r in study.loglik_ratios() for label in LOGLIK_METHODS}
    dense = finished(study.runner, study.loglik(model, None, None))
    if not dense and not any(results.values()):
        return ["## Log-likelihood on the commonsense tasks: not scored yet", ""]
    rows = [["dense", "0%", _mean(dense, study.args.tasks), "-", "-"]] if dense else []
    for (label, ratio), result in results.items():
        wanda = results[("Wanda", ratio)]
        if result is None:
            rows.append([label, f"{ratio:.0%}", "-", "-", "-"])
            continue
        avg = _mean(result, study.args.tasks)
        if label == "Wanda" or wanda is None:
            rows.append([label, f"{ratio:.0%}", avg, "-", "-"])
            continue
        c = compare.paired_difference(result, wanda, study.args.tasks)
        rows.append([label, f"{ratio:.0%}", avg, _interval(c), compare.verdict(c)])
    return [f"## {model}: log-likelihood on {', '.join(study.args.tasks)} ({study.args.eval_limit} documents each; "
            "acc_norm where lm-eval defines it, else acc)", "",
            *markdown_table(["method", "sparsity", "avg ± se", "minus Wanda (95% interval)", "better than Wanda?"], rows), "",
            *owl_verdict(study, results), ""]


def owl_verdict(study: Study, results: dict) -> list[str]:
    """The published ordering (OWL ahead of uniform Wanda at 70% in the OWL paper), said in plain words either way
    at the highest ratio scored, from the paired interval; every model's perplexity beside it, which has no interval
    here."""
    model, ratio, tasks = study.args.models[0], max(study.loglik_ratios()), study.args.tasks
    owl, wanda = results[("OWL + Wanda", ratio)], results[("Wanda", ratio)]
    if owl is None or wanda is None:
        return [f"OWL + Wanda against Wanda at {ratio:.0%}: not both scored yet."]
    c = compare.paired_difference(owl, wanda, tasks)
    said = {"holds": "is **confirmed** at this size: OWL + Wanda scores above uniform Wanda, the whole interval "
                     "above zero",
            "refuted": "is **refuted** at this size: OWL + Wanda scores below uniform Wanda, the whole interval "
                       "below zero"}.get(compare.verdict(c), "is **neither confirmed nor refuted** at this size: the "
                                                             "interval spans zero")
    moves = []
    for each in study.args.models:  # every model's perplexity, the second model's too
        wanda_ppl, owl_ppl = (finished(study.runner, study.perplexity(each, label, ratio), "perplexity")
                              for label in ("Wanda", "OWL + Wanda"))
        if wanda_ppl is not None and owl_ppl is not None:
            moves.append(f"{wanda_ppl:.1f} -> {owl_ppl:.1f} on {Path(each).name}")
    beside = (f" Held-out perplexity, which carries no interval here, goes from Wanda to OWL + Wanda "
              f"{' and '.join(moves)}." if moves else "")
    return [f"In plain words: the published ordering, OWL ahead of uniform Wanda (OWL paper, 70% on LLaMA-7B), {said} "
            f"({ratio:.0%}: {_interval(c)} points on {len(tasks)} x {study.args.eval_limit} documents).{beside}"]


def _mean(result: dict, tasks: list[str]) -> str:
    return f"{compare.average(result, tasks):.1f} ± {compare.standard_error(result, tasks):.1f}"


def recovery_section(study: Study) -> list[str]:
    model, ratio, tasks = study.args.models[0], RECOVERY_RATIO, study.args.tasks
    recovered = {label: finished(study.runner, study.loglik(model, label, ratio, recovered=True))
                 for label in study.recovered()}
    if not any(recovered.values()):
        return ["## Recovery (a Shears sub-adapter on each 50% model): not scored yet", ""]
    sparse = {label: finished(study.runner, study.loglik(model, label, ratio)) for label in recovered}
    wanda = recovered["Wanda"]
    against_wanda = {label: compare.paired_difference(result, wanda, tasks) for label, result in recovered.items()
                     if label != "Wanda" and result is not None and wanda is not None}
    rows = []
    for label, result in recovered.items():
        if result is None:
            rows.append([label, "-", "-", "-", "-", "-"])
            continue
        trained = SuperAdapter.read(study.train(model, label, ratio).product).summary
        cells = [label, f"{trained['first_loss']:.3f} -> {trained['last_loss']:.3f}", _mean(result, tasks)]
        cells.append(_interval(compare.paired_difference(result, sparse[label], tasks)) if sparse[label] else "-")
        c = against_wanda.get(label)
        rows.append(cells + ([_interval(c), compare.verdict(c)] if c else ["-", "-"]))
    return [f"## {model} at {ratio:.0%}: recovered by a Shears sub-adapter (heuristic; {study.args.recovery_steps} "
            f"steps, lr {RECOVERY_LR}, seed {RECOVERY_SEED}: the NLS-vs-LoRA study's settings; one training seed, so "
            "the intervals hold the documents' noise, not the seeds')", "",
            *markdown_table(["method", "training loss, first -> last step", "avg ± se", "minus the same sparse model",
                             "minus Wanda + sub-adapter", "better than Wanda + sub-adapter?"], rows), "",
            *recovery_verdict(study, sparse, against_wanda), ""]


def recovery_verdict(study: Study, sparse: dict, recovered_against_wanda: dict) -> list[str]:
    """Whether a better pruner still matters once an adapter is trained on top, said in plain words: each pruner's
    paired difference from Wanda before the recovery (on the sparse models' scores) and after it (the recovery
    table's own comparisons), and what the intervals allow one to say."""
    ratio, tasks = RECOVERY_RATIO, study.args.tasks
    pairs = [(label, compare.paired_difference(sparse[label], sparse["Wanda"], tasks), after)
             for label, after in recovered_against_wanda.items() if None not in (sparse[label], sparse["Wanda"])]
    if not pairs:
        return []
    said = "; ".join(f"{label} {_interval(b)} before, {_interval(a)} after" for label, b, a in pairs)
    answer = ("it cannot be told at this size: every interval spans zero, before the recovery and after it"
              if {_verdict_word(c) for _, b, a in pairs for c in (b, a)} == {"inconclusive"} else
              "the intervals tell some pruners apart: " + ", ".join(
                  f"{label} {_verdict_word(b)} before and {_verdict_word(a)} after" for label, b, a in pairs))
    return [f"In plain words: whether a better pruner still matters once a sub-adapter is trained on top, {answer} "
            f"(each minus Wanda at {ratio:.0%}, {len(tasks)} x {study.args.eval_limit} documents: {said})."]


def _verdict_word(c: dict) -> str:
    """holds, refuted or inconclusive: the verdict without the difference the study would detect."""
    return compare.verdict(c).split(" (")[0]


def _interval(c: dict) -> str:
    return f"{c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"


def finished(runner: StepRunner, step, key: str | None = None):
    """A completed step's JSON result (or its `key`), None until the step has completed: an evaluation writes its
    results file task by task as it goes (to resume), so the file alone may be a partial one."""
    if not runner.record(step.name).get("complete") or not step.product.is_file():
        return None
    data = json.loads(step.product.read_text())
    return data.get(key) if key else data


def plot(study: Study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(study.args.models), figsize=(6 * len(study.args.models), 4), squeeze=False)
    for ax, model in zip(axes[0], study.args.models):
        for label, *_ in METHODS:
            points = [(r, finished(study.runner, study.perplexity(model, label, r), "perplexity"))
                      for r in study.args.ratios]
            points = [(r, p) for r, p in points if p is not None]
            if points:
                ax.plot([100 * r for r, _ in points], [p for _, p in points], marker="o", label=label)
        ax.set(title=model, xlabel="sparsity (%)", ylabel="held-out perplexity", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/work/runs/pruners")
    parser.add_argument("--models", default=",".join(EMBEDDED), help="comma-separated model names or folders "
                        f"(default: the embedded {', '.join(EMBEDDED)}, those whose wheels are installed)")
    parser.add_argument("--nsamples", type=int, default=32, help="calibration samples of --seqlen tokens")
    parser.add_argument("--ratios", default="0.5,0.6,0.7", help="sparsity ratios (log-likelihood at 0.5 and 0.7)")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration sample and perplexity window")
    parser.add_argument("--ppl-windows", type=int, default=32, help="held-out windows of --seqlen tokens")
    parser.add_argument("--tasks", default=",".join(COMMONSENSE), help="commonsense tasks of the log-likelihood rows")
    parser.add_argument("--eval-limit", type=int, default=300, help="first N validation documents of each task")
    parser.add_argument("--timing-rounds", type=int, default=3, help="interleaved rounds of the side-by-side timing")
    parser.add_argument("--recovery-steps", type=int, default=100,
                        help="optimizer steps of each recovery training (the NLS-vs-LoRA study's; 0: no recovery)")
    parser.add_argument("--report", default=str(ROOT / "benchmarks" / "PRUNERS.md"))
    parser.add_argument("--report-only", action="store_true", help="write the report from what is done; run nothing")
    parser.add_argument("--timing-only", action="store_true",
                        help="run only the side-by-side timing, which the cells' run leaves out: run it alone on the "
                             "machine, after the cells or while they are paused")
    args = parser.parse_args(argv)
    args.tasks = args.tasks.split(",")
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.models = [m for m in args.models.split(",")
                   if m not in EMBEDDED or m == EMBEDDED_MODEL or importlib.util.find_spec(EMBEDDED[m].package)]
    study = Study(args)
    if args.timing_only:
        for model in args.models:
            study.timing(model)
    elif not args.report_only:
        study.run()
    plot(study, Path(args.report).with_name("pruners_perplexity.png"))
    write_text(args.report, report(study))
    print(Path(args.report).read_text())


if __name__ == "__main__":
    main()
