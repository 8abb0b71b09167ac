"""Sparsity of a model: per decoder linear, and the paper's Table 3 figures.

Table 3 of Shears reports total parameters, non-zero parameters and the sparsity of the pruned
(decoder linear) weights. A saved folder is read straight from its safetensors files, one
tensor at a time; where its decoder linears are is read from a weightless (meta-device) model of its config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ..errors import ShearsError
from ..models import Architecture, architecture, check_safetensors, load_model_config, meta_model
from ..tables import text_table


def sparsity_stats(named_tensors: Iterable[tuple[str, torch.Tensor]], arch: Architecture) -> dict:
    """Count parameters and zeros; decoder linears (the ones a sparsifier prunes) are listed one by one."""
    linear = re.compile(rf"^{re.escape(arch.blocks)}\.(\d+)\.({'|'.join(map(re.escape, arch.linears))})\.weight$")
    total = nonzero = linear_total = linear_nonzero = 0
    layers = {}  # (block index, position in the block) -> (name, sparsity): files list tensors alphabetically
    for name, tensor in named_tensors:
        numel, nz = tensor.numel(), int(torch.count_nonzero(tensor))
        total, nonzero = total + numel, nonzero + nz
        if match := linear.match(name):
            linear_total, linear_nonzero = linear_total + numel, linear_nonzero + nz
            order = (int(match.group(1)), arch.linears.index(match.group(2)))
            layers[order] = (name.removesuffix(".weight"), round(1 - nz / numel, 6))
    return {
        "total_parameters": total,
        "nonzero_parameters": nonzero,
        "decoder_linear_parameters": linear_total,
        "decoder_linear_nonzero": linear_nonzero,
        "decoder_linear_sparsity": round(1 - linear_nonzero / linear_total, 6) if linear_total else 0.0,
        "layers": dict(layers[order] for order in sorted(layers)),
    }


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


def print_report(folder: str | Path, as_json: bool = False) -> None:
    stats = folder_sparsity(folder)
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    print(format_table(stats))


def format_table(stats: dict) -> str:
    """One row per decoder block, one column per linear, then the Table 3 figures."""
    by_block: dict[str, dict[str, float]] = {}
    for name, sparsity in stats["layers"].items():
        prefix, linear = re.match(r"^(.*?\.\d+)\.(.+)$", name).groups()
        by_block.setdefault(prefix, {})[linear] = sparsity
    columns = list(dict.fromkeys(c for row in by_block.values() for c in row))
    header = ["block"] + [c.split(".")[-1] for c in columns]
    rows = [[block] + [f"{row[c]:.2%}" if c in row else "-" for c in columns] for block, row in by_block.items()]
    lines = text_table(header, rows)
    lines += [
        "",
        f"total parameters          {stats['total_parameters']:>14,}",
        f"non-zero parameters       {stats['nonzero_parameters']:>14,}",
        f"decoder linear parameters {stats['decoder_linear_parameters']:>14,}",
        f"decoder linear non-zero   {stats['decoder_linear_nonzero']:>14,}",
        f"decoder linear sparsity   {stats['decoder_linear_sparsity']:>14.2%}",
    ]
    return "\n".join(lines)


def report_command(args) -> None:
    """`shears report`."""
    print_report(args.folder, as_json=args.json)
