"""MPT's fused attention input projection, split into q/k/v so that each gets its own adapter.

The Shears paper adds LoRA to Q, K and V of MPT separately; HF's MPT computes them with one fused
`Wqkv` linear. Replacing it by a module that holds three linears (the row blocks of `Wqkv`) and
concatenates their outputs keeps the attention code and its outputs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class QKVSplit(nn.Module):
    """Three linears whose concatenated outputs equal the fused Wqkv's."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        hidden = fused.out_features // 3
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            linear = nn.Linear(fused.in_features, hidden, bias=fused.bias is not None,
                               device=fused.weight.device, dtype=fused.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(fused.weight[i * hidden:(i + 1) * hidden])
                if fused.bias is not None:
                    linear.bias.copy_(fused.bias[i * hidden:(i + 1) * hidden])
            linear.weight.requires_grad_(fused.weight.requires_grad)
            setattr(self, name, linear)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)], dim=-1)


def split_fused_qkv(model: nn.Module) -> nn.Module:
    """Replace every block's `attn.Wqkv` in place (idempotent)."""
    for block in model.transformer.blocks:
        if isinstance(block.attn.Wqkv, nn.Linear):
            block.attn.Wqkv = QKVSplit(block.attn.Wqkv)
    return model
