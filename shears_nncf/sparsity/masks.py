"""Which weights to zero, given a score per weight: the step every sparsifier shares.

Wanda and magnitude differ only in the score (`|W| * ||X_j||_2` versus `|W|`); both compare
scores within each output row and zero the lowest ones, either `int(in_features * ratio)` of
the whole row (unstructured) or N of every M consecutive inputs (N:M, the pattern sparse
tensor cores accelerate). Every pruner takes one ratio for all decoder blocks, or one per block
(OWL's allocation).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ShearsError
from ..models import Architecture, architecture, block_experts, block_linears, decoder_blocks

NM_PATTERNS = ("2:4", "4:8")
PATTERNS = ("unstructured",) + NM_PATTERNS


def parse_pattern(pattern: str, ratio: float) -> tuple[int, int] | None:
    """(N, M) for an N:M pattern, None for unstructured; checks the ratio agrees with the pattern."""
    if not 0.0 < ratio < 1.0:
        raise ShearsError(f"ratio {ratio} is outside (0, 1); give the fraction of weights to zero, e.g. 0.5")
    if pattern == "unstructured":
        return None
    if pattern not in NM_PATTERNS:
        raise ShearsError(f"unknown sparsity pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
    n, m = map(int, pattern.split(":"))
    if abs(ratio - n / m) > 1e-9:
        raise ShearsError(f"pattern {pattern} zeros {n} of every {m} weights: its ratio is {n / m}, not {ratio}")
    return n, m


def block_ratios(model: nn.Module, ratio: float | Sequence[float],
                 pattern: str) -> tuple[list[float], tuple[int, int] | None]:
    """One ratio per decoder block (`ratio` for every block, or one each) and the N:M pattern, checked together."""
    count = len(decoder_blocks(model))
    ratios = [ratio] * count if isinstance(ratio, (int, float)) else list(ratio)
    if len(ratios) != count:
        raise ShearsError(f"{len(ratios)} ratios for {count} decoder blocks; give one ratio, or one per block")
    patterns = [parse_pattern(pattern, r) for r in ratios]  # each ratio checked against the pattern
    return ratios, patterns[0]


def prune_lowest_(weight: torch.Tensor, score: torch.Tensor, ratio: float, nm: tuple[int, int] | None) -> None:
    """Zero, in place, the lowest-scoring weights of each output row (or of each group of M in a row)."""
    rows, cols = weight.shape
    if nm is None:
        k = int(cols * ratio)
        lowest = torch.topk(score, k, dim=1, largest=False).indices  # ~1.5x faster than a full sort
        mask = torch.zeros_like(weight, dtype=torch.bool).scatter_(1, lowest, True)
    else:
        n, m = nm
        if cols % m:
            raise ShearsError(f"a {n}:{m} pattern needs input features divisible by {m}; this layer has {cols}")
        groups = score.reshape(rows, cols // m, m)
        lowest = torch.topk(groups, n, dim=2, largest=False).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, lowest, True).reshape(rows, cols)
    weight.masked_fill_(mask, 0)


def pruned_matrices(block: nn.Module, arch: Architecture) -> list[tuple[str, torch.Tensor]]:
    """Every (out, in) matrix a sparsifier prunes in one block, by name: each linear's weight, and each expert's
    slice of a 3-D expert tensor (`mlp.experts.gate_up_proj[3]`), a view that prunes the expert in place."""
    matrices = [(name, linear.weight) for name, linear in block_linears(block, arch).items()]
    for name, tensor in block_experts(block, arch).items():
        matrices += [(f"{name}[{e}]", matrix) for e, matrix in enumerate(tensor.matrices())]
    return matrices


@torch.no_grad()
def magnitude_(model: nn.Module, ratio: float | Sequence[float], pattern: str = "unstructured") -> None:
    """The calibration-free baseline: score = |W|, same row groups as Wanda, every pruned decoder weight."""
    ratios, nm = block_ratios(model, ratio, pattern)
    arch = architecture(model)
    for block, block_ratio in zip(decoder_blocks(model), ratios):
        for _, matrix in pruned_matrices(block, arch):
            prune_lowest_(matrix, matrix.abs(), block_ratio, nm)
