"""SparseGPT (Frantar & Alistarh, 2023, Algorithm 1) for one weight matrix.

Wanda only chooses which weights to zero. SparseGPT also moves the error of each zeroed weight onto the
weights not yet visited in its row, so that the layer's output on the calibration inputs changes as
little as possible: the Optimal Brain Surgeon update under the layer-wise loss ||WX - W'X||^2, whose
Hessian H = 2 X^T X is the same for every row. Columns are visited left to right, so the inverse
Hessian of the columns still free is always a trailing block of one upper Cholesky factor of H^-1,
computed once: row i of that factor, divided by its diagonal d_i, is the update that column i's error
makes to the later columns, and d_i^2 is the OBS denominator [H_F^-1]_ii.

`sparsegpt_` prunes a model in the sequential block-by-block calibration Wanda uses (`blockwise.py`): a
`Hessian` per pruned matrix is fed that matrix's inputs (a linear's through a forward hook, an expert's over the
tokens routed to it), then `sparsegpt_prune_` runs once per matrix, before the block's outputs are recomputed
from the pruned and updated weights.

Settings, as config keys (with the reference implementation's names, IST-DASLab/sparsegpt `fasterprune`):
  `damping`    (reference `percdamp`, default 0.01): added to H's diagonal as a fraction of its mean
               diagonal, the paper's "1% of the average diagonal value", so that H is invertible;
  `block_size` (reference `blocksize`, default 128): columns pruned together; the unstructured mask is
               chosen per block of columns ("adaptive mask selection") and the updates to columns after
               the block are applied once per block ("lazy batch updates").
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import ShearsError
from .blockwise import calibrate_blockwise
from .masks import block_ratios, prune_lowest_


class Hessian:
    """H = (2/n) * sum over calibration tokens of x x^T, for one linear with `in_features` inputs.

    Kept as a running average (scale the old sum by n/(n+m), add the new batch scaled by sqrt(2/(n+m)))
    as the reference does, so that no sum over many tokens grows large. n counts tokens, where the reference
    counts sequences: the scale of H changes neither the mask nor the update (both are invariant to
    H -> cH), and counting tokens makes H independent of how the calibration set is batched.
    float32 is the reference's precision; pass float64 for an exact computation on small layers.
    """

    def __init__(self, in_features: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        self.matrix = torch.zeros(in_features, in_features, device=device, dtype=dtype)
        self.tokens = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Accumulate a batch of the linear's inputs, shape (..., in_features)."""
        x = x.reshape(-1, x.shape[-1]).to(self.matrix)
        total = self.tokens + x.shape[0]
        self.matrix.mul_(self.tokens / total)
        x = x * math.sqrt(2 / total)
        self.matrix.addmm_(x.T, x)
        self.tokens = total


@torch.no_grad()
def sparsegpt_prune_(weight: torch.Tensor, hessian: Hessian, ratio: float, nm: tuple[int, int] | None = None,
                     block_size: int = 128, damping: float = 0.01) -> None:
    """Prune the (out, in) `weight` in place with SparseGPT and update its remaining entries.

    `hessian` holds the inputs of this very linear (left unchanged); the computation runs in its dtype
    and the result is written back into `weight` in the weight's own dtype, even when `weight` is a
    non-contiguous view (e.g. the transpose of a stored matrix).

    Where the zeros go:
      - unstructured (`nm` None): within each block of `block_size` columns, the int(out * width * ratio)
        weights of lowest w^2 / d^2 over ALL rows together, w as updated by the blocks before. The count
        of zeros is exact per block of columns (the matrix's is the sum over its blocks: int(out * in *
        ratio) when out * block_size * ratio is whole and the last block's share is too), but it varies
        from row to row, unlike Wanda's int(in * ratio) zeros in every row. The reference zeros every
        entry <= the k-th smallest score, i.e. k + 1 per block; this zeros exactly k.
      - N:M (`nm` = (N, M)): the N of lowest w^2 / d^2 in each group of M consecutive inputs of each
        row, chosen when the group is reached, i.e. after the updates from the columns before it.
    Inputs never active in calibration (H_ii == 0) carry no information: their weights are zeroed and
    H_ii set to 1 so that H stays invertible; these zeros count towards the ratio, being the cheapest.
    """
    cols = weight.shape[1]
    if nm is not None and (cols % nm[1] or block_size % nm[1]):
        raise ShearsError(f"a {nm[0]}:{nm[1]} pattern needs input features ({cols}) and block_size ({block_size}) "
                          f"divisible by {nm[1]}")
    H = hessian.matrix.clone()
    W = weight.to(H, copy=True, memory_format=torch.contiguous_format)
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damping * H.diagonal().mean())
    # Upper Cholesky factor U of H^-1: row i of U holds (scaled) the inverse Hessian of columns i..end
    # once columns 0..i-1 are fixed, so one factorisation serves every step.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = W[:, start:end]  # a view: updates land in W
        Ublock = U[start:end, start:end]
        d = Ublock.diagonal()
        mask = torch.zeros(block.shape, dtype=torch.bool, device=W.device)
        if nm is None:
            saliency = (block.square() / d.square()).flatten()
            k = int(saliency.numel() * ratio)
            mask.view(-1)[torch.topk(saliency, k, largest=False).indices] = True
        errors = torch.zeros_like(block)
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                saliency = block[:, i:i + m].square() / d[i:i + m].square()
                mask.scatter_(1, i + torch.topk(saliency, n, dim=1, largest=False).indices, True)
            w = block[:, i]
            q = w.masked_fill(mask[:, i], 0)
            errors[:, i] = (w - q) / d[i]
            block[:, i:] -= errors[:, i, None] * Ublock[i, i:]  # OBS update of the block's later columns
            block[:, i] = q  # exact zeros, not w minus its own correction
        W[:, end:] -= errors @ U[start:end, end:]  # lazy batch update of the columns after the block
    weight.copy_(W)


def block_hessian(in_features: int, weight: torch.Tensor) -> Hessian:
    """A matrix's Hessian in float32 (the reference's precision) for an fp16, bf16 or fp32 model; in float64 for a
    float64 one, where the exact computation is wanted."""
    return Hessian(in_features, weight.device, torch.promote_types(weight.dtype, torch.float32))


@torch.no_grad()
def sparsegpt_(model: nn.Module, samples: Iterable[torch.Tensor], ratio: float | Sequence[float],
               pattern: str = "unstructured", block_size: int = 128, damping: float = 0.01,
               block_device: torch.device | None = None) -> list[str]:
    """Prune the decoder weights of `model` in place with SparseGPT, calibrated on `samples`, at `ratio` (or one
    ratio per block). As with Wanda, a matrix that received no calibration token (an expert the router never
    chose) has no Hessian to prune by: it is pruned by |W| and its name returned."""
    ratios, nm = block_ratios(model, ratio, pattern)

    def prune(index, matrices):
        for _, matrix, hessian in matrices:
            if hessian.tokens:
                sparsegpt_prune_(matrix, hessian, ratios[index], nm, block_size=block_size, damping=damping)
            else:
                prune_lowest_(matrix, matrix.abs(), ratios[index], nm)

    return calibrate_blockwise(model, samples, block_hessian, prune, block_device, desc="sparsegpt")
