"""A LoRA adapter folded into its sparse base *keeping every zero of the base*: W' = W + M ⊙ ΔW.

ΔW = s · B A is PEFT's own delta weight (s = alpha_i / r_i, which for a Shears sub-adapter is the
super-adapter's alpha / r_max; see `sub_adapter.py`), and M is the base's non-zero mask. PEFT's
`merge_and_unload` adds the dense ΔW and so fills every pruned position; masking it keeps the merged
model exactly as sparse as the base, so it deploys as one sparse model with no adapter matmuls.
The masked merge equals the unmerged model only where ΔW is already zero off the mask; otherwise it drops
(1 - M) ⊙ ΔW, and the manifest says how much, as ||(1 - M) ⊙ ΔW|| / ||ΔW|| over all merged modules: a
cheap measure of how far the merge moves the model. For scale: an update unrelated to the mask loses
sqrt(sparsity) of its norm (0.71 at 50% sparsity). A super-adapter trained with `shears.lora.sparse_adapter`
(SQFT's SparsePEFT, `nls/sparse_adapter.py`) is the model W + M ⊙ ΔW in training, search and evaluation, so
for it the merge is exact (the manifest's `sparse_adapter` says so) and the dropped part of ΔW is the part
that never reached the trained model.
"""

from __future__ import annotations

import math
import os

import torch

from ..artifacts import atomic_output_dir, read_manifest, write_manifest
from ..errors import ShearsError
from ..models import resolve_model
from ..nls.mpt import fuse_qkv
from ..sparsity.report import model_sparsity
from .adapted import load_adapted
from .sub_adapter import STAGE


@torch.no_grad()
def merge_masked(peft_model) -> tuple[torch.nn.Module, dict]:
    """Fold every LoRA module of `peft_model` into its base weight, masked by the weight's non-zeros.

    Returns the plain transformers model (adapters removed) and how much of the update the mask dropped."""
    from peft.tuners.lora import LoraLayer

    total_sq = dropped_sq = 0.0
    layers = {}
    for name, module in peft_model.base_model.model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        weight = module.get_base_layer().weight
        keep = weight != 0  # taken once, before anything is added
        delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
        off_mask = float(delta[~keep].pow(2).sum())
        total = float(delta.pow(2).sum())
        weight.add_(delta * keep)
        total_sq, dropped_sq = total_sq + total, dropped_sq + off_mask
        layers[name] = round(math.sqrt(off_mask / total), 6) if total else 0.0
    return peft_model.unload(), {
        "merged_modules": len(layers),
        "update_dropped_by_mask": math.sqrt(dropped_sq / total_sq) if total_sq else 0.0,
        "update_dropped_by_mask_per_module": layers,
    }


def merge_adapted(peft_model) -> tuple[torch.nn.Module, dict]:
    """`merge_masked`, then the plain model in its HF layout (MPT: the merged q/k/v rows fused into Wqkv again)."""
    merged, stats = merge_masked(peft_model)
    return fuse_qkv(merged).eval(), stats


def merge_to_folder(base: str | os.PathLike, adapter: str | os.PathLike, output: str | os.PathLike,
                    manifest: dict | None = None, overwrite: bool = False) -> dict:
    """Load the sparse `base` HF model with the PEFT `adapter`, fold it in masked, and save an HF folder to `output`."""
    adapted = load_adapted(base, adapter)
    merged, stats = merge_adapted(adapted.model)
    record = {"stage": STAGE, **(manifest or {}), "merged": True, "base_model": str(base),
              "base_model_path": resolve_model(base), **stats, "sparsity": model_sparsity(merged)}
    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        merged.save_pretrained(tmp)
        adapted.tokenizer.save_pretrained(tmp)
        write_manifest(tmp, record)
    return record


def merged_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a folder `shears extract --merge` wrote (how much of the update the mask dropped...)."""
    manifest = read_manifest(folder, stage=STAGE)
    if not manifest.get("merged"):
        raise ShearsError(f"{folder} is a sub-adapter folder, not a merged model; merge it with `shears extract --merge`")
    return manifest
