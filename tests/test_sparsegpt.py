"""SparseGPT for one weight matrix: agreement with a plain rendering of the paper's Algorithm 1, lower
output error than Wanda and magnitude on its calibration inputs, exact sparsity and patterns."""

import pytest
import torch
from torch import nn

from shears_nncf.errors import ShearsError
from shears_nncf.sparsity.masks import prune_lowest_
from shears_nncf.sparsity.sparsegpt import Hessian, sparsegpt_prune_


def calibration(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """LLM-like inputs: correlated channels (so the OBS update has something to use) of very different
    scales (so Wanda's score differs from magnitude's), float64."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.eye(features, dtype=torch.float64) + 0.4 * torch.randn(features, features, generator=g,
                                                                         dtype=torch.float64)
    scales = torch.exp(torch.randn(features, generator=g, dtype=torch.float64))
    return (torch.randn(tokens, features, generator=g, dtype=torch.float64) @ mixing) * scales


def random_weight(rows: int, cols: int, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def hessian_of(x: torch.Tensor, dtype=torch.float64) -> Hessian:
    h = Hessian(x.shape[-1], dtype=dtype)
    h.add(x)
    return h


def reference_sparsegpt(W, H, ratio, nm, block_size, damping):
    """Algorithm 1 column by column, in float64, with the inverse Hessian of the free columns written out:
    once columns 0..j-1 are fixed, [H_F^-1] is inv(H[j:, j:]) (no Cholesky factor, no lazy batching).
    Zeroing w_j (the OBS step) moves every free weight of the row by -(w_j / [H_F^-1]_jj) * [H_F^-1]_j,:."""
    W, H = W.double().clone(), H.double().clone()
    rows, cols = W.shape
    for j in range(cols):
        if H[j, j] == 0:
            H[j, j] = 1
            W[:, j] = 0
    H += damping * H.diagonal().mean() * torch.eye(cols, dtype=torch.float64)
    inverses = [torch.linalg.inv(H[j:, j:]) for j in range(cols)]
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for j in range(cols):
        if nm is None and j % block_size == 0:  # choose the block's mask from the weights as they are now
            width = min(block_size, cols - j)
            saliency = torch.stack([W[:, j + c] ** 2 / inverses[j + c][0, 0] for c in range(width)], dim=1)
            chosen = saliency.flatten().argsort()[: int(rows * width * ratio)]
            block_mask = torch.zeros(rows * width, dtype=torch.bool)
            block_mask[chosen] = True
            mask[:, j:j + width] = block_mask.reshape(rows, width)
        if nm is not None and j % nm[1] == 0:
            n, m = nm
            saliency = torch.stack([W[:, j + c] ** 2 / inverses[j + c][0, 0] for c in range(m)], dim=1)
            for r in range(rows):
                mask[r, j + saliency[r].argsort()[:n]] = True
        inverse = inverses[j]
        pruned = torch.where(mask[:, j], 0.0, W[:, j])
        W[:, j:] -= torch.outer((W[:, j] - pruned) / inverse[0, 0], inverse[0])
        W[:, j] = pruned
    return W, mask


@pytest.mark.parametrize("cols, block_size, ratio, nm", [
    (48, 16, 0.5, None),  # three blocks: the lazy updates between blocks matter
    (50, 16, 0.3, None),  # a short last block, a ratio not dividing the block
    (48, 128, 0.5, None),  # one block
    (48, 16, 0.5, (2, 4)),
    (48, 16, 0.5, (4, 8)),
])
def test_matches_column_by_column_reference(cols, block_size, ratio, nm):
    x = calibration(200, cols)
    x[:, 5] = 0  # a dead input
    W = random_weight(12, cols)
    h = hessian_of(x)
    expected, mask = reference_sparsegpt(W, h.matrix, ratio, nm, block_size, 0.01)
    sparsegpt_prune_(W, h, ratio, nm, block_size=block_size, damping=0.01)
    assert torch.equal(W == 0, mask)
    torch.testing.assert_close(W, expected, rtol=1e-6, atol=1e-9)


def output_error(W, pruned, x):
    return torch.linalg.matrix_norm(x @ W.T - x @ pruned.T).item()


@pytest.mark.parametrize("ratio, nm", [(0.5, None), (0.5, (2, 4))])
def test_lower_output_error_than_wanda_and_magnitude(ratio, nm):
    x = calibration(512, 256)
    W = random_weight(32, 256)
    sparsegpt = W.clone()
    sparsegpt_prune_(sparsegpt, hessian_of(x), ratio, nm)
    wanda, magnitude = W.clone(), W.clone()
    prune_lowest_(wanda, W.abs() * x.norm(dim=0), ratio, nm)
    prune_lowest_(magnitude, W.abs(), ratio, nm)
    for other in (sparsegpt, wanda, magnitude):
        assert (other == 0).sum().item() == W.numel() * ratio
    errors = {name: output_error(W, p, x) for name, p in
              [("sparsegpt", sparsegpt), ("wanda", wanda), ("magnitude", magnitude)]}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


@pytest.mark.parametrize("rows, cols, block_size, ratio", [(32, 256, 128, 0.5), (10, 100, 32, 0.3), (16, 96, 64, 0.7)])
def test_exact_count_of_zeros(rows, cols, block_size, ratio):
    W = random_weight(rows, cols)
    sparsegpt_prune_(W, hessian_of(calibration(300, cols)), ratio, block_size=block_size)
    widths = [min(block_size, cols - start) for start in range(0, cols, block_size)]
    assert (W == 0).sum().item() == sum(int(rows * w * ratio) for w in widths)
    if rows * block_size * ratio == int(rows * block_size * ratio) and cols % block_size == 0:
        assert (W == 0).sum().item() == int(rows * cols * ratio)


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8)])
def test_every_group_of_m_holds_n_zeros(n, m):
    W = random_weight(24, 128)
    sparsegpt_prune_(W, hessian_of(calibration(300, 128)), n / m, (n, m), block_size=32)
    assert ((W.reshape(24, -1, m) == 0).sum(dim=2) == n).all()


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_dead_inputs_are_zeroed(nm):
    x = calibration(300, 64)
    x[:, [3, 17, 40]] = 0
    W = random_weight(16, 64)
    sparsegpt_prune_(W, hessian_of(x), 0.5, nm, block_size=32)
    assert torch.isfinite(W).all()
    assert (W[:, [3, 17, 40]] == 0).all()
    assert (W == 0).sum().item() == W.numel() // 2


def test_writes_into_a_transposed_view():
    x = calibration(300, 64)
    stored = random_weight(64, 16)  # (in, out), as e.g. a Conv1D or a fused expert stores it
    view = stored.T
    assert not view.is_contiguous()
    expected = view.clone()
    sparsegpt_prune_(expected, hessian_of(x), 0.5, block_size=32)
    sparsegpt_prune_(view, hessian_of(x), 0.5, block_size=32)
    assert torch.equal(stored.T, expected)


def test_float32_weight_with_float64_hessian():
    """The computation runs in the Hessian's precision; only the result is rounded to the weight's."""
    x = calibration(300, 64)
    w32 = random_weight(16, 64, dtype=torch.float32)
    w64 = w32.double()
    sparsegpt_prune_(w32, hessian_of(x), 0.5, block_size=32)
    sparsegpt_prune_(w64, hessian_of(x), 0.5, block_size=32)
    assert w32.dtype == torch.float32
    assert torch.equal(w32, w64.float())


def test_hessian_is_twice_the_mean_of_x_xT_however_batched():
    x = calibration(40, 8)
    h = Hessian(8, dtype=torch.float64)
    h.add(x[:10].reshape(2, 5, 8))  # (batch, sequence, features)
    h.add(x[10:])
    torch.testing.assert_close(h.matrix, 2 / 40 * x.T @ x)
    assert h.tokens == 40


def test_fed_by_a_forward_hook_on_a_linear():
    """The way a caller uses it: accumulate each linear's inputs with a hook, then prune its weight."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=False)
    h = Hessian(64)
    handle = linear.register_forward_hook(lambda module, args, output: h.add(args[0]))
    x = calibration(4 * 50, 64).float().reshape(4, 50, 64)
    with torch.no_grad():
        dense = linear(x)
    handle.remove()
    wanda = linear.weight.detach().clone()
    prune_lowest_(wanda, wanda.abs() * x.reshape(-1, 64).norm(dim=0), 0.5, None)
    sparsegpt_prune_(linear.weight, h, 0.5)
    assert linear.weight.requires_grad and (linear.weight == 0).sum().item() == 32 * 64 // 2
    with torch.no_grad():
        assert (linear(x) - dense).norm() < (x @ wanda.T - dense).norm()


def test_nm_needs_divisible_sizes():
    with pytest.raises(ShearsError, match="divisible by 4"):
        sparsegpt_prune_(random_weight(4, 30), hessian_of(calibration(50, 30)), 0.5, (2, 4))
    with pytest.raises(ShearsError, match="block_size"):
        sparsegpt_prune_(random_weight(4, 32), hessian_of(calibration(50, 32)), 0.5, (2, 4), block_size=30)
