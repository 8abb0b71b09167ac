"""Shears configs: an NNCF BootstrapNAS `elasticity.width` section plus a `shears` section of ours.

One JSON file says everything about a super-adapter: the LoRA settings (`shears.lora`), the
training settings NNCF does not know (`shears.training`), the learning rate and epochs (in the
BootstrapNAS stage, as the Shears reference writes them) and the adapter groups with their rank
lists (`bootstrapNAS.training.elasticity.width`). A group is written once, as the module names it ties
together (`["q_proj", "k_proj", "v_proj"]`, the same for every family that names its linears so) or as
NNCF node-name patterns, where `{layer}` stands for a decoder layer's index and `{*}` for any text (usually
the wrapper prefix), and every group is expanded against the traced graph into one group per layer. Every
mistake is found here, before a model is trained: unknown keys (jsonschema), rank lists that are
not descending or do not start at the LoRA rank, patterns that match no node, missing modules.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
from dataclasses import MISSING, Field, dataclass, field, fields
from importlib import resources
from pathlib import Path

import jsonschema

from .artifacts import read_json
from .errors import ShearsError
from .protocol import PROTOCOLS, SHEARS, SHEARS_PROTOCOL, Protocol

LAYER, ANY = "{layer}", "{*}"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # of loading (--dtype) and of training (shears.training.precision)


@dataclass(frozen=True)
class LoraSettings:
    r: int  # rank of the super-adapter = the first (largest) rank of every group
    alpha: float  # scaling alpha / r is the same for every sub-adapter
    dropout: float
    target_modules: list[str]
    # Mask the update by the base's non-zeros, W + M ⊙ (s B_r A_r), as SQFT's SparsePEFT: the adapter can then
    # be merged into the sparse base exactly, keeping its zeros (`shears extract --merge`); nls/sparse_adapter.py
    sparse_adapter: bool = False


def setting(default=MISSING, *, description: str | None = None, flag_help: str | None = None,
            choices: tuple | None = None, stage_key: str | None = None, protocol: bool = False) -> Field:
    """A training setting, declared once: its default (`protocol`: the protocol's attribute of the same name), where
    a config writes it (`shears.training.<name>`, or `stage_key` of the BootstrapNAS stage), its description (the
    schema's) and, given `flag_help`, the `shears train --<name>` flag that overrides it (`choices` for a name)."""
    metadata = {"description": description, "flag_help": flag_help, "choices": choices, "stage_key": stage_key,
                "protocol": protocol}
    return field(default=default, metadata={key: value for key, value in metadata.items() if value})


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """Each field is the one source of a training setting: `parse_config` reads it, `stages.py` makes its flag and
    tests/test_config.py holds the schema's `shears.training` to these fields."""

    epochs: float = setting(stage_key="epochs", flag_help="override the config's epochs")
    lr: float = setting(stage_key="init_lr", flag_help="override the config's learning rate")
    batch_size: int = setting(4, description="per-device micro-batch",
                              flag_help="override the config's per-device batch size")
    grad_accum: int = setting(4, description="micro-batches per optimizer step",
                              flag_help="override the config's gradient accumulation")
    max_length: int = setting(256, description="tokens per training example (longer ones are truncated)",
                              flag_help="override the config's maximum sequence length")
    train_on_inputs: bool = setting(protocol=True, description="also train on the prompt tokens; default: the "
                                                               "protocol's (shears false, reference true)")
    weight_decay: float = setting(0.0)
    precision: str = setting(
        "auto", choices=PRECISIONS,
        description="mixed-precision training; auto: bf16 on CUDA (fp16 where bf16 is missing), fp32 on CPU",
        flag_help="override the config's training precision (auto: bf16 on CUDA, fp16 where bf16 is missing, fp32 on "
                  "CPU)")
    gradient_checkpointing: bool = setting(
        False, description="recompute activations in the backward pass: less activation memory for one more forward "
                           "pass per micro-batch",
        flag_help="recompute activations in the backward pass: less memory, one more forward")
    truncation: str = setting(protocol=True, description=(
        "an example longer than max_length: prompt cuts the start of its prompt and keeps its response and EOS; end "
        "keeps its first max_length tokens and appends EOS only when shorter, as the reference's tokenize does (the "
        "response may be lost); default: the protocol's (shears prompt, reference end)"))
    val_set_size: int = setting(protocol=True, description=(
        "records set aside from the training data (datasets' train_test_split, seed 42) as the search's validation "
        "set, as the reference's val_set_size: 120 in run_commonsense.py, 0 in run_math.py and run_gsm8k.py; default: "
        "the protocol's (shears 0, reference 120)"))
    eval_steps: int = setting(0, description=(
        "every this many optimizer steps, the loss on the val_set_size records set aside is computed and logged as "
        "eval_loss in the training log (trainer_state.json's log_history), as the reference's Trainer does with "
        "--eval_strategy steps; a super-adapter is evaluated at its heuristic (middle-rank) sub-adapter, the one "
        "deployed by default. 0: never (the Trainer's default, eval_strategy no). Needs val_set_size > 0"))


@dataclass(frozen=True)
class QuantizationSettings:
    """`shears.quantization`: train the super-adapter inside NNCF's fake quantizers (nls/quantization_aware.py) and
    deploy it as one INT4 (or INT8) IR. The names and defaults are NNCF's `compress_weights` ones."""

    mode: str = "int4_asym"
    group_size: int = 128
    ratio: float = 1.0
    mask_update: bool = True  # Q(W + M ⊙ B A): the merged integer weights keep every zero of the sparse base
    # The weights the INT4 fake quantizers leave float (embeddings, output head), at export: INT8 as NNCF's
    # backup_mode compresses them after training (`shears export --weights int4` does the same), or "none": float.
    backup: str = "int8_asym"


# The settings a `shears train` flag (and load_config's keyword of the same name) overrides, by name.
TRAINING_OVERRIDES: dict[str, Field] = {f.name: f for f in fields(TrainingSettings) if "flag_help" in f.metadata}


@dataclass(frozen=True)
class ShearsConfig:
    """A validated config file (its content in `raw`, overrides applied) and the settings read from it."""

    raw: dict
    lora: LoraSettings
    training: TrainingSettings
    group_patterns: list[list[str]]
    group_widths: list[list[int]]
    frozen_layers_allowed: bool
    source: str = "config"
    protocol: Protocol = SHEARS_PROTOCOL  # shears.protocol (or --protocol): the defaults of dropout and train_on_inputs
    quantization: QuantizationSettings | None = None  # shears.quantization; None: the float path

    @property
    def stage(self) -> dict:
        return self.raw["bootstrapNAS"]["training"]["schedule"]["list_stage_descriptions"][0]


@dataclass(frozen=True)
class AdapterGroups:
    """The groups expanded for one traced model: a readable name, the lora_A node names and the ranks of each."""

    names: list[str]
    nodes: list[list[str]]
    widths: list[list[int]]


def strictly_descending(ranks) -> bool:
    """A rank list is strictly descending: NNCF's elastic width and the nested sub-adapters both assume it."""
    return all(a > b for a, b in zip(ranks, ranks[1:]))


def _schema() -> dict:
    return json.loads(resources.files("shears_nncf").joinpath("schema/nncf_config.schema.json").read_text())


def load_config(path: str | os.PathLike, **overrides) -> ShearsConfig:
    """Read, override (CLI flags: protocol and the TRAINING_OVERRIDES) and validate a config file."""
    raw = read_json(path, what="config")
    return parse_config(raw, source=str(path), **overrides)


def parse_config(raw: dict, source: str = "config", **overrides) -> ShearsConfig:
    raw = _with_overrides(raw, overrides)
    _check_finite(raw, source)
    _validate_schema(raw, source)
    lora = raw["shears"]["lora"]
    protocol = PROTOCOLS[raw["shears"].get("protocol", SHEARS)]
    nas = raw["bootstrapNAS"]["training"]
    width = nas["elasticity"]["width"]
    stage = nas["schedule"]["list_stage_descriptions"][0]
    # The protocol gives some defaults, the fields the rest; a value the config writes wins.
    settings = fields(TrainingSettings)
    training = TrainingSettings(**{
        **{f.name: getattr(protocol, f.name) for f in settings if f.metadata.get("protocol")},
        **raw["shears"].get("training", {}),
        **{f.name: stage[f.metadata["stage_key"]] for f in settings if "stage_key" in f.metadata},
    })
    patterns, widths = width["overwrite_groups"], width["overwrite_groups_widths"]

    if len(patterns) != len(widths):
        raise ShearsError(
            f"{source}: overwrite_groups has {len(patterns)} groups but overwrite_groups_widths has {len(widths)} "
            "rank lists; give one rank list per group"
        )
    for group, ranks in zip(patterns, widths):
        if ranks[0] != lora["r"] or not strictly_descending(ranks):
            raise ShearsError(
                f"{source}: rank list {ranks} of group {group[0]!r} must be strictly descending and start at the "
                f"LoRA rank shears.lora.r={lora['r']}, e.g. {[lora['r'], lora['r'] * 3 // 4, lora['r'] // 2]}"
            )
    if training.eval_steps and not training.val_set_size:
        raise ShearsError(f"{source}: shears.training.eval_steps {training.eval_steps} evaluates the records set "
                          "aside from the training data, but val_set_size is 0; set val_set_size (e.g. 120, the "
                          "reference's) or eval_steps 0")
    longest = max(len(ranks) for ranks in widths)
    if stage.get("width_indicator", longest) < longest:
        raise ShearsError(
            f"{source}: width_indicator={stage['width_indicator']} would sample only the first "
            f"{stage['width_indicator']} ranks of each group; set it to at least {longest}"
        )
    return ShearsConfig(
        raw=raw,
        lora=LoraSettings(lora["r"], lora["alpha"], lora.get("dropout", protocol.lora_dropout), list(lora["target_modules"]),
                          lora.get("sparse_adapter", False)),
        training=training,
        group_patterns=patterns,
        group_widths=widths,
        frozen_layers_allowed=nas.get("frozen_layers_allowed", True),
        source=source,
        protocol=protocol,
        quantization=QuantizationSettings(**raw["shears"]["quantization"]) if "quantization" in raw["shears"] else None,
    )


def _check_finite(value, source: str, where: str = "") -> None:
    """JSON schema calls NaN and Infinity numbers (and Python's json reads them); a learning rate of NaN would only
    fail deep inside the optimizer. Every number of the config (flags included) must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ShearsError(f"{source}: {where} is {value}; give a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, source, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))


def _with_overrides(raw: dict, overrides: dict) -> dict:
    """Apply CLI overrides to a copy of the file, so that the saved config is the one that was trained."""
    raw = copy.deepcopy(raw)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {"protocol", *TRAINING_OVERRIDES}
    if unknown:
        raise ShearsError(f"unknown config override(s) {sorted(unknown)}")
    try:
        stage = raw["bootstrapNAS"]["training"]["schedule"]["list_stage_descriptions"][0]
    except (KeyError, IndexError, TypeError):
        stage = None  # the schema check names what is missing
    given = {name: TRAINING_OVERRIDES[name] for name in overrides if name != "protocol"}
    if isinstance(stage, dict):
        stage.update({f.metadata["stage_key"]: overrides[n] for n, f in given.items() if "stage_key" in f.metadata})
        if "epochs" in overrides:
            stage["epochs_lr"] = overrides["epochs"]  # the cosine spans the new epochs
    training_keys = {name: overrides[name] for name, f in given.items() if "stage_key" not in f.metadata}
    if training_keys and isinstance(raw.get("shears"), dict):
        raw["shears"].setdefault("training", {}).update(training_keys)
    if "protocol" in overrides and isinstance(raw.get("shears"), dict):
        raw["shears"]["protocol"] = overrides["protocol"]  # --protocol wins over the file's
    return raw


def _validate_schema(raw: dict, source: str) -> None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_schema()).iter_errors(raw))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        raise ShearsError(f"{source}: invalid at {where}: {error.message}")


def expand_groups(config: ShearsConfig, node_names: list[str]) -> AdapterGroups:
    """Expand every pattern group into one group per layer index, in layer order, against the traced node names."""
    per_layer: dict[int | None, list[tuple[str, list[str], list[int]]]] = {}
    for patterns, ranks in zip(config.group_patterns, config.group_widths):
        matched: dict[int | None, list[str]] = {}
        for pattern in patterns:
            regex = _entry_regex(pattern)
            hits = [(m, n) for n in node_names if (m := regex.fullmatch(n))]
            if not hits and is_module_name(pattern):
                adapted = sorted({_adapted_module(n) for n in node_names if _LORA_A in n})
                raise ShearsError(
                    f"{config.source}: group module {pattern!r} carries no adapter in the decoder layers of this model; "
                    f"the adapted modules (shears.lora.target_modules) are: {', '.join(adapted)}"
                )
            if not hits:
                raise ShearsError(
                    f"{config.source}: group pattern {pattern!r} matches no node of the traced model; "
                    f"closest node names: {' | '.join(closest_names(pattern, node_names))}"
                )
            for m, name in hits:
                layer = int(m.group("layer")) if "layer" in m.groupdict() else None
                matched.setdefault(layer, []).append(name)
        for layer, nodes in matched.items():
            per_layer.setdefault(layer, []).append((_group_name(layer, nodes), nodes, list(ranks)))

    names, nodes, widths = [], [], []
    for layer in sorted(per_layer, key=lambda k: -1 if k is None else k):
        for name, group_nodes, ranks in per_layer[layer]:
            names.append(name)
            nodes.append(group_nodes)
            widths.append(ranks)
    duplicated = {n for group in nodes for n in group if sum(n in g for g in nodes) > 1}
    if duplicated:
        raise ShearsError(f"{config.source}: node {sorted(duplicated)[0]!r} belongs to more than one group")
    return AdapterGroups(names, nodes, widths)


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)*")
_LORA_A = "/ModuleDict[lora_A]/"


def is_module_name(entry: str) -> bool:
    """A group entry written as a module name (`q_proj`, `self_attn.q_proj`), not as an NNCF node-name pattern."""
    return _MODULE_NAME.fullmatch(entry) is not None


def _entry_regex(entry: str) -> re.Pattern:
    """A module name matches the lora_A node of that module inside every decoder layer (the scope that follows
    the layers' ModuleList, whatever the family calls its classes); a pattern matches as written."""
    if not is_module_name(entry):
        return _pattern_regex(entry)
    scopes = "/".join(rf"[^/\[]+\[{re.escape(part)}\]" for part in entry.split("."))
    return re.compile(rf".*/ModuleList\[[^\]]+\]/[^/\[]+\[(?P<layer>\d+)\]/(?:[^/]+/)*?{scopes}"
                      rf"{re.escape(_LORA_A)}[^/]+\[default\]/linear_0")


def _adapted_module(node_name: str) -> str:
    """The attribute name of the module whose lora_A a node is (`.../Linear[q_proj]/ModuleDict[lora_A]/...` -> q_proj)."""
    return re.findall(r"\[([^\]]+)\]", node_name.split(_LORA_A)[0])[-1]


def _pattern_regex(pattern: str) -> re.Pattern:
    if pattern.count(LAYER) > 1:
        raise ShearsError(f"group pattern {pattern!r} has {LAYER} more than once")
    regex = re.escape(pattern).replace(re.escape(LAYER), r"(?P<layer>\d+)").replace(re.escape(ANY), ".*")
    return re.compile(regex)


def closest_names(pattern: str, node_names: list[str], n: int = 3) -> list[str]:
    """The node names nearest to a pattern (its wildcards read as layer 0 / nothing), for error messages."""
    probe = pattern.replace(LAYER, "0").replace(ANY, "")
    # Compare the ends of the names: patterns usually skip the wrapper prefix with {*}.
    tails = {name[-len(probe):] if probe else name: name for name in node_names}
    return [tails[t] for t in difflib.get_close_matches(probe, list(tails), n=n, cutoff=0.0)]


def _group_name(layer: int | None, nodes: list[str]) -> str:
    """E.g. '3:q_proj+k_proj+v_proj': the layer and the adapted modules (the scope just above `lora_A`)."""
    modules = [_adapted_module(n) if _LORA_A in n else n for n in nodes]
    return f"{'' if layer is None else layer}:{'+'.join(modules)}"


def nncf_config_dict(config: ShearsConfig, groups: AdapterGroups, sequence_length: int) -> dict:
    """The config file with its groups expanded into concrete node names: what NNCF builds and what is saved."""
    raw = copy.deepcopy(config.raw)
    nas = raw["bootstrapNAS"]["training"]
    nas.setdefault("progressivity_of_elasticity", ["width"])
    nas.setdefault("batchnorm_adaptation", {"num_bn_adaptation_samples": 0})
    nas["frozen_layers_allowed"] = config.frozen_layers_allowed
    nas["elasticity"].setdefault("available_elasticity_dims", ["width"])
    nas["elasticity"]["width"] = {"overwrite_groups": groups.nodes, "overwrite_groups_widths": groups.widths}
    stage = nas["schedule"]["list_stage_descriptions"][0]
    stage.setdefault("epochs_lr", stage["epochs"])
    stage.setdefault("width_indicator", max(len(w) for w in groups.widths))
    raw["input_info"] = [{"sample_size": [1, sequence_length], "type": "long", "keyword": "input_ids"}]
    return raw


def check_target_modules(model, target_modules: list[str], source: str = "config") -> None:
    """Every LoRA target must name at least one linear layer of the model (as PEFT matches it: a name suffix)."""
    from torch import nn

    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    suffixes = sorted({name.rsplit(".", 1)[-1] for name in linears})
    for target in target_modules:
        if not any(name == target or name.endswith("." + target) for name in linears):
            raise ShearsError(
                f"{source}: LoRA target module {target!r} is not a linear layer of this "
                f"{getattr(model.config, 'model_type', 'model')} model; its linear layers are: {', '.join(suffixes)}"
            )


def bundled_config(name: str) -> Path:
    """A config shipped in nncf_configs/ (e.g. 'demo/smollm2_commonsense')."""
    folder = Path(__file__).resolve().parent.parent / "nncf_configs"
    path = folder / (name if name.endswith(".json") else name + ".json")
    if not path.is_file():
        known = sorted(str(p.relative_to(folder))[:-5] for p in folder.rglob("*.json"))
        raise ShearsError(f"no bundled config {name!r}; bundled: {', '.join(known)}")
    return path
