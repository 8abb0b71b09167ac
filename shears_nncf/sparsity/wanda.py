"""Wanda (Sun, Liu, Bair & Kolter, 2023): prune by weight magnitude times input activation norm.

In the sequential block-by-block calibration (`blockwise.py`, Section 2.1 of Shears), Wanda's two parts:
  - statistic: ||X_j||_2^2 of every input channel j of each pruned matrix, over the calibration tokens it
    multiplies (an expert's: the tokens routed to it);
  - step: score each weight as |W_ij| * ||X_j||_2 and zero the lowest scores of each output row
    (`masks.prune_lowest_`).
A weight that received no calibration token (an expert the router never chose) is scored by |W| alone, and named in
the result; SparseGPT follows the same rule.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from .blockwise import calibrate_blockwise
from .masks import block_ratios, prune_lowest_


class SquaredNorms:
    """Per-input-channel sum of squares of a matrix's inputs over the calibration tokens.

    Each call's sum (one sample's tokens) is taken in float32, which costs ~3% of the linear itself
    where a float64 copy of the activations costs ~15%; the running total over samples is float64.
    """

    def __init__(self, in_features: int, weight: torch.Tensor):
        self.total = torch.zeros(in_features, dtype=torch.float64, device=weight.device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        self.total += x.float().square().sum(dim=0)
        self.tokens += x.shape[0]


def wanda_score(matrix: torch.Tensor, norms: SquaredNorms) -> torch.Tensor:
    """|W_ij| * ||X_j||_2, in float32 (a channel norm over many tokens can overflow fp16); |W| without a token."""
    return matrix.abs().float() * (norms.total.sqrt().float() if norms.tokens else 1.0)


@torch.no_grad()
def wanda_(model: nn.Module, samples: Iterable[torch.Tensor], ratio: float | Sequence[float],
           pattern: str = "unstructured", block_device: torch.device | None = None) -> list[str]:
    """Prune the decoder weights of `model` in place with Wanda, calibrated on `samples`, at `ratio` (or one ratio
    per block); returns the names of the matrices that received no calibration token (pruned by magnitude)."""
    ratios, nm = block_ratios(model, ratio, pattern)

    def prune(index, matrices):
        for _, matrix, norms in matrices:
            prune_lowest_(matrix, wanda_score(matrix, norms), ratios[index], nm)

    return calibrate_blockwise(model, samples, SquaredNorms, prune, block_device, desc="wanda")
