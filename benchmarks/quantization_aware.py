"""Quantization-aware sparse adapters: does NLS trained through NNCF's INT4 fake quantizers (`shears.quantization`,
FQ_LORA_NLS) beat today's path, a float NLS sub-adapter merged keeping the zeros and then compressed to INT4 after
training (PTQ)?

On the embedded SmolLM2-135M at Wanda 50%, with the NLS-vs-LoRA study's training (its config prepared as the pruners
study prepares it, lm-eval-worded commonsense train records, 100 steps at lr 0.003, seeds 1 and 2), every row scored
by log-likelihood (lm-eval wording) on the eight commonsense tasks:

1. A pilot, PTQ only, on the Wanda-50% model without an adapter (and a Wanda-70% one): INT4 at six settings against
   the same model in PyTorch fp32, on the first --pilot-limit documents of each task. It picks the *harsh* setting by
   a rule fixed here, before any number: among the settings the quantization-aware path can train (int4_asym or
   int4_sym in groups of >= 1 inputs, not per-channel, not all layers), the one with the largest drop from fp32;
   a tie goes to the later of HARSH_CANDIDATES (the one expected harsher).
2. The rows, at the default setting (asym g128) and at the harsh one: dense fp32 and dense INT4 PTQ; the sparse model
   with the float heuristic sub-adapter in PyTorch; that merged keeping zeros, then INT4 PTQ; QA-NLS with the update
   masked by the zeros (`mask_update`), deployed as trained; QA-NLS unmasked (NNCF's own) and NNCF's QAT + NLS on the
   dense model, first seed only unless --all-seeds-rows.
3. Questions, by the NLS-vs-LoRA study's rule (`nls_vs_lora.judge`, `compare.seeded_difference` over the seeds both
   rows have, unpaired: different trainings): Q1 QA (mask) beats merged + PTQ; Q2 QA (mask) equals the float
   sub-adapter in PyTorch within +-1 point (the INT4 model keeps the trained accuracy); Q3 the mask costs nothing
   (mask equals no mask); Q4, for information, dense QAT + NLS minus dense PTQ.
4. Beside accuracy, each IR's size, the zeros counted in it (its export manifest) and how many of the sparse base's
   zeros it no longer holds, and decode tokens/s against the dense INT8 and FP32 IRs, measured in a separate
   --bench-only pass, alone on the machine.

Every cell is a `shears` command run through the step machinery (`steps.py`): rerun the script and it continues where
it stopped. The report is written after every run, from what is done.

    python benchmarks/quantization_aware.py [--output /work/runs/quantization_aware] [--seeds 1,2] [--report-only]
    python benchmarks/quantization_aware.py --bench-only
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nls_vs_lora import EQUAL, _same_seeds, judge
from pruners import CONFIG, _interval, finished
from pruners import Study as PrunersStudy
from reproduce_small import SHORT
from shears_nncf.artifacts import read_json, write_json, write_text
from shears_nncf.data.tasks import COMMONSENSE
from shears_nncf.evaluation import compare
from shears_nncf.export.openvino import IR_XML, OpenVINOModel, ir_zero_masks  # before any training: nncf_torch first
from shears_nncf.models import EMBEDDED_MODEL
from shears_nncf.steps import Step, StepRunner, step_from_argv
from shears_nncf.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
LR = 0.003  # the NLS-vs-LoRA study's chosen NLS rate


@dataclass(frozen=True)
class Setting:
    """An INT4 weight format: NNCF's mode, inputs per scale (-1: one per output row), embeddings and head too."""

    name: str
    mode: str
    group_size: int
    all_layers: bool = False

    @property
    def trainable(self) -> bool:
        """What `shears.quantization` accepts: groups of >= 1 inputs, and only the decoder's linears."""
        return self.group_size >= 1 and not self.all_layers

    @property
    def label(self) -> str:
        groups = "per-channel" if self.group_size == -1 else f"g{self.group_size}"
        return f"{self.mode.removeprefix('int4_')} {groups}" + (" + all layers" if self.all_layers else "")

    @property
    def export_flags(self) -> list[str]:
        return ["--weights", "int4", "--int4-mode", self.mode, f"--group-size={self.group_size}",
                *(["--int4-all-layers"] if self.all_layers else [])]

    def quantization(self, mask: bool) -> dict:
        return {"mode": self.mode, "group_size": self.group_size, "ratio": 1.0, "mask_update": mask}


SETTINGS = {s.name: s for s in (
    Setting("asym-g128", "int4_asym", 128), Setting("asym-g32", "int4_asym", 32),
    Setting("asym-pc", "int4_asym", -1), Setting("sym-g128", "int4_sym", 128),
    Setting("sym-pc", "int4_sym", -1), Setting("sym-pc-all", "int4_sym", -1, all_layers=True))}
DEFAULT = SETTINGS["asym-g128"]  # NNCF's default; a layer whose inputs 128 does not divide gets 64 (SmolLM2's 576)
HARSH_CANDIDATES = ("asym-g32", "asym-g128", "sym-g128")  # the trainable ones; a tied drop goes to the later
PILOT = {0.5: tuple(SETTINGS), 0.7: ("asym-g128", "sym-pc")}  # Wanda ratio: the settings tried on it
# kind: (label, whether it depends on the setting)
KINDS = {"dense": ("dense fp32 (PyTorch)", False),
         "dense-ptq": ("dense, INT4 PTQ", True),
         "float": ("sparse + float NLS sub-adapter (PyTorch fp32)", False),
         "merged-ptq": ("sparse + float NLS merged keeping zeros, INT4 PTQ (today)", True),
         "qa-mask": ("sparse + QA-NLS INT4, update masked (this)", True),
         "qa-nomask": ("sparse + QA-NLS INT4, unmasked (NNCF's)", True),
         "dense-qat": ("dense, INT4 QAT + NLS (NNCF's)", True)}
# (question, first kind, second kind, claim; None: information, no verdict)
QUESTIONS = [("Q1. QA-NLS (mask) beats merged + INT4 PTQ", "qa-mask", "merged-ptq", "beats"),
             ("Q2. QA-NLS (mask) INT4 equals the float sub-adapter in PyTorch", "qa-mask", "float", "equals"),
             ("Q3. the mask costs nothing (mask equals no mask)", "qa-mask", "qa-nomask", "equals"),
             ("Q4. dense: QAT + NLS minus INT4 PTQ (information)", "dense-qat", "dense-ptq", None)]
REFERENCES = {"dense-int8": ["--weights", "int8"], "dense-fp32": ["--weights", "as-is"]}  # the speed references


@dataclass(frozen=True)
class Row:
    kind: str
    setting: Setting | None = None  # None for the kinds no setting changes
    seed: int | None = None  # None for the rows without a training

    @property
    def name(self) -> str:
        return "-".join([self.kind, *([self.setting.name] if self.setting else []),
                         *([f"s{self.seed}"] if self.seed is not None else [])])


class Study:
    def __init__(self, args):
        self.args, self.out = args, Path(args.output)
        self.runner = StepRunner(self.out, label="quantization-aware")
        self.config, self.records = self.out / "config.json", self.out / "data" / "lm_eval_train.jsonl"
        self.bench_json = self.out / "bench.json"
        self._harsh: Setting | None = None

    def prepare(self) -> None:
        """The NLS-vs-LoRA study's config and records, written as the pruners study writes them, and beside the
        config one copy per trainable setting and mask variant with its `shears.quantization`: all written before
        any step is keyed (their content is part of the keys)."""
        PrunersStudy.prepare_recovery(self)  # writes self.config and self.records
        raw = read_json(self.config, what="config")
        for setting in (s for s in SETTINGS.values() if s.trainable):
            for mask in (True, False):
                qa = {**raw, "shears": {**raw["shears"], "quantization": setting.quantization(mask)}}
                path = self.qa_config(setting, mask)
                if not path.exists() or read_json(path, what="config") != qa:
                    write_json(path, qa)

    def qa_config(self, setting: Setting, mask: bool) -> Path:
        return self.out / "configs" / f"qa-{setting.name}-{'mask' if mask else 'nomask'}.json"

    # ---- the steps

    def sparsify(self, ratio: float) -> Step:
        folder = self.out / "sparse" / f"wanda-{ratio * 100:.0f}"
        return step_from_argv(["sparsify", "--model", self.args.model, "--method", "wanda", "--ratio", str(ratio),
                               "--nsamples", str(self.args.nsamples), "--seqlen", str(self.args.seqlen),
                               "--output", str(folder)], folder, name=f"sparsify {folder.name}")

    def base(self, sparse: bool) -> str:
        return str(self.sparsify(0.5).product) if sparse else self.args.model

    def train(self, seed: int, setting: Setting | None = None, mask: bool = True, sparse: bool = True) -> Step:
        """Float NLS (no setting) or QA-NLS at `setting`: the same records, steps, rate and seed."""
        name = (f"float-s{seed}" if setting is None else
                f"qa-{setting.name}-{'mask' if mask else 'nomask'}{'' if sparse else '-dense'}-s{seed}")
        config = self.config if setting is None else self.qa_config(setting, mask)
        folder = self.out / "train" / name  # saved every 25 steps: a training cut short resumes
        return step_from_argv(["train", "--config", str(config), "--model", self.base(sparse), "--data",
                               str(self.records), "--tasks", "commonsense", "--limit", str(self.args.train_limit),
                               "--lr", str(LR), "--max-steps", str(self.args.steps), "--seed", str(seed),
                               "--save-steps", "25", "--output", str(folder)], folder, name=f"train {name}")

    def extract(self, training: Step, merge: bool = False) -> Step:
        folder = self.out / ("merged" if merge else "adapter") / training.product.name
        return step_from_argv(["extract", "--super-adapter", str(training.product), "--subnet", "heuristic",
                               *(["--merge"] if merge else []), "--output", str(folder)],
                              folder, name=f"{'merge' if merge else 'extract'} {folder.name}")

    def export(self, name: str, model: str, flags: list[str], adapter: Step | None = None) -> Step:
        folder = self.out / "ir" / name
        return step_from_argv(["export", "--model", model, *(["--adapter", str(adapter.product)] if adapter else []),
                               *flags, "--output", str(folder)], folder, name=f"export {name}")

    def score(self, name: str, source: list[str], pilot: bool = False) -> Step:
        """Log-likelihood of a PyTorch model (`--model`, fp32) or an IR (`--openvino`) on the first documents."""
        result = self.out / ("pilot" if pilot else "eval") / f"{name}.json"
        limit = self.args.pilot_limit if pilot else self.args.eval_limit
        pytorch = ["--dtype", "fp32"] if source[0] == "--model" else []
        return step_from_argv(["evaluate", *source, *pytorch, "--data", "default", "--tasks", ",".join(self.args.tasks),
                               "--scoring", "loglik", "--prompt-style", "lm-eval", "--limit", str(limit),
                               "--batch-size", "16", "--output", str(result)],
                              result, name=f"{'pilot' if pilot else 'eval'} {name}")

    def pilot_export(self, ratio: float, setting: Setting) -> Step:
        return self.export(f"pilot-wanda-{ratio * 100:.0f}-{setting.name}", str(self.sparsify(ratio).product),
                           setting.export_flags)

    def pilot_score(self, ratio: float, setting: Setting | None) -> Step:
        """The sparse model in PyTorch fp32 (no setting) or its PTQ IR at `setting`."""
        name = f"wanda-{ratio * 100:.0f}-{setting.name if setting else 'fp32'}"
        if setting is None:
            return self.score(name, ["--model", str(self.sparsify(ratio).product)], pilot=True)
        return self.score(name, ["--openvino", str(self.pilot_export(ratio, setting).product)], pilot=True)

    def row_steps(self, row: Row) -> list[Step]:
        """A row's steps in order, its IR's export (if it has one) second to last, its evaluation last."""
        kind, setting, seed, sparse = row.kind, row.setting, row.seed, self.base(True)
        if kind == "dense":
            return [self.score(row.name, ["--model", self.args.model])]
        if kind == "dense-ptq":
            ir = self.export(row.name, self.args.model, setting.export_flags)
            return [ir, self.score(row.name, ["--openvino", str(ir.product)])]
        if kind == "float":
            train = self.train(seed)
            sub = self.extract(train)
            return [self.sparsify(0.5), train, sub,
                    self.score(row.name, ["--model", sparse, "--adapter", str(sub.product)])]
        if kind == "merged-ptq":
            train = self.train(seed)
            merged = self.extract(train, merge=True)
            ir = self.export(row.name, str(merged.product), setting.export_flags)
            return [self.sparsify(0.5), train, merged, ir, self.score(row.name, ["--openvino", str(ir.product)])]
        on_sparse = kind_on_sparse(kind)  # QA rows: deployed as trained, no --weights
        train = self.train(seed, setting, mask=kind != "qa-nomask", sparse=on_sparse)
        sub = self.extract(train)
        ir = self.export(row.name, self.base(on_sparse), [], adapter=sub)
        return [*([self.sparsify(0.5)] if on_sparse else []), train, sub, ir,
                self.score(row.name, ["--openvino", str(ir.product)])]

    def ir_of(self, row: Row) -> Step | None:
        return self.row_steps(row)[-2] if kind_has_ir(row.kind) else None

    def reference(self, name: str) -> Step:
        return self.export(name, self.args.model, REFERENCES[name])

    # ---- the plan

    def pilot(self) -> dict[float, tuple[str, ...]]:
        """The pilot's settings by Wanda ratio: PILOT, narrowed by --pilot-ratios and --pilot-settings."""
        return {ratio: tuple(n for n in names if n in self.args.pilot_settings) for ratio, names in PILOT.items()
                if ratio in self.args.pilot_ratios}

    def candidates(self) -> list[str]:
        """The harsh setting's candidates the pilot tries, in HARSH_CANDIDATES' order."""
        return [name for name in HARSH_CANDIDATES if name in self.pilot().get(0.5, ())]

    def pilot_steps(self) -> list[Step]:
        steps = []
        for ratio, names in self.pilot().items():
            steps += [self.sparsify(ratio), self.pilot_score(ratio, None)]
            for name in names:
                steps += [self.pilot_export(ratio, SETTINGS[name]), self.pilot_score(ratio, SETTINGS[name])]
        return steps

    def pilot_drops(self) -> dict[str, float | None]:
        """Points lost from fp32 by each setting on the Wanda-50% model; None where not scored yet."""
        fp32 = finished(self.runner, self.pilot_score(0.5, None))
        results = {name: finished(self.runner, self.pilot_score(0.5, SETTINGS[name]))
                   for name in self.pilot().get(0.5, ())}
        return {name: compare.average(fp32, self.args.tasks) - compare.average(result, self.args.tasks)
                if fp32 and result else None for name, result in results.items()}

    def harsh(self) -> Setting | None:
        """The rule of the module docstring applied; None until its candidates are scored. Once chosen it is kept
        for the process (the pilot's steps run before anything asks)."""
        if self._harsh is None:
            drops, candidates = self.pilot_drops(), self.candidates()
            if candidates and all(drops[name] is not None for name in candidates):
                chosen = max(candidates, key=lambda n: (drops[n], HARSH_CANDIDATES.index(n)))
                self._harsh = SETTINGS[chosen]
        return self._harsh

    def settings(self) -> list[Setting]:
        """The default, and the harsh setting once the pilot chose it (the same one: the default alone)."""
        harsh = self.harsh()
        return [DEFAULT] + ([harsh] if harsh and harsh != DEFAULT else [])

    def rows(self) -> list[Row]:
        """What answers most first: seed by seed, QA (mask) against merged + PTQ and the float sub-adapter, at each
        setting; then the dense rows, the unmasked QA and the dense QAT (first seed unless --all-seeds-rows)."""
        settings, rows = self.settings(), []
        for seed in self.args.seeds:
            for setting in settings:
                rows += [Row("qa-mask", setting, seed), Row("merged-ptq", setting, seed)]
                rows += [Row("float", None, seed)] if setting == DEFAULT else []
        rows += [Row("dense")] + [Row("dense-ptq", setting) for setting in settings]
        seeds = self.args.seeds if self.args.all_seeds_rows else self.args.seeds[:1]
        return rows + [Row(kind, setting, seed) for kind in ("qa-nomask", "dense-qat") for seed in seeds
                       for setting in settings]

    def plan(self) -> list[Step]:
        """The pilot, the rows, the speed references; each step once, where it is first needed."""
        steps = [*self.pilot_steps(), *(s for row in self.rows() for s in self.row_steps(row)),
                 *(self.reference(name) for name in REFERENCES)]
        unique: dict[str, Step] = {}
        for step in steps:
            unique.setdefault(step.name, step)
        return list(unique.values())

    def run(self) -> None:
        pilot = self.pilot_steps()
        for step in pilot:
            self.runner.run(step)
        for step in self.plan()[len(pilot):]:  # planned once the pilot has chosen: with the harsh rows
            self.runner.run(step)

    def bench(self) -> None:
        """Decode speed of every finished IR of the rows and of the references, in interleaved rounds of one
        `shears bench`; a step too, so it reruns only when an IR changed or was added. The references (the dense
        INT8 and FP32 IRs every ratio is taken against) are exported first if the cells have not reached them."""
        self.runner.plan_keys(self.plan())
        exported = [step for row in self.rows() if (step := self.ir_of(row)) and self.runner.up_to_date(step)]
        if not exported:
            return print("[quantization-aware] bench: no IR of a row is exported yet; run the cells first")
        references = [self.reference(name) for name in REFERENCES]
        for step in references:
            self.runner.run(step)
        self.runner.run(step_from_argv(["bench", *(str(s.product) for s in exported + references),
                                        "--json", str(self.bench_json), "--max-new-tokens", "32",
                                        "--rounds", str(self.args.bench_rounds)],
                                       self.bench_json, name="bench"))

    # ---- results

    def scored(self, kind: str, setting: Setting | None) -> list[dict]:
        """The finished rows of a kind (at `setting` where the kind depends on it), one entry per seed."""
        setting = setting if KINDS[kind][1] else None
        found = []
        for row in self.rows():
            if row.kind == kind and row.setting == setting:
                result = finished(self.runner, self.row_steps(row)[-1])
                if result:
                    found.append({"seed": row.seed, "loglik": result})
        return found

    def planned_seeds(self, kind: str) -> list[int]:
        return sorted({row.seed for row in self.rows() if row.kind == kind and row.seed is not None})


def kind_has_ir(kind: str) -> bool:
    return kind not in ("dense", "float")


def kind_on_sparse(kind: str) -> bool:
    """Whether a row's model is the Wanda-50% base (else the dense model)."""
    return not kind.startswith("dense")


# ---- the report


def report(study: Study) -> str:
    args, harsh = study.args, study.harsh()
    lines = [f"# Quantization-aware sparse adapters ({Path(args.model).name}, Wanda 50%, INT4)", "",
             f"Written by `python benchmarks/quantization_aware.py`; models, results and step records under "
             f"`{args.output}`.", "",
             "## Settings and the rule, fixed before the numbers", "",
             f"- Training (every adapter): `{CONFIG.relative_to(ROOT)}` as the pruners study prepares it (120 records "
             f"held out; `{study.config}`), "
             f"{args.train_limit} lm-eval-worded commonsense train records (500 documents of each task), "
             f"{args.steps} steps at lr {LR:g}, seeds {', '.join(map(str, args.seeds))}; the QA trainings add "
             "`shears.quantization` (ratio 1.0, `mask_update` true or false). Wanda: "
             f"{args.nsamples} x {args.seqlen} calibration tokens.",
             f"- Scoring: log-likelihood (lm-eval wording, acc_norm where lm-eval defines it, else acc) on the first "
             f"{args.eval_limit} validation documents of {', '.join(SHORT.get(t, t) for t in args.tasks)} (the pilot: "
             f"{args.pilot_limit}); PyTorch rows in fp32, IRs as OpenVINO's CPU plugin runs them (`evaluate --openvino`: "
             "an f32 precision hint, the plugin's dynamic quantization of activations at its default, group size 32 "
             "on this CPU): the deployed model's accuracy, the same for every IR row.",
             "- INT4 settings (`shears export --weights int4`): NNCF's mode and group size, the layers a group size "
             "does not divide adjusted (asym g128 is NNCF's default; SmolLM2's 576-wide inputs get 64), the embeddings "
             "and head INT8 unless + all layers. The QA IRs compress the embeddings and head to INT8 at export as well "
             "(`shears.quantization.backup`, its default), so every INT4 IR has the same head.",
             "- The harsh setting: among those `shears.quantization` can train ("
             + ", ".join(SETTINGS[n].label for n in study.candidates()) + "), the one with the largest drop from fp32 "
             f"on the Wanda-50% pilot; a tie goes to the later one listed.",
             "- Interval: `compare.seeded_difference` over the seeds both rows have (unpaired: different trainings), "
             f"documents and seeds resampled, {compare.BOOTSTRAP_SAMPLES} resamples, 95% percentile interval. "
             "Verdicts (`nls_vs_lora.judge`): \"beats\" **holds** when the whole interval is above zero, is "
             f"**refuted** when it is all below, else inconclusive; \"equals\" holds when the interval lies inside "
             f"+-{EQUAL:g} points.", ""]
    lines += pilot_section(study, harsh) + rows_section(study) + questions_section(study) + ir_section(study)
    lines += training_section(study)
    command = shlex.join(["python", "benchmarks/quantization_aware.py", *args.argv])
    lines += ["## Resume", "", "The cells (a rerun skips what is done), then the decode speed alone on the machine:",
              "", "```", command, command + " --bench-only", "```", ""]
    return "\n".join(lines)


def pilot_section(study: Study, harsh: Setting | None) -> list[str]:
    args, rows = study.args, []
    for ratio, names in study.pilot().items():
        fp32 = finished(study.runner, study.pilot_score(ratio, None))
        rows.append([f"Wanda {ratio:.0%}", "fp32 (PyTorch)", "-", _average(fp32, args.tasks), "-", "-"])
        for name in names:
            setting = SETTINGS[name]
            result = finished(study.runner, study.pilot_score(ratio, setting))
            ir = study.pilot_export(ratio, setting).product
            diff = compare.paired_difference(result, fp32, args.tasks) if result and fp32 else None
            rows.append([f"Wanda {ratio:.0%}", setting.label, "yes" if setting.trainable else "no",
                         _average(result, args.tasks), _interval(diff) if diff else "pending", _megabytes(ir)])
    drops = study.pilot_drops()
    chosen = (f"**{harsh.label}** (drop {drops[harsh.name] + 0.0:.1f} points)" if harsh else
              "pending: the pilot's trainable settings are not all scored yet (until then only the default's rows run)")
    if harsh == DEFAULT:
        chosen += ("; that is the default itself, so the rows run at it alone (no trainable setting lost more than it "
                   "did on these documents)")
    return [f"## Pilot: INT4 PTQ of the sparse model alone ({args.pilot_limit} documents of each task)", "",
            *markdown_table(["model", "setting", "QA can train it", "avg ± se", "minus fp32 (95% interval)", "IR MB"],
                            rows),
            "", f"Harsh setting, by the rule: {chosen}.", ""]


def rows_section(study: Study) -> list[str]:
    args, lines = study.args, []
    for setting in study.settings():
        rows = []
        for kind, (label, _) in KINDS.items():
            runs = study.scored(kind, setting)
            planned = study.planned_seeds(kind)
            if not runs:
                rows.append([label, "pending", *("-" for _ in args.tasks), "pending"])
                continue
            done = [r["seed"] for r in runs if r["seed"] is not None]
            seeds = ", ".join(map(str, done)) or "-"
            seeds += f" (of {', '.join(map(str, planned))})" if len(done) < len(planned) else ""
            per_task = [f"{100 * sum(compare.document_scores(r['loglik'], t).mean() for r in runs) / len(runs):.1f}"
                        for t in args.tasks]
            per_seed = [compare.average(r["loglik"], args.tasks) for r in runs]
            average = f"**{sum(per_seed) / len(per_seed):.1f}**" + (
                f" ({' '.join(f'{a:.1f}' for a in per_seed)})" if len(runs) > 1 else "")
            rows.append([label, seeds, *per_task, average])
        which = "default" if setting == DEFAULT else "harsh"
        lines += [f"## Rows at {setting.label} ({which}): mean over seeds", "",
                  *markdown_table(["row", "seeds", *(SHORT.get(t, t) for t in args.tasks), "avg (per seed)"], rows), ""]
    return lines


def questions_section(study: Study) -> list[str]:
    args, rows = study.args, []
    for setting in study.settings():
        for question, first, second, claim in QUESTIONS:
            a, b = study.scored(first, setting), study.scored(second, setting)
            if claim:  # trained rows against trained rows: the seeds both have
                a, b = _same_seeds(a, b)
            if not a or not b:
                rows.append([question, setting.label, "-", "pending", "-", "pending"])
                continue
            c = compare.seeded_difference([r["loglik"] for r in a], [r["loglik"] for r in b], args.tasks)
            spread = "; ".join(" ".join(f"{v:.1f}" for v in c["seed_spread"][k]) for k in ("first", "second"))
            seeds = ", ".join(str(r["seed"]) for r in a if r["seed"] is not None) or "-"
            rows.append([question, setting.label, seeds, f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]",
                         spread, f"**{judge(c, claim)}**" if claim else "- (no claim)"])
    return ["## The questions", "",
            *markdown_table(["question", "setting", "seeds", "difference (95% interval)", "per seed (first; second)",
                             "verdict"], rows), ""]


def ir_section(study: Study) -> list[str]:
    """Each IR's size and zeros from its export manifest; decode tokens/s from --bench-only's `shears bench`."""
    bench = read_json(study.bench_json, what="bench results") if study.bench_json.exists() else {"rows": []}
    speed = {Path(r["folder"]): r.get("decode_tokens_per_s") for r in bench["rows"] if r.get("status") == "ok"}
    references = {name: speed.get(study.reference(name).product) for name in REFERENCES}
    irs = [(row.name, study.ir_of(row), kind_on_sparse(row.kind)) for row in study.rows() if kind_has_ir(row.kind)]
    sparse = Path(study.base(True))
    pruned = base_zero_masks(sparse) if any(on and step.product.exists() for _, step, on in irs) else {}
    rows = []
    for name, step, on_sparse in [*irs, *((name, study.reference(name), False) for name in REFERENCES)]:
        if not step.product.exists():  # stages write atomically: the folder is there once complete
            rows.append([name, "pending", *("-" for _ in range(8))])
            continue
        ir, tokens = OpenVINOModel.read(step.product), speed.get(step.product)
        c = ir.manifest["compression"]
        head = {layer["dtype"] for layer in ir.layers
                if not layer["adapter"] and not re.search(r"\.\d+\.", layer["layer"])}  # outside the decoder blocks
        rows.append([name, f"{c['mode']} g{c['group_size']}" if c else ir.weights, ", ".join(sorted(head)),
                     f"{ir.ir_bytes / 2**20:.1f}", f"{ir.sparsity['base_zeros']:,}",
                     f"{ir.sparsity['base_sparsity']:.1%}", zeros_lost(step.product, pruned) if on_sparse else "-",
                     f"{tokens:.1f}" if tokens else "pending (--bench-only)",
                     *(f"{tokens / ref:.2f}x" if tokens and ref else "-" for ref in references.values())])
    measured = (f"`shears bench`, {bench['max_new_tokens']} new tokens, median of {bench['rounds']} interleaved rounds "
                f"on {bench['cpu']['model']} ({bench['cpu']['cores']} cores), load average {bench['load_average']} "
                "before it" if bench["rows"] else "not measured yet: run the --bench-only command below, alone")
    return ["## The IRs: size, zeros kept, decode speed", "",
            "Weights as exported (group size as asked; NNCF adjusts it where it does not divide a layer), the output "
            "head's weights (INT8 after PTQ and in the QA IRs, whose float remainder the export compresses as PTQ's "
            "backup mode does), size of `openvino_model.bin` (MB = 2^20 bytes), zeros and sparsity of the decoder's base "
            f"linears as counted in the IR (export manifest: every zero, so a dense model's INT4 weights count those "
            f"that round to their group's zero point too); of the zeros the sparse base has (Wanda 50%, in PyTorch), "
            f"those that are not zero in the IR: what the adapter's update filled in (`{sparse.name}`'s decoder "
            f"linears against the IR's dequantized weights); decode tokens/s: {measured}.", "",
            *markdown_table(["IR", "weights", "head", "MB", "base zeros", "base sparsity", "the sparse base's zeros lost",
                             "decode tok/s", "vs dense INT8", "vs dense FP32"], rows), ""]


def base_zero_masks(folder: Path) -> dict[str, np.ndarray]:
    """Where the sparse base's pruned linears are zero, by module path (as `ir_zero_masks` names an IR's weights)."""
    from shears_nncf.models import architecture, block_linears, decoder_blocks, load_model

    model = load_model(folder)
    arch = architecture(model)
    return {f"{arch.blocks}.{i}.{name}": (linear.weight == 0).numpy()
            for i, block in enumerate(decoder_blocks(model)) for name, linear in block_linears(block, arch).items()}


def zeros_lost(ir: Path, pruned: dict[str, np.ndarray]) -> str:
    """How many of the sparse base's zeros the IR holds as non-zero weights, of how many the base has."""
    found = ir_zero_masks(ir / IR_XML)
    total = sum(int(zeros.sum()) for zeros in pruned.values())
    lost = total - sum(int(found[path].reshape(zeros.shape)[zeros].sum()) for path, zeros in pruned.items())
    return f"{lost:,} of {total:,}" + (f" ({lost / total:.2%})" if lost else "")


def training_section(study: Study) -> list[str]:
    """Each training's wall time, from its step record (the machine may have been shared)."""
    rows = []
    for step in study.plan():
        if step.stage == "train":
            record = study.runner.record(step.name)
            minutes = f"{record['seconds'] / 60:.1f}" if record.get("complete") else "pending"
            rows.append([step.product.name, minutes])
    return ["## Trainings", "", "Wall minutes of each training step, on cores other work may have shared (a paused or "
            "resumed training counts its whole time): a record of the run, not a cost comparison.", "",
            *markdown_table(["training", "wall minutes"], rows), ""]


def _average(result: dict | None, tasks: list[str]) -> str:
    if result is None:
        return "pending"
    return f"{compare.average(result, tasks):.1f} ± {compare.standard_error(result, tasks):.1f}"


def _megabytes(folder: Path) -> str:
    return f"{OpenVINOModel.read(folder).ir_bytes / 2**20:.1f}" if folder.exists() else "-"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="/work/runs/quantization_aware", help="models, results, step records")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="the dense model: a name or an HF folder")
    parser.add_argument("--seeds", default="1,2", help="training seeds")
    parser.add_argument("--all-seeds-rows", action="store_true",
                        help="the unmasked QA and dense QAT rows at every seed (default: the first)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of every training")
    parser.add_argument("--train-limit", type=int, default=2000, help="training records drawn from the data")
    parser.add_argument("--nsamples", type=int, default=32, help="Wanda's calibration samples")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration sample")
    parser.add_argument("--tasks", default=",".join(COMMONSENSE), help="commonsense tasks scored")
    parser.add_argument("--eval-limit", type=int, default=300, help="first N validation documents of each task (rows)")
    parser.add_argument("--pilot-limit", type=int, default=100, help="first N validation documents (pilot)")
    parser.add_argument("--pilot-settings", default=",".join(SETTINGS),
                        help=f"the pilot's INT4 settings (of {', '.join(SETTINGS)})")
    parser.add_argument("--pilot-ratios", default=",".join(map(str, PILOT)), help="the pilot's Wanda ratios")
    parser.add_argument("--bench-rounds", type=int, default=3, help="interleaved rounds of the decode benchmark")
    parser.add_argument("--report", default=str(ROOT / "benchmarks" / "QUANTIZATION.md"))
    parser.add_argument("--report-only", action="store_true", help="write the report from what is done; run nothing")
    parser.add_argument("--bench-only", action="store_true",
                        help="run only the decode benchmark of the finished IRs, which the cells' run leaves out: run "
                             "it alone on the machine, after the cells or while they are paused")
    args = parser.parse_args(argv)
    args.argv = [a for a in argv if a not in ("--bench-only", "--report-only")]  # the command to resume
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.tasks = args.tasks.split(",")
    args.pilot_settings = args.pilot_settings.split(",")
    args.pilot_ratios = [float(r) for r in args.pilot_ratios.split(",")]
    if unknown := set(args.pilot_settings) - set(SETTINGS) or set(args.pilot_ratios) - set(PILOT):
        parser.error(f"--pilot-settings names {', '.join(SETTINGS)}; --pilot-ratios {', '.join(map(str, PILOT))}; "
                     f"got {', '.join(map(str, sorted(unknown, key=str)))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    study = Study(args)
    study.prepare()
    if args.bench_only:
        study.bench()
    elif not args.report_only:
        study.run()
    write_text(args.report, report(study))
    print(Path(args.report).read_text())


if __name__ == "__main__":
    main()
