"""Every command of `shears`, declared once: its name, its options with their defaults and help, its handler.

The name is the CLI verb, the `stage` a stage's manifest records and the step name of `shears run`, so one
vocabulary names each stage everywhere. The CLI builds its parser from these declarations; `shears run`
calls the same handlers with the same defaults, without going through argument strings, and shows each
step as the command line a user would type. Handlers are named by "module:function" and imported only when
a command runs, so `shears --help` stays instant and this module imports no stage's code: only the tables of
its string choices (`choices.Choices`, declared light beside their owners), which give an option both its
`choices=` and its help.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from .artifacts import check_output
from .choices import Choices
from .config import PRECISIONS, TRAINING_OVERRIDES
from .errors import ShearsError
from .evaluation import PROMPT_STYLES
from .evaluation.stage import SCORINGS
from .export import INT4_MODES, WEIGHT_FORMATS
from .nls.space import NAMED
from .protocol import PROTOCOLS
from .search import COSTS, METRICS, STRATEGIES
from .sparsity import ALLOCATIONS, METHODS, SparsifyConfig


def _checked(convert, accept, expected: str):
    """An argparse `type`: `convert` the flag's text (or a config's value, already a number), `accept` the result.

    argparse turns its ArgumentTypeError into one usage line and exit 2; `Stage.namespace` into a ShearsError."""

    def parse(value):
        try:
            number = None if isinstance(value, bool) else convert(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not accept(number):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
        return number

    return parse


def _integer(value) -> int:
    """An int from text or from a whole number; 2.5 is not one."""
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


positive_int = _checked(_integer, lambda n: n >= 1, "a positive integer")
non_negative_int = _checked(_integer, lambda n: n >= 0, "an integer >= 0")
positive_float = _checked(float, lambda x: x > 0, "a positive number")
non_negative_float = _checked(float, lambda x: x >= 0, "a number >= 0")
fraction = _checked(float, lambda x: 0 <= x <= 1, "a number in [0, 1]")
open_fraction = _checked(float, lambda x: 0 < x < 1, "a number in (0, 1)")
positive_fraction = _checked(float, lambda x: 0 < x <= 1, "a number in (0, 1]")
group_size = _checked(_integer, lambda n: n == -1 or n >= 2, "a group size >= 2, or -1 (one group per row)")


def csv(text: str | list) -> list[str]:
    """Comma-separated names (a config may give the list itself)."""
    items = text if isinstance(text, list) else str(text).split(",")
    return [str(t).strip() for t in items if str(t).strip()]


@dataclass(frozen=True)
class Option:
    """One option: its flags and argparse's `add_argument` keywords (type, default, choices, help, ...).

    `writes` ("folder" or "file") marks the path a stage writes, which `Stage.run` guards before any work."""

    flags: tuple[str, ...]
    settings: dict
    writes: str | None = None

    @property
    def dest(self) -> str:
        return self.settings.get("dest") or self.flags[0].lstrip("-").replace("-", "_")

    @property
    def default(self) -> Any:
        return self.settings.get("default", False if self.settings.get("action") == "store_true" else None)

    @property
    def required(self) -> bool:
        return self.settings.get("required", not self.flags[0].startswith("-"))

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    def parse(self, value):
        """A value given already parsed (by a config, not argv) through the same `type` check as the flag."""
        convert = self.settings.get("type")
        if convert is None or value is None:
            return value
        try:
            return convert(value)
        except argparse.ArgumentTypeError as e:
            raise ShearsError(f"{self.flags[0]}: {e}") from None


def option(*flags: str, writes: str | None = None, **settings) -> Option:
    return Option(flags, settings, writes)


def choice_option(flag: str, choices: Choices, when: str = "", **settings) -> Option:
    """An option naming one of `choices`: argparse checks the name against them, the help gives each one's.
    `when` says when the option applies ("with --scoring loglik")."""
    return option(flag, choices=choices, help=f"({when}) {choices.help()}" if when else choices.help(), **settings)


def _as_parsed(value):
    """Paths as the command line gives them (strings), so a handler sees the same types from both callers."""
    if isinstance(value, list):
        return [_as_parsed(v) for v in value]
    return str(value) if isinstance(value, os.PathLike) else value


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    handler: str  # "module:function", called with an argparse.Namespace of the options
    options: tuple[Option, ...]

    def option(self, dest: str) -> Option:
        return next(o for o in self.options if o.dest == dest)

    def namespace(self, **values) -> argparse.Namespace:
        """The options with their defaults, overridden by `values` (given as parsed values, not strings)."""
        by_dest = {o.dest: o for o in self.options}
        unknown = sorted(set(values) - set(by_dest))
        if unknown:
            raise ShearsError(f"`shears {self.name}` has no option {', '.join(unknown)}; "
                              f"its options are {', '.join(sorted(by_dest))}")
        try:
            values = {dest: by_dest[dest].parse(value) for dest, value in values.items()}
        except ShearsError as e:
            raise ShearsError(f"`shears {self.name}` {e}") from None
        resolved = {dest: _as_parsed(values.get(dest, o.default)) for dest, o in by_dest.items()}
        missing = [o.flags[0] for o in self.options if o.required and resolved[o.dest] in (None, [])]
        if missing:
            raise ShearsError(f"`shears {self.name}` needs {', '.join(missing)}")
        return argparse.Namespace(command=self.name, **resolved)

    def argv(self, args: argparse.Namespace) -> list[str]:
        """The command line a user would type for `args`: positionals, then every option not at its default."""
        words = [self.name]
        for o in self.options:
            value = getattr(args, o.dest)
            if o.positional:
                words += [str(v) for v in (value if isinstance(value, list) else [value])]
            elif value is True and o.settings.get("action") == "store_true":
                words.append(o.flags[0])
            elif o.settings.get("action") == "append" and value:
                words += [word for item in value for word in (o.flags[0], str(item))]
            elif value != o.default and value is not None and value is not False:
                words += [o.flags[0], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        return words

    @property
    def function(self):
        """The handler itself, imported now."""
        module, name = self.handler.split(":")
        return getattr(importlib.import_module(module), name)

    def run(self, args: argparse.Namespace) -> Any:
        """The handler, once every path the stage writes has passed the guard: nothing of the user's is replaced."""
        for o in self.options:
            if o.writes and getattr(args, o.dest, None):
                check_output(getattr(args, o.dest), self.name, folder=o.writes == "folder",
                             overwrite=getattr(args, "overwrite", False), flag=o.flags[0])
        return self.function(args)


DTYPE = option("--dtype", default="auto", choices=PRECISIONS,
               help="precision the model is loaded in; auto: bf16 on CUDA where supported, else fp16; fp32 on CPU")


OVERWRITE = option("--overwrite", action="store_true",
                   help="replace the output even when it holds something this command did not write (without it such "
                        "an output is refused; the command's own earlier output is always replaced)")


def setting_option(setting: Field) -> Option:
    """The `shears train` flag overriding a training setting, made from its field (config.TrainingSettings): `--<name>`
    with its help, taking a positive number, a switch or one of its choices; no default, so the config's value holds."""
    kind = {"int": {"type": positive_int}, "float": {"type": positive_float}, "bool": {"action": "store_true"},
            "str": {"choices": setting.metadata.get("choices")}}[setting.type]
    return option("--" + setting.name.replace("_", "-"), default=None, help=setting.metadata["flag_help"], **kind)


def sparsify_option(name: str, **settings) -> Option:
    """The `shears sparsify` flag of a `SparsifyConfig` field: `--<name>` with the field's default (none: required) and
    help, which for a choice is its table's (`choices=`)."""
    setting = next(f for f in fields(SparsifyConfig) if f.name == name)
    default = {"required": True} if setting.default is MISSING else {"default": setting.default}
    return option("--" + name.replace("_", "-"), help=setting.metadata["help"], **default, **settings)


def protocol_option(default_from: str) -> Option:
    """`--protocol`: a name of `PROTOCOLS`, kept a name in the Namespace (a step's command line and key) and looked up
    once by the handler; None, the default, leaves the protocol to `default_from`."""
    return option("--protocol", choices=PROTOCOLS, default=None, help=f"{PROTOCOLS.help()}. Default: {default_from}")


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("sparsify", "prune a model (Wanda, SparseGPT, magnitude; unstructured or N:M; uniform or OWL) and save it",
          "shears_nncf.sparsity.api:sparsify_command", (
        option("--model", required=True, help="HF folder, hub id, or 'smollm2-135m' (embedded default)"),
        sparsify_option("ratio", type=open_fraction),
        sparsify_option("method", choices=METHODS),
        sparsify_option("pattern"),
        sparsify_option("allocation", choices=ALLOCATIONS),
        sparsify_option("damping", type=non_negative_float),
        sparsify_option("block_size", type=positive_int),
        sparsify_option("outlier_threshold", type=positive_float),
        sparsify_option("owl_lambda", type=open_fraction),
        option("--calibration", default="default",
               help=".txt file, .jsonl file, hub dataset id, 'c4' (Wanda's C4 shard, streamed), or 'default'"),
        option("--nsamples", type=positive_int, default=None,
               help="calibration samples (default: 32; c4: 128; a .jsonl: its line count)"),
        option("--seqlen", type=positive_int, default=None,
               help="tokens per calibration sample (default 512, c4 2048; capped by the model)"),
        option("--seed", type=non_negative_int, default=0),
        option("--device", default="auto", help="cpu, cuda, cuda:N, or auto"),
        DTYPE,
        option("--output", required=True, writes="folder", help="folder for the sparse HF model and its manifest"),
        OVERWRITE,
    )),
    Stage("report", "print the per-layer sparsity and non-zero parameters of a model folder",
          "shears_nncf.sparsity.api:report_command", (
        option("folder"),
        option("--json", action="store_true", help="print JSON instead of a table"),
    )),
    Stage("evaluate", "accuracy on tasks (generation or log-likelihood) or perplexity on a text file",
          "shears_nncf.evaluation.cli:evaluate_command", (
        option("--model", help="HF folder, hub id, or 'smollm2-135m'; default: the base named by --super-adapter"),
        option("--adapter",
               help="a PEFT adapter folder to apply to the model; with --openvino: the name of a run-time adapter of the "
                    "IR folder (shears export --runtime-adapter), applied by OpenVINO GenAI (generation scoring only)"),
        option("--super-adapter", help="a trained super-adapter folder (shears train)"),
        option("--subnet", default="heuristic", help=f"with --super-adapter: {'|'.join(NAMED)}|FILE.json"),
        option("--openvino", help="an OpenVINO IR folder (shears export) to evaluate instead of a PyTorch model"),
        option("--tasks", type=csv, help="comma-separated task names, e.g. boolq,piqa,gsm8k"),
        option("--data", default="default",
               help="a JSON/JSONL file, a folder of <task>/test.json, a hub id, or 'default'"),
        option("--limit", type=positive_int, default=None, help="evaluate the first N examples of each task"),
        choice_option("--scoring", SCORINGS, default="generate"),
        choice_option("--prompt-style", PROMPT_STYLES, "with --scoring loglik", default="lm-eval"),
        option("--batch-size", type=positive_int, default=8),
        option("--output", writes="file",
               help="results JSON, written after each task; a rerun with the same settings scores only the missing "
                    "tasks"),
        OVERWRITE,
        option("--perplexity", metavar="TEXTFILE",
               help="measure perplexity on this text file instead of task accuracy"),
        option("--seqlen", type=positive_int, default=512, help="with --perplexity: tokens per window"),
        option("--nsamples", type=positive_int, default=None, help="with --perplexity: at most this many windows"),
        option("--device", default="auto"),
        DTYPE,
        protocol_option("the super-adapter's, else shears"),
    )),
    Stage("score", "score predictions made by any runtime", "shears_nncf.evaluation.cli:score_command", (
        option("--task", required=True),
        option("--predictions", required=True, help='JSONL with lines {"prediction": str, "answer": str}'),
        option("--json", action="store_true", help='print only {"task", "accuracy", "count"}'),
        option("--output", writes="file", help='write every line\'s verdict as JSONL {"line", "extracted", "correct"}'),
        OVERWRITE,
        protocol_option("shears"),
    )),
    Stage("init-config", "write a complete training config for a model's architecture, from its config alone",
          "shears_nncf.nls.init_config:init_config_command", (
        option("--model", required=True, help="HF folder, hub id, or 'smollm2-135m'; only its config is read"),
        option("--ranks", type=csv, default=None,
               help="the rank space of every group, strictly descending (default 32,24,16, the paper's); alpha = 2 r"),
        option("--targets", type=csv, default=None,
               help="LoRA target modules, e.g. q_proj,k_proj,v_proj,o_proj (default: the paper's Q,K,V / Up / Down as "
                    "this family names them); Q,K,V share a group per layer, Up with Gate, every other one its own"),
        option("--output", required=True, writes="file", help="the config JSON to write"),
        OVERWRITE,
    )),
    Stage("train", "train an elastic-LoRA super-adapter (NLS), or a plain LoRA with --lora-only",
          "shears_nncf.nls.cli:train_command", (
        option("--config", required=True, help="NNCF JSON config with a bootstrapNAS section and a shears section"),
        option("--model", required=True, help="the (sparse) base model"),
        DTYPE,
        option("--data", default="default",
               help="training data: a JSON/JSONL file, a hub id, 'default' (the embedded train splits in LLM-Adapters' "
                    "wording) or 'lm-eval' (the same documents as lm-eval poses them: its prompt, then the gold "
                    "choice's text; what --scoring loglik ranks)"),
        option("--tasks", type=csv, help="tasks or a named mixture (e.g. commonsense) when the data has several"),
        option("--output", writes="folder", help="super-adapter folder (required unless --dry-run)"),
        OVERWRITE,
        option("--max-steps", type=positive_int, default=None, help="stop after N optimizer steps"),
        *(setting_option(setting) for setting in TRAINING_OVERRIDES.values()),
        option("--limit", type=positive_int, default=None, help="use at most N training examples"),
        option("--lora-only", action="store_true", help="plain LoRA baseline: elasticity off"),
        option("--resume", action="store_true", help="resume from the last checkpoint in --output"),
        option("--save-steps", type=positive_int, default=200,
               help="save a checkpoint every N optimizer steps (only the last is kept), for --resume"),
        option("--seed", type=non_negative_int, default=42),
        protocol_option("the config's shears.protocol, else shears"),
        option("--dry-run", action="store_true",
               help="print the trainable parameters and a peak-memory estimate from the model's config only; train "
                    "nothing"),
    )),
    Stage("search", "search the trained super-adapter for a sub-adapter", "shears_nncf.search.cli:search_command", (
        option("--super-adapter", required=True),
        option("--model", help="base model; default: the one named in the super-adapter's manifest"),
        DTYPE,
        choice_option("--strategy", STRATEGIES, required=True),
        option("--budget", type=positive_int, default=None, help="maximum number of evaluated configurations"),
        option("--tasks", type=csv),
        option("--data", default="default"),
        option("--limit", type=positive_int, default=50, help="validation examples per task (a seeded draw; default 50)"),
        choice_option("--metric", METRICS, default="accuracy"),
        choice_option("--prompt-style", PROMPT_STYLES, "with --metric loglik", default="lm-eval"),
        choice_option("--cost", COSTS, default="params"),
        option("--batch-size", type=positive_int, default=8),
        option("--seed", type=non_negative_int, default=0),
        option("--output", required=True, writes="folder",
               help="search folder; a rerun with the same settings reuses the evaluations stored there"),
        OVERWRITE,
        protocol_option("the super-adapter's"),
    )),
    Stage("extract", "write a sub-adapter as a standard PEFT adapter folder",
          "shears_nncf.export.extract:extract_command", (
        option("--super-adapter", required=True),
        option("--subnet", default="heuristic", help=f"{'|'.join(NAMED)}|FILE.json (search.json or ranks)"),
        option("--model",
               help="base model recorded in the manifest (with --merge: the sparse base to merge into); default: the "
                    "super-adapter's"),
        option("--merge", action="store_true",
               help="write an HF model folder: the sub-adapter folded into the base, keeping every zero of the base"),
        option("--output", required=True, writes="folder"),
        OVERWRITE,
    )),
    Stage("export", "export the sparse model (with an unmerged adapter) to OpenVINO IR",
          "shears_nncf.export.cli:export_command", (
        option("--model", required=True, help="the sparse (or dense) HF model folder"),
        DTYPE,
        option("--adapter", help="a PEFT adapter folder (e.g. from shears extract), baked into the IR's graph unmerged"),
        option("--runtime-adapter", action="append", metavar="SUB_ADAPTER",
               help="a PEFT sub-adapter folder (repeatable): the base is exported alone and each sub-adapter written "
                    "under adapters/ for OpenVINO GenAI to apply at run time (shears generate --adapter NAME)"),
        option("--output", required=True, writes="folder"),
        OVERWRITE,
        choice_option("--weights", WEIGHT_FORMATS, default="as-is"),
        option("--calibration", default="default", help="with --weights w8a8: calibration text (as for sparsify)"),
        option("--int4-ratio", type=positive_fraction, default=1.0,
               help="with --weights int4: fraction of linears in INT4 (the rest INT8)"),
        option("--group-size", type=group_size, default=128,
               help="with --weights int4: inputs sharing one scale (-1: whole row)"),
        option("--int4-mode", choices=INT4_MODES, default=INT4_MODES[0],
               help="with --weights int4: NNCF's INT4 mode, asymmetric (a zero point per group) or symmetric"),
        option("--int4-all-layers", action="store_true",
               help="with --weights int4: the embeddings and the output head in INT4 too (NNCF's all_layers; "
                    "without it they stay INT8)"),
    )),
    Stage("bench", "benchmark inference of OpenVINO IR folders (or a PyTorch model) on CPU",
          "shears_nncf.bench:bench_command", (
        option("folders", nargs="+", metavar="DIR"),
        option("--prompts", help="a text file, one prompt per line"),
        option("--max-new-tokens", type=positive_int, default=64),
        option("--sparse-rate", type=fraction, default=None, help="CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE, in [0, 1]"),
        option("--json", dest="json_out", writes="file", help="also write the results to this JSON file"),
        OVERWRITE,
        option("--threads", type=positive_int, default=None,
               help="inference threads for every back end (default: their own)"),
        option("--accuracy", action="append", metavar="DIR=RESULTS.json",
               help="a folder's `shears evaluate --output` results (repeatable): adds a speed-vs-accuracy table"),
        option("--rounds", type=positive_int, default=3,
               help="rounds, each running every row once in turn (interleaved, so drifting load hits all rows alike); "
                    "the table shows each row's median"),
    )),
    Stage("generate", "generate text with an exported IR through OpenVINO GenAI, switching run-time adapters",
          "shears_nncf.generate:generate_command", (
        option("--openvino", required=True, help="an OpenVINO IR folder (shears export)"),
        option("--adapter", type=csv,
               help="run-time adapter name(s) of the IR folder, comma-separated: every prompt runs with each in turn, "
                    "switched without reloading the base; none: the base alone. Default: the folder's first adapter "
                    "(none if it has none)"),
        option("--prompt", help="one prompt"),
        option("--prompts", metavar="FILE", help="a text file, one prompt per line"),
        option("--max-new-tokens", type=positive_int, default=128),
        option("--template", default="none", choices=["none", *PROTOCOLS],
               help="none: the prompt as given; shears or reference: wrapped as the instruction of that protocol's "
                    "prompt template (what the adapter was trained on)"),
    )),
    Stage("run", "every stage in order (sparsify, train, search, extract, export, evaluate, bench), resumable",
          "shears_nncf.pipeline:run_command", (
        option("--config", required=True, help="NNCF JSON config; its shears.pipeline section sets the stages"),
        option("--model", help="override the config's base model"),
        option("--data", help="override the config's training data"),
        option("--output", required=True, writes="folder",
               help="run folder: one sub-folder per stage, summary.md, summary.json; a rerun resumes it"),
        OVERWRITE,
        protocol_option("the config's shears.protocol, else shears"),
    )),
)}
