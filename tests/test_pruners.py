"""SparseGPT and OWL wired into the sequential block-by-block calibration, on the tiny LLaMA and a tiny Mixtral.

SparseGPT through `shears sparsify` (every linear and every expert pruned, 2:4 in every group), against per-layer
`sparsegpt_prune_` on Hessians this file computes itself from whole-model forwards, and against Wanda's output
error on the first block's calibration inputs; OWL's manifest against a reference computation of the outlier shares
and ratios, and the realised per-block sparsity against the allocated ratios; `shears report` showing them."""

import json

import numpy as np
import pytest
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import TINY_LLAMA
from shears_nncf.cli import main
from shears_nncf.config import bundled_config
from shears_nncf.data.calibration import calibration_samples
from shears_nncf.errors import ShearsError
from shears_nncf.models import architecture, decoder_blocks, load_model
from shears_nncf.pipeline import pipeline_settings
from shears_nncf.sparsity.api import SparseModel, sparsify
from shears_nncf.sparsity.masks import pruned_matrices
from shears_nncf.sparsity.sparsegpt import Hessian, sparsegpt_prune_
from shears_nncf.stages import STAGES

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
TEXT = " ".join(f"The {n}th sentence of a calibration text talks about {w} things." for n, w in
                zip(range(200), ["green", "quiet", "large", "small", "bright", "odd"] * 40))
CALIBRATION = ["--nsamples", "4", "--seqlen", "32"]
OUTLIER_CHANNELS = [0, 3, 1, 2]  # per block of the OWL model: input channels scaled up 30x


@pytest.fixture(scope="module")
def samples():
    torch.manual_seed(1)
    return [torch.randint(0, 1000, (1, 32)) for _ in range(4)]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "calib.txt"
    path.write_text(TEXT)
    return path


def tiny_mixtral(tokenizer):
    """As tests/test_architectures.py builds it: 2 layers, hidden 64, 4 experts, 2 per token."""
    torch.manual_seed(0)
    config = transformers.MixtralConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4,
        num_experts_per_tok=2)
    return transformers.MixtralForCausalLM(config).eval()


def owl_llama(tokenizer):
    """A 4-block tiny LLaMA whose blocks read 0, 3, 1 and 2 outlier channels (the attention's input norm scaled up),
    so that OWL's shares, hence its ratios, have a known order."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         **(TINY_LLAMA | {"num_hidden_layers": 4}))
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for block, channels in zip(model.model.layers, OUTLIER_CHANNELS):
            block.input_layernorm.weight[:channels] *= 30
    return model


@pytest.fixture(scope="module")
def folders(tiny_llama_dir, tokenizer, tiny_tokenizer, tmp_path_factory):
    found = {"llama": tiny_llama_dir}
    # The OWL model keeps the embedded tokenizer's whole vocabulary: its blocks' outlier shares fall in the order the
    # OWL test checks with the embeddings drawn for that size.
    for name, build, vocabulary in (("mixtral", tiny_mixtral, tiny_tokenizer), ("owl_llama", owl_llama, tokenizer)):
        found[name] = tmp_path_factory.mktemp(name)
        build(vocabulary).save_pretrained(found[name])
        vocabulary.save_pretrained(found[name])
    return found


def sparsify_cli(model_dir, output, calibration, *flags) -> dict:
    argv = ["sparsify", "--model", str(model_dir), "--ratio", "0.5", "--calibration", str(calibration), *CALIBRATION,
            "--output", str(output), *flags]
    assert main(argv) == 0, " ".join(argv)
    return SparseModel.read(output).manifest


def matrix_sparsities(model) -> list[dict[str, float]]:
    """Per decoder block, the fraction of zeros of every matrix a pruner prunes (each expert's on its own)."""
    arch = architecture(model)
    return [{name: (matrix == 0).double().mean().item() for name, matrix in pruned_matrices(block, arch)}
            for block in decoder_blocks(model)]


@pytest.mark.parametrize("family", ["llama", "mixtral"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_cli_sparsegpt_prunes_every_linear_and_expert(family, pattern, folders, calibration, tmp_path):
    out = tmp_path / "sparse"
    manifest = sparsify_cli(folders[family], out, calibration, "--method", "sparsegpt", "--pattern", pattern,
                            "--damping", "0.02", "--block-size", "32")
    assert (manifest["method"], manifest["method_settings"]) == ("sparsegpt", {"damping": 0.02, "block_size": 32})
    assert manifest["allocation"] == {"name": "uniform", "block_ratios": [0.5, 0.5]}
    assert manifest["calibration"]["uncalibrated"] == []
    assert manifest["sparsity"]["decoder_sparsity"] == pytest.approx(0.5, abs=1e-3)
    sparse, dense = load_model(out), load_model(folders[family])
    blocks = matrix_sparsities(sparse)
    assert all(s == pytest.approx(0.5, abs=1e-3) for block in blocks for s in block.values()), blocks
    assert sum("experts" in name for name in blocks[0]) == (8 if family == "mixtral" else 0)  # 4 x gate_up, down
    arch = architecture(sparse)
    for block, dense_block in zip(decoder_blocks(sparse), decoder_blocks(dense)):
        for (name, matrix), (_, original) in zip(pruned_matrices(block, arch), pruned_matrices(dense_block, arch)):
            kept = matrix != 0
            assert not torch.equal(matrix[kept], original[kept]), name  # the OBS update moved the weights kept
            if pattern == "2:4":
                assert ((~kept).reshape(kept.shape[0], -1, 4).sum(dim=2) == 2).all(), name


def whole_model_inputs(model, block, samples, names) -> dict[str, torch.Tensor]:
    """Each named linear's inputs over full forwards of `model` (blocks before `block` as they are now)."""
    seen = {name: [] for name in names}
    hooks = [block.get_submodule(name).register_forward_hook(
        lambda module, args, output, name=name: seen[name].append(args[0].reshape(-1, args[0].shape[-1])))
        for name in names]
    with torch.no_grad():
        for ids in samples:
            model(input_ids=ids, use_cache=False)
    for hook in hooks:
        hook.remove()
    return {name: torch.cat(rows) for name, rows in seen.items()}


@pytest.mark.parametrize("pattern, nm", [("unstructured", None), ("2:4", (2, 4))])
def test_sparsegpt_in_the_block_loop_equals_per_layer_pruning_on_hessians_of_whole_model_forwards(
        tiny_llama_factory, samples, pattern, nm):
    """In float64: block i's Hessians 2/n X^T X from full forwards of the model whose blocks before i are pruned."""
    ours, reference = tiny_llama_factory(0).double(), tiny_llama_factory(0).double()
    sparsify(ours, samples, 0.5, "sparsegpt", pattern)
    for block in reference.model.layers:
        for name, x in whole_model_inputs(reference, block, samples, LINEARS).items():
            hessian = Hessian(x.shape[1], dtype=torch.float64)
            hessian.matrix, hessian.tokens = 2 / len(x) * x.T @ x, len(x)
            sparsegpt_prune_(block.get_submodule(name).weight, hessian, 0.5, nm)
    for (name, a), (_, b) in zip(ours.model.layers.named_parameters(), reference.model.layers.named_parameters()):
        assert torch.equal(a == 0, b == 0), name
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_on_the_first_blocks_calibration_inputs_sparsegpt_changes_each_linears_output_less_than_wanda(
        tiny_llama_factory, samples):
    dense = tiny_llama_factory(0)
    inputs = whole_model_inputs(dense, dense.model.layers[0], samples, LINEARS)  # the dense block 0's own inputs
    pruned = {method: tiny_llama_factory(0) for method in ("sparsegpt", "wanda")}
    for method, model in pruned.items():
        sparsify(model, samples, 0.5, method)
    for name, x in inputs.items():
        x, weight = x.double(), dense.model.layers[0].get_submodule(name).weight.double()
        errors = {method: torch.linalg.matrix_norm(x @ (weight - model.model.layers[0].get_submodule(name).weight).T)
                  for method, model in pruned.items()}
        assert errors["sparsegpt"] < errors["wanda"], (name, errors)


def test_an_expert_no_token_reached_is_pruned_by_magnitude_and_named_as_under_wanda(tiny_tokenizer):
    """One token, two experts of four per block: the other two receive nothing and have no Hessian."""
    one_token = [torch.tensor([[17]])]
    results = {}
    for method in ("sparsegpt", "wanda", "magnitude"):
        model = tiny_mixtral(tiny_tokenizer)
        results[method] = (sparsify(model, one_token, 0.5, method)["uncalibrated"], model)
    uncalibrated = results["sparsegpt"][0]
    assert len(uncalibrated) == 2 * 2 * 2 and uncalibrated == results["wanda"][0]  # blocks x experts x matrices
    arch = architecture(results["magnitude"][1])
    matrices = {method: {f"{arch.blocks}.{i}.{name}": matrix for i, block in enumerate(decoder_blocks(model))
                         for name, matrix in pruned_matrices(block, arch)} for method, (_, model) in results.items()}
    for name in uncalibrated:
        assert torch.equal(matrices["sparsegpt"][name], matrices["magnitude"][name]), name


def reference_owl(model, samples, threshold, target, lamda):
    """The reference's first pass written out (luuyin/OWL, prune_wanda_outlier): each block's Wanda scores on the
    DENSE model's activations from full forwards, in float64; the share above M x mean in percent; its ratios."""
    shares = []
    for block in model.model.layers:
        inputs = whole_model_inputs(model, block, samples, LINEARS)
        scores = torch.cat([(block.get_submodule(name).weight.double().abs() * x.double().norm(dim=0)).flatten()
                            for name, x in inputs.items()])
        shares.append((scores > threshold * scores.mean()).sum().item() / scores.numel() * 100)
    layer = np.array(shares)
    layer = (layer - layer.min()) * (1 / (layer.max() - layer.min()) * lamda * 2)
    layer = layer - np.mean(layer) + (1 - target)
    return [s / 100 for s in shares], [1 - r for r in layer]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_owl_ratios_follow_the_outlier_shares_of_the_dense_model_and_the_pruned_blocks_follow_them(
        method, folders, calibration, tokenizer, tmp_path):
    out = tmp_path / "sparse"
    manifest = sparsify_cli(folders["owl_llama"], out, calibration, "--method", method, "--allocation", "owl",
                            "--outlier-threshold", "5", "--owl-lambda", "0.08")
    allocation = manifest["allocation"]
    assert (allocation["name"], allocation["outlier_threshold"], allocation["owl_lambda"]) == ("owl", 5.0, 0.08)
    dense = load_model(folders["owl_llama"])
    samples = calibration_samples(str(calibration), tokenizer, 4, 32, 0)  # what the command calibrated on
    shares, ratios = reference_owl(dense, samples, 5.0, 0.5, 0.08)
    assert allocation["outlier_shares"] == pytest.approx(shares, abs=1e-9)
    assert allocation["block_ratios"] == pytest.approx(ratios, abs=1e-9)
    sizes = [sum(m.numel() for _, m in pruned_matrices(block, architecture(dense))) for block in decoder_blocks(dense)]
    assert np.average(allocation["block_ratios"], weights=sizes) == pytest.approx(0.5, abs=1e-3)
    # More outlier channels, more outliers, lower sparsity: blocks by ratio are the blocks by outlier channels reversed.
    assert np.argsort(allocation["outlier_shares"]).tolist() == np.argsort(OUTLIER_CHANNELS).tolist()
    assert np.argsort(allocation["block_ratios"]).tolist() == np.argsort(OUTLIER_CHANNELS)[::-1].tolist()
    for block, ratio in zip(matrix_sparsities(load_model(out)), allocation["block_ratios"]):
        for name, sparsity in block.items():  # a row (or a column block) zeros the whole weights under ratio x size
            assert ratio - 1 / 64 <= sparsity <= ratio + 1e-9, (name, sparsity, ratio)


def test_owl_with_magnitude_needs_calibration_samples(tiny_llama_factory):
    with pytest.raises(ShearsError, match="owl .*even with magnitude.* needs calibration samples"):
        sparsify(tiny_llama_factory(0), None, 0.5, "magnitude", allocation="owl")


def test_report_shows_the_allocation_and_still_reads_folders_without_a_manifest(folders, calibration, tmp_path, capsys):
    out = tmp_path / "sparse"
    manifest = sparsify_cli(folders["owl_llama"], out, calibration, "--allocation", "owl")
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "allocated" in table and "outlier share" in table and "allocation                owl, " in table
    for ratio in manifest["allocation"]["block_ratios"]:
        assert f"{ratio:.2%}" in table
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["allocation"] == manifest["allocation"]
    assert main(["report", str(folders["llama"])]) == 0  # a plain save_pretrained folder: its weights alone
    assert "allocation" not in capsys.readouterr().out


def test_a_configs_sparsify_section_takes_the_new_settings():
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    section = {"ratio": 0.6, "method": "sparsegpt", "damping": 0.05, "block_size": 64, "allocation": "owl",
               "outlier_threshold": 7, "owl_lambda": 0.1}
    raw["shears"]["pipeline"]["sparsify"] = section
    settings = pipeline_settings(raw, model="m", data=None)
    args = STAGES["sparsify"].namespace(model="m", output="out", **settings["sparsify"])
    assert {key: getattr(args, key) for key in section} == section
    assert " ".join(STAGES["sparsify"].argv(args)) == (  # the command line `shears run` shows for the step
        "sparsify --model m --ratio 0.6 --method sparsegpt --allocation owl --damping 0.05 --block-size 64 "
        "--outlier-threshold 7.0 --owl-lambda 0.1 --output out")
