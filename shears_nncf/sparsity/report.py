"""Sparsity of a model: per decoder weight, and the paper's Table 3 figures.

Table 3 of Shears reports total parameters, non-zero parameters and the sparsity of the pruned weights: here every
matmul weight inside the decoder blocks (linears and mixture-of-experts expert tensors; routers stay dense). A saved folder is read straight from its safetensors files, one
tensor at a time; which of them are pruned is read from a weightless (meta-device) model of its config. A checkpoint may store
experts one matrix each (Mixtral's `experts.3.w1.weight`) where the model holds one 3-D tensor: the counts agree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ..errors import ShearsError
from ..models import Architecture, architecture, check_safetensors, is_matmul_weight, load_model_config, meta_model
from ..tables import text_table


def sparsity_stats(named_tensors: Iterable[tuple[str, torch.Tensor]], arch: Architecture) -> dict:
    """Count parameters and zeros; the decoder weights a sparsifier prunes (`Architecture.is_pruned`: linears and
    experts, routers left dense) are listed one by one, and the routers kept dense by name."""
    total = nonzero = pruned_total = pruned_nonzero = 0
    layers, dense = {}, []
    for name, tensor in named_tensors:
        numel, nz = tensor.numel(), int(torch.count_nonzero(tensor))
        total, nonzero = total + numel, nonzero + nz
        if arch.is_pruned(name, tensor.shape):
            pruned_total, pruned_nonzero = pruned_total + numel, pruned_nonzero + nz
            layers[name.removesuffix(".weight")] = round(1 - nz / numel, 6)
        elif arch.in_blocks(name) and is_matmul_weight(name, tensor.shape):
            dense.append(name)
    return {
        "total_parameters": total,
        "nonzero_parameters": nonzero,
        "decoder_parameters": pruned_total,
        "decoder_nonzero": pruned_nonzero,
        "decoder_sparsity": round(1 - pruned_nonzero / pruned_total, 6) if pruned_total else 0.0,
        "layers": dict(sorted(layers.items(), key=lambda item: _block_order(item[0]))),
        "dense_in_blocks": sorted(dense, key=_block_order),  # routers: kept dense on purpose
    }


def _block_order(name: str) -> tuple:
    """Block by block (files list tensors alphabetically: layers.10 before layers.2); within a block, by name."""
    match = re.search(r"\.(\d+)\.", name)
    return (int(match.group(1)) if match else -1, name)


def model_sparsity(model: nn.Module) -> dict:
    """Stats of an in-memory model (tied weights counted once, as they are saved)."""
    return sparsity_stats(((n, p.detach()) for n, p in model.named_parameters()), architecture(model))


def folder_sparsity(folder: str | Path) -> dict:
    """Stats of a saved HF model folder, read from its safetensors files."""
    from safetensors import safe_open

    folder = Path(folder)
    arch = architecture(meta_model(load_model_config(folder)))  # the layout, from the config alone (no weights)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ShearsError(f"{folder} has no .safetensors files; give a folder written by `shears sparsify` or save_pretrained")
    check_safetensors(*files)

    def tensors():
        for file in files:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)

    return sparsity_stats(tensors(), arch)


def format_table(stats: dict, allocation: dict | None = None) -> str:
    """One row per decoder block, one column per pruned weight, then the Table 3 figures and what stays dense.
    `allocation` (a `shears sparsify` folder's): each block's allocated ratio and OWL's outlier share too."""
    by_block: dict[str, dict[str, float]] = {}
    for name, sparsity in stats["layers"].items():
        prefix, weight = re.match(r"^(.*?\.\d+)\.(.+)$", name).groups()
        by_block.setdefault(prefix, {})[weight] = sparsity
    columns = list(dict.fromkeys(c for row in by_block.values() for c in row))
    header = ["block"] + [_column(c) for c in columns]
    rows = [[block] + [f"{row[c]:.2%}" if c in row else "-" for c in columns] for block, row in by_block.items()]
    if allocation:
        header.append("allocated")
        rows = [row + [f"{ratio:.2%}"] for row, ratio in zip(rows, allocation["block_ratios"])]
    if allocation and "outlier_shares" in allocation:
        header.append("outlier share")
        rows = [row + [f"{share:.3%}"] for row, share in zip(rows, allocation["outlier_shares"])]
    lines = text_table(header, rows)
    lines += [
        "",
        f"total parameters          {stats['total_parameters']:>14,}",
        f"non-zero parameters       {stats['nonzero_parameters']:>14,}",
        f"decoder weight parameters {stats['decoder_parameters']:>14,}",
        f"decoder weight non-zero   {stats['decoder_nonzero']:>14,}",
        f"decoder weight sparsity   {stats['decoder_sparsity']:>14.2%}",
    ]
    if stats["dense_in_blocks"]:
        lines.append(f"kept dense in the blocks  {', '.join(stats['dense_in_blocks'])}")
    if allocation:
        settings = "".join(f", {key} {value}" for key, value in allocation.items()
                           if key not in ("name", "block_ratios", "outlier_shares"))
        lines.append(f"allocation                {allocation['name']}{settings}")
    return "\n".join(lines)


def _column(name: str) -> str:
    """A column's short name: the linear's own name, an expert's number and projection (`experts.3.w1`)."""
    parts = name.split(".")
    return ".".join(parts[-3:]) if "experts" in parts[:-1] else parts[-1]
