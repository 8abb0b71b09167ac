"""Mixture-of-experts pruning on tiny random models: the rules the architecture matrix (test_architectures.py) does
not reach: an expert no calibration token reaches, magnitude and N:M on experts, and routers kept dense."""

import pytest
import torch
import transformers

from shears_nncf.models import architecture
from shears_nncf.sparsity.masks import magnitude_
from shears_nncf.sparsity.report import model_sparsity
from shears_nncf.sparsity.wanda import wanda_

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, vocab_size=300, num_local_experts=4, num_experts_per_tok=2)


def tiny(name: str):
    torch.manual_seed(0)
    config = {"mixtral": lambda: transformers.MixtralConfig(**TINY),
              "gpt_oss": lambda: transformers.GptOssConfig(**TINY, head_dim=16,
                                                           layer_types=["sliding_attention", "full_attention"])}[name]()
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def samples(n=2, length=32):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 300, (1, length), generator=g) for _ in range(n)]


def expert_matrices(model):
    """(name, (out, in) view) of every expert matrix of every block."""
    for i, layer in enumerate(model.model.layers):
        experts = layer.mlp.experts
        for tensor in ("gate_up_proj", "down_proj"):
            for e, w in enumerate(getattr(experts, tensor)):
                yield f"model.layers.{i}.mlp.experts.{tensor}[{e}]", (w.T if experts.is_transposed else w)


def test_an_expert_no_token_reaches_is_pruned_by_magnitude_and_named():
    model = tiny("gpt_oss")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.router.bias[3] = -1e4  # the router never picks expert 3
    magnitude_ref = tiny("gpt_oss")
    magnitude_(magnitude_ref, 0.5)
    uncalibrated = wanda_(model, samples(), 0.5)
    assert uncalibrated == [f"model.layers.{i}.mlp.experts.{t}[3]" for i in range(2) for t in ("gate_up_proj", "down_proj")]
    reference = dict(expert_matrices(magnitude_ref))
    for name, matrix in expert_matrices(model):
        if name in uncalibrated:
            assert torch.equal(matrix == 0, reference[name] == 0), name  # |W| alone
        else:
            assert not torch.equal(matrix == 0, reference[name] == 0), name  # its routed tokens moved the mask


@pytest.mark.parametrize("pruner", ["magnitude", "wanda 2:4"])
def test_magnitude_and_n_m_prune_every_expert_row_by_row_and_leave_the_router_dense(pruner):
    model = tiny("mixtral")
    router = model.model.layers[0].mlp.gate.weight.clone()
    if pruner == "magnitude":
        magnitude_(model, 0.5)
    else:
        assert wanda_(model, samples(), 0.5, "2:4") == []
    for name, matrix in expert_matrices(model):
        zeros = (matrix == 0).reshape(matrix.shape[0], -1, 4).sum(-1) if pruner != "magnitude" else (matrix == 0).sum(1)
        assert (zeros == (2 if pruner != "magnitude" else matrix.shape[1] // 2)).all(), name
    assert torch.equal(model.model.layers[0].mlp.gate.weight, router)
    stats = model_sparsity(model)
    assert stats["decoder_sparsity"] == pytest.approx(0.5)
    assert stats["dense_in_blocks"] == ["model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"]
    assert architecture(model).routers == ("mlp.gate.weight",)


def test_the_experts_grouped_implementation_is_put_back_after_wanda():
    model = tiny("mixtral")
    own = model.config._experts_implementation
    wanda_(model, samples(1), 0.5)
    assert model.config._experts_implementation == own
