"""MPT's fused attention input projection, split into q/k/v so that each gets its own adapter.

The Shears paper adds LoRA to Q, K and V of MPT separately; HF's MPT computes them with one fused
`Wqkv` linear. As the reference's `split_qkv_preprocess.py` does, the row blocks of `Wqkv` become three
linears of the attention module itself (`attn.q_proj`, `attn.k_proj`, `attn.v_proj`), so adapters are
named `...attn.q_proj` as in the reference; the attention code still calls `self.Wqkv(x)`, which now
concatenates their outputs (same result as the fused linear).

The split is applied wherever a model is loaded to carry an adapter (training, search, evaluation with
an adapter, export), through `prepare_for_adapters`; a merged model is fused back (`fuse_qkv`). Sparse model folders stay unsplit (HF's MPT layout):
Wanda prunes `Wqkv` row by row, which is the same as pruning the three row blocks.
"""

from __future__ import annotations

import torch
from torch import nn

QKV = ("q_proj", "k_proj", "v_proj")


class FusedQKV:
    """What `attn.Wqkv(x)` computes after the split: the concatenated outputs of the attention's q, k, v.

    Not an nn.Module (it would register the attention module inside itself); it looks the projections
    up at call time, so LoRA layers that PEFT puts in their place are called too."""

    def __init__(self, attn: nn.Module):
        self.attn = attn

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self.attn, name)(hidden_states) for name in QKV], dim=-1)


def split_fused_qkv(model: nn.Module) -> nn.Module:
    """Replace every block's `attn.Wqkv` by `attn.q_proj/k_proj/v_proj`, in place (idempotent)."""
    for block in model.transformer.blocks:
        attn = block.attn
        fused = attn._modules.get("Wqkv")
        if fused is None:
            continue  # already split
        hidden = fused.out_features // 3
        for i, name in enumerate(QKV):
            linear = nn.Linear(fused.in_features, hidden, bias=fused.bias is not None,
                               device=fused.weight.device, dtype=fused.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(fused.weight[i * hidden:(i + 1) * hidden])
                if fused.bias is not None:
                    linear.bias.copy_(fused.bias[i * hidden:(i + 1) * hidden])
            linear.weight.requires_grad_(fused.weight.requires_grad)
            setattr(attn, name, linear)
        del attn.Wqkv
        attn.Wqkv = FusedQKV(attn)
    return model


def fuse_qkv(model: nn.Module) -> nn.Module:
    """The inverse of `split_fused_qkv`: q/k/v back into one `attn.Wqkv` linear (HF's MPT layout), in place.

    What a merged model is saved as: its q/k/v rows, updated by the merge, are the row blocks of Wqkv again."""
    if getattr(model.config, "model_type", None) != "mpt":
        return model
    for block in model.transformer.blocks:
        attn = block.attn
        if isinstance(attn._modules.get("Wqkv"), nn.Linear):
            continue  # never split
        parts = [attn._modules.pop(name) for name in QKV]
        fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=parts[0].bias is not None,
                          device=parts[0].weight.device, dtype=parts[0].weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in parts]))
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([p.bias for p in parts]))
        del attn.Wqkv  # the FusedQKV callable
        attn.Wqkv = fused
    return model


def prepare_for_adapters(model: nn.Module) -> nn.Module:
    """Architecture-specific preparation before adapters are added or loaded (MPT: split Wqkv; others: none)."""
    if getattr(model.config, "model_type", None) == "mpt":
        split_fused_qkv(model)
    return model
