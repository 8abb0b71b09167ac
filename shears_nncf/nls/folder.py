"""The super-adapter folder that `shears train` writes, read without a model or NNCF.

The folder is a PEFT LoRA folder at the largest rank (`adapter_config.json`, `adapter_model.safetensors`),
the expanded NNCF config whose `overwrite_groups` name each group's `lora_A` nodes, and a manifest. Search,
extraction and evaluation all learn the groups, their rank lists and the adapted modules from here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ..artifacts import MANIFEST, read_json, read_manifest
from ..config import parse_config
from ..errors import ShearsError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
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


def super_adapter_groups(folder: str | os.PathLike) -> tuple[list[str], list[list[int]], list[list[str]], dict]:
    """Group names, rank lists and adapted module paths per group of a `shears train` folder, and its manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder, stage="train")
    if manifest.get("lora_only"):
        raise ShearsError(f"{folder} is a plain LoRA (--lora-only): it has no sub-adapters to choose; use it as it is")
    # Read from the files alone: knowing the groups needs neither a model nor NNCF.
    width = read_json(folder / manifest.get("nncf_config", "nncf_config.json"), what="NNCF config")["bootstrapNAS"]["training"]["elasticity"]["width"]
    modules = [[module_path(node) for node in group] for group in width["overwrite_groups"]]
    return list(manifest["groups"]), [list(w) for w in width["overwrite_groups_widths"]], modules, manifest


def trained_mask_aware(manifest: dict) -> bool:
    """Whether a `shears train` manifest's super-adapter was trained with its update masked by the base's zeros
    (`shears.lora.sparse_adapter`, read through the config parser so that its default holds for older folders)."""
    return parse_config(manifest["config"], source="the super-adapter manifest's config").lora.sparse_adapter


def sub_adapter_mask_aware(adapter: str | os.PathLike) -> bool:
    """Whether a PEFT folder is a sub-adapter `shears extract` took from a mask-aware super-adapter: its trained
    model masks the update by the base's zeros, which plain PEFT does not (a folder without our manifest: no)."""
    manifest = Path(adapter) / MANIFEST
    return manifest.is_file() and bool(read_json(manifest, what="adapter manifest").get("sparse_adapter"))


def adapter_parameters(super_adapter: str | os.PathLike, group_modules: Sequence[Sequence[str]]) -> list[int]:
    """Adapter parameters per unit of rank of every group: sum over its modules of in + out features.

    The cost of a configuration is then `sum(r_g * per_rank[g])`, computed without touching the model."""
    from safetensors import safe_open

    with safe_open(str(Path(super_adapter) / ADAPTER_WEIGHTS), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    return [sum(shapes[f"{m}.lora_A.weight"][1] + shapes[f"{m}.lora_B.weight"][0] for m in modules) for modules in group_modules]
