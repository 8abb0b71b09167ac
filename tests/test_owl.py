"""OWL's per-block sparsity: the outlier share of a block's Wanda scores, and the ratios derived from the
shares, checked against the formula of the reference (luuyin/OWL, lib/prune_all.py, prune_wanda_outlier)."""

import numpy as np
import pytest
import torch

from shears_nncf.errors import ShearsError
from shears_nncf.sparsity.owl import outlier_share, owl_ratios


def reference_outlier_percent(scores, m):
    """The reference's check_outlier_mean on the block's scores concatenated: percent above m x mean."""
    flat = torch.cat([s.flatten() for s in scores])
    return (flat > torch.mean(flat) * m).sum().item() / flat.numel() * 100


def reference_ratios(percents, sparsity_ratio, lamda):
    """The reference's adjustment, blocks of equal size: a keep ratio per block, sparsity = 1 - keep ratio."""
    all_layer_ratio = np.array(percents)
    all_layer_ratio = (all_layer_ratio - all_layer_ratio.min()) * (
        1 / (all_layer_ratio.max() - all_layer_ratio.min()) * lamda * 2)
    all_layer_ratio = all_layer_ratio - np.mean(all_layer_ratio) + (1 - sparsity_ratio)
    return [1 - r for r in all_layer_ratio]


def block_scores(seed, outlier_channels):
    """Wanda scores |W| * ||X_j|| of a block's linears (q, k, v, o, up, down shapes), with some input
    channels carrying large activations as in LLMs."""
    g = torch.Generator().manual_seed(seed)
    scores = []
    for out, inp in [(32, 32), (16, 32), (16, 32), (32, 32), (64, 32), (32, 64)]:
        norms = torch.rand(inp, generator=g) + 0.5
        norms[:outlier_channels] *= 30
        scores.append(torch.randn(out, inp, generator=g).abs() * norms)
    return scores


def test_outlier_share_is_the_reference_percent_as_a_fraction():
    for seed, outliers in [(0, 0), (1, 1), (2, 4)]:
        scores = block_scores(seed, outliers)
        assert outlier_share(scores, 5.0) == pytest.approx(reference_outlier_percent(scores, 5.0) / 100, abs=1e-12)
    assert outlier_share([torch.ones(99), torch.tensor([1000.0])], 5.0) == 0.01  # mean 10.99: only 1000 exceeds 54.95


def test_outlier_share_grows_with_outlier_channels():
    shares = [outlier_share(block_scores(seed, outliers), 5.0) for seed, outliers in enumerate([0, 1, 3])]
    assert shares[0] < shares[1] < shares[2]


SHARES = [0.012, 0.004, 0.030, 0.004, 0.018, 0.009]


@pytest.mark.parametrize("target, spread", [(0.5, 0.08), (0.7, 0.08), (0.6, 0.02)])
def test_reproduces_the_reference_for_equal_blocks(target, spread):
    ratios = owl_ratios(SHARES, [1000] * len(SHARES), target, spread)
    np.testing.assert_allclose(ratios, reference_ratios([100 * s for s in SHARES], target, spread), atol=1e-12)


@pytest.mark.parametrize("sizes", [[1000] * 6, [1000, 1000, 5000, 1000, 3000, 1000], [7, 1, 1, 1, 1, 20]])
def test_weighted_average_ranking_and_span(sizes):
    ratios = owl_ratios(SHARES, sizes, 0.7, 0.08)
    assert np.average(ratios, weights=sizes) == pytest.approx(0.7, abs=1e-3)
    assert np.average(ratios, weights=sizes) == pytest.approx(0.7, abs=1e-12)
    assert max(ratios) - min(ratios) == pytest.approx(2 * 0.08, abs=1e-12)
    by_share = [r for _, r in sorted(zip(SHARES, ratios))]
    assert all(a >= b for a, b in zip(by_share, by_share[1:]))  # more outliers: lower or equal sparsity
    assert ratios[1] == ratios[3]  # equal shares, equal ratios


def test_symmetric_shares_fill_target_plus_minus_lambda():
    assert owl_ratios([0.0, 0.5, 1.0], [1, 1, 1], 0.5, 0.08) == pytest.approx([0.58, 0.5, 0.42])


def test_equal_shares_give_the_target():
    assert owl_ratios([0.01] * 4, [10, 20, 30, 40], 0.6) == [0.6] * 4


def test_ratios_outside_zero_one_are_refused():
    with pytest.raises(ShearsError, match="owl_lambda"):
        owl_ratios([0.0, 1.0, 1.0, 1.0], [1, 1, 1, 1], 0.95, 0.08)  # 1.07 for the first


def test_blocks_with_outliers_get_less_sparsity():
    """From scores to ratios: the block whose inputs carry outlier channels is pruned least."""
    shares = [outlier_share(block_scores(seed, outliers), 5.0) for seed, outliers in enumerate([0, 3, 1])]
    sizes = [sum(s.numel() for s in block_scores(0, 0))] * 3
    ratios = owl_ratios(shares, sizes, 0.5)
    assert ratios[1] < ratios[2] < ratios[0]
