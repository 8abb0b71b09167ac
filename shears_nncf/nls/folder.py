"""The super-adapter folder that `shears train` writes, and the one object that reads it back.

The folder is a PEFT LoRA folder at the largest rank (`adapter_config.json`, `adapter_model.safetensors`),
the expanded NNCF config whose `overwrite_groups` name each group's `lora_A` nodes, the training log and a
manifest. Search, extraction, evaluation and the pipeline learn the groups, their rank lists, the adapted
modules, the protocol and the training settings from `SuperAdapter.read`: no other module reads its files.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from ..artifacts import StageFolder, read_json, write_json, write_manifest
from ..config import ShearsConfig, parse_config
from ..errors import ShearsError
from ..protocol import PROTOCOLS, Protocol
from .space import SearchSpace

STAGE = "train"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
NNCF_CONFIG_FILE = "nncf_config.json"
TRAINING_LOG = "training_log.json"
# A quantization-aware super-adapter (shears.quantization) holds, instead of PEFT's files, the state of NNCF's LoRA
# fake quantizers (adapters and quantization ranges, by module path) and the calibration token ids they were built
# on: nls/qa_training.py writes and reloads it.
QA_STATE = "qa_state.safetensors"
_NODE_SCOPE = re.compile(r"\[([^\]]+)\]")


def module_path(node_name: str) -> str:
    """NNCF node name of a `lora_A` linear -> the PEFT state-dict prefix of its adapted module.

    `PeftModelForCausalLM/LoraModel[base_model]/.../LlamaDecoderLayer[0]/LlamaAttention[self_attn]/Linear[q_proj]/
    ModuleDict[lora_A]/NNCFLinear[default]/linear_0` -> `base_model.model.model.layers.0.self_attn.q_proj`
    (the attribute names in brackets, up to the adapted module)."""
    scope = node_name.split("/ModuleDict[lora_A]")[0]
    parts = _NODE_SCOPE.findall(scope)
    if "/ModuleDict[lora_A]" not in node_name or not parts:
        raise ShearsError(f"node {node_name!r} is not the lora_A linear of a PEFT LoRA module")
    return ".".join(parts)


@dataclass(frozen=True)
class TrainingInputs:
    """What a training read, as its folder's manifest records it beside what the training did (`training.run_record`):
    the base, the config file, the records (`data`, `tasks`, `limit`: what the search leaves out of its validation),
    how many examples were cut, the protocol and the precision the model was loaded in."""

    base_model: str | None = None  # None: a library call that named none (the folder then needs --model to load)
    config_file: str | None = None
    data: str | None = None
    tasks: list[str] | None = None
    limit: int | None = None
    truncated_examples: int = 0
    protocol: str | None = None
    dtype: str | None = None


class SuperAdapter(StageFolder):
    """A `shears train` folder, read without a model or NNCF."""

    STAGE = STAGE

    @classmethod
    def read(cls, folder: str | os.PathLike, quantization_aware: bool = False) -> "SuperAdapter":
        """`quantization_aware`: the caller also takes a quantization-aware super-adapter (search, extract, export);
        the others (PyTorch evaluation, merging) run PEFT on a float one and refuse it."""
        trained = super().read(folder)
        for key in ("base_model", "config", "groups"):
            if key not in trained.manifest:
                raise ShearsError(f"{folder}: its manifest has no {key!r}; it was written by an older shears, "
                                  "train it again")
        if trained.quantization and not quantization_aware:
            raise ShearsError(f"{folder} is a quantization-aware super-adapter ({trained.quantization['mode']}): take "
                              "a sub-adapter with `shears extract` (or `shears search`) and deploy it as one IR with "
                              "`shears export --adapter`, then evaluate that IR (--openvino); evaluating it in PyTorch "
                              "is not supported yet")
        from ..models import check_safetensors

        check_safetensors(trained.weights_file)
        return trained

    @staticmethod
    def write(folder: Path, inputs: TrainingInputs, run: dict, nncf_config: dict, training_log: list) -> None:
        """The files besides PEFT's own (which `save_super_adapter` writes): the expanded NNCF config, the
        training log, and the manifest last: what the training read (`inputs`) and what it did (`run`)."""
        write_json(folder / NNCF_CONFIG_FILE, nncf_config)
        write_json(folder / TRAINING_LOG, training_log)
        write_manifest(folder, {"stage": STAGE, **asdict(inputs), **run, "nncf_config": NNCF_CONFIG_FILE})

    # What it was trained from and how.
    @property
    def base_model(self) -> str:
        return self.manifest["base_model"]

    @cached_property
    def config(self) -> ShearsConfig:
        return parse_config(self.manifest["config"], source=f"{self.path} (its manifest's config)")

    @property
    def quantization(self) -> dict | None:
        """Quantization-aware (shears.quantization): its mode, group_size, ratio, mask_update and calibration."""
        return self.manifest.get("quantization")

    @property
    def lora_only(self) -> bool:
        return bool(self.manifest.get("lora_only"))

    @property
    def mask_aware(self) -> bool:
        """Trained with its update masked by the base's zeros (`shears.lora.sparse_adapter`)."""
        return self.config.lora.sparse_adapter

    @property
    def protocol(self) -> Protocol:
        """The protocol it was trained under, by the name its manifest records (else its config's)."""
        recorded = self.manifest.get("protocol")
        return PROTOCOLS[recorded] if recorded else self.config.protocol

    @property
    def training_data(self) -> dict:
        """Which records it saw: `data`, `tasks`, `limit` and `seed`, as `load_training_records` takes them."""
        m = self.manifest
        return {"data": m.get("data"), "tasks": m.get("tasks"), "limit": m.get("limit"),
                "seed": m.get("settings", {}).get("seed")}

    @property
    def max_length(self) -> int:
        return self.config.training.max_length

    @property
    def search_settings(self) -> dict:
        """NNCF's `bootstrapNAS.search` section of its config (population, num_evals, aspiration points...)."""
        return self.config.raw["bootstrapNAS"].get("search", {})

    @property
    def summary(self) -> dict:
        """The training's headline figures."""
        return {k: self.manifest.get(k) for k in ("optimizer_steps", "examples", "first_loss", "last_loss",
                                                   "train_seconds")}

    # Its files.
    @property
    def weights_file(self) -> Path:
        return self.path / (QA_STATE if self.quantization else ADAPTER_WEIGHTS)

    @cached_property
    def nncf_config(self) -> dict:
        return read_json(self.path / self.manifest.get("nncf_config", NNCF_CONFIG_FILE), what="NNCF config")

    @property
    def training_log(self) -> list:
        return read_json(self.path / TRAINING_LOG, what="training log")

    # Its groups.
    def _width(self) -> dict:
        if self.lora_only:
            raise ShearsError(f"{self.path} is a plain LoRA (--lora-only): it has no sub-adapters to choose; "
                              "use it as it is")
        return self.nncf_config["bootstrapNAS"]["training"]["elasticity"]["width"]

    @property
    def group_names(self) -> list[str]:
        return list(self.manifest["groups"])

    @property
    def group_nodes(self) -> list[list[str]]:
        """Each group's `lora_A` NNCF node names, as the model was traced when it was trained."""
        return [list(group) for group in self._width()["overwrite_groups"]]

    @property
    def group_modules(self) -> list[list[str]]:
        """Each group's adapted modules, as PEFT state-dict prefixes."""
        return [[module_path(node) for node in group] for group in self.group_nodes]

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.of(self._width()["overwrite_groups_widths"], self.group_names)

    def parameters_per_rank(self) -> list[int]:
        """Adapter parameters per unit of rank of every group: sum over its modules of in + out features.

        The cost of a configuration is then `sum(r_g * per_rank[g])`, computed without touching the model."""
        from safetensors import safe_open

        with safe_open(str(self.weights_file), framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        # PEFT's lora_A.weight (r, in) and lora_B.weight (out, r) by module prefix; a quantization-aware QA_STATE holds
        # each quantizer's lora_A and lora_B, the same shapes, by the path of its linear (below PEFT's two wrappers).
        key = ((lambda m, name: f"{m.removeprefix('base_model.model.')}.{name}") if self.quantization
               else (lambda m, name: f"{m}.{name}.weight"))
        return [sum(shapes[key(m, "lora_A")][1] + shapes[key(m, "lora_B")][0] for m in modules)
                for modules in self.group_modules]
