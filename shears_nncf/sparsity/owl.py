"""OWL (Yin et al., 2024, "Outlier Weighed Layerwise Sparsity"): a sparsity ratio per decoder block.

LLMs have a few input channels with very large activations, and the weights that read them matter most;
their share differs between blocks. OWL measures it per block as the layer outlier distribution (LOD):
the share of the block's Wanda scores |W_ij| * ||X_j||_2 above M times their mean. Blocks rich in
outliers are pruned less, poor ones more, so that the decoder as a whole keeps the target sparsity.

In the reference (luuyin/OWL, `prune_wanda_outlier`) the shares are measured in a first pass over the
DENSE model (each block calibrated on the dense blocks' outputs); the second pass then prunes block by
block with Wanda at that block's ratio. Here the second pass prunes with any method (`api.sparsify`), and
the shares count every pruned matrix of a block, experts included (`outlier_shares`). Settings as config
keys: `outlier_threshold` (M, the reference's `Hyper_m`, paper default 5) and `owl_lambda` (lambda, the
reference's `Lamda`, default 0.08).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import ShearsError
from .blockwise import calibrate_blockwise
from .wanda import SquaredNorms, wanda_score


@torch.no_grad()
def outlier_share(scores: Iterable[torch.Tensor], threshold: float) -> float:
    """Share (a fraction in [0, 1]; the reference reports percent) of the scores strictly above `threshold`
    times their mean, the scores being those of all of one block's prunable weights taken together."""
    scores = list(scores)
    total = sum(s.numel() for s in scores)
    mean = sum(s.sum(dtype=torch.float64).item() for s in scores) / total
    return sum((s > threshold * mean).sum().item() for s in scores) / total


def owl_ratios(shares: Sequence[float], sizes: Sequence[int], target: float, spread: float = 0.08) -> list[float]:
    """One sparsity ratio per block, from its outlier share; `sizes` counts each block's prunable weights.

    As in the reference, the shares are mapped linearly onto m_i in [0, 2 * spread] (lowest share 0,
    highest 2 * spread), and block i gets target + mean(m) - m_i: more outliers, lower sparsity, and the
    block with most outliers exactly 2 * spread below the one with fewest. The ratios thus fill
    [target + mean(m) - 2 * spread, target + mean(m)], which is [target - spread, target + spread] when
    mean(m) = spread (shares symmetric about their midpoint). mean(m) is weighted by `sizes`, so that the
    ratios average to exactly `target` over the decoder's prunable weights (blocks of equal size: the
    reference's plain mean). Equal shares give every block the target (the
    reference divides by zero there). A ratio outside (0, 1) is refused rather than clipped (the reference
    sets a ratio <= 0 to 0.01), since clipping would move the average off the target.
    """
    low, high = min(shares), max(shares)
    if high == low:
        return [target] * len(shares)
    mapped = [(s - low) / (high - low) * 2 * spread for s in shares]
    mean = sum(m * n for m, n in zip(mapped, sizes)) / sum(sizes)
    ratios = [target + mean - m for m in mapped]
    if not all(0 < r < 1 for r in ratios):
        raise ShearsError(f"OWL ratios around {target} with owl_lambda {spread} leave (0, 1): "
                          f"{min(ratios):.3f}..{max(ratios):.3f}; use a smaller owl_lambda")
    return ratios


@torch.no_grad()
def outlier_shares(model: nn.Module, samples: Iterable[torch.Tensor], threshold: float,
                   block_device: torch.device | None = None) -> tuple[list[float], list[int]]:
    """OWL's first pass, over the dense model (Wanda's calibration loop, pruning nothing): per decoder block, the
    outlier share of the Wanda scores of all its pruned matrices together, and how many weights they hold."""
    shares, sizes = [], []

    def measure(index, matrices):
        shares.append(outlier_share([wanda_score(matrix, norms) for _, matrix, norms in matrices], threshold))
        sizes.append(sum(matrix.numel() for _, matrix, _ in matrices))

    calibrate_blockwise(model, samples, SquaredNorms, measure, block_device, desc="owl")
    return shares, sizes
