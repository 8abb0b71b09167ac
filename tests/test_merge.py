"""The sub-adapter folded into the sparse base keeping every zero: W' = W + M ⊙ (s · B A)."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from shears_nncf.artifacts import read_manifest
from shears_nncf.cli import main
from shears_nncf.export.merge import merge_to_folder
from shears_nncf.export.openvino import IR_XML, ir_zero_masks
from shears_nncf.models import load_model
from shears_nncf.sparsity.masks import magnitude_
from conftest import train_tiny_super_adapter

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
R, ALPHA = 8, 16


def _batch(tokenizer):
    return tokenizer(["The sparse model answers", "A second prompt, longer than the first one"],
                     return_tensors="pt", padding=True)


def _decoder_weights(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".layers." in k and k.endswith("proj.weight")}


@pytest.fixture(scope="module")
def sparse_and_adapter(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """A 50%-sparse tiny LLaMA folder (with tokenizer) and a random LoRA adapter folder on it (B non-zero)."""
    root = tmp_path_factory.mktemp("merge")
    base = tiny_llama_factory(seed=3)
    magnitude_(base, 0.5)
    base.save_pretrained(root / "sparse")
    tiny_tokenizer.save_pretrained(root / "sparse")
    peft_model = get_peft_model(base, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    peft_model.save_pretrained(root / "adapter")
    return root / "sparse", root / "adapter"


def _reference(tiny_llama_factory, adapter, masked: bool):
    """The base with each targeted weight W replaced by W + M ⊙ (s B A) (or W + s B A), in plain torch."""
    model = tiny_llama_factory(seed=3)
    magnitude_(model, 0.5)
    lora = load_file(adapter / "adapter_model.safetensors")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, a in lora.items():
            if ".lora_A." not in key:
                continue
            path = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            delta = (ALPHA / R) * lora[key.replace("lora_A", "lora_B")] @ a
            weight = modules[path].weight
            weight += delta * (weight != 0) if masked else delta
    return model, lora


def test_masked_merge_keeps_the_zeros_and_gives_the_masked_update_logits(sparse_and_adapter, tiny_llama_factory,
                                                                         tiny_tokenizer, tmp_path):
    sparse, adapter = sparse_and_adapter
    manifest = merge_to_folder(sparse, adapter, tmp_path / "merged", {"chosen_by": "test"})
    base = _decoder_weights(load_file(sparse / "model.safetensors"))
    merged_weights = _decoder_weights(load_file(tmp_path / "merged" / "model.safetensors"))
    assert len(base) == 2 * 7
    for name, w in base.items():
        assert torch.all(merged_weights[name][w == 0] == 0), f"{name}: a pruned zero was filled"
    assert any(not torch.equal(merged_weights[n], base[n]) for n in base)  # the update did land

    merged = load_model(tmp_path / "merged")
    masked, lora = _reference(tiny_llama_factory, adapter, masked=True)
    dense, _ = _reference(tiny_llama_factory, adapter, masked=False)
    batch = _batch(tiny_tokenizer)
    with torch.no_grad():
        got, expected, unmasked = (m(**batch).logits for m in (merged, masked, dense))
        unmerged = PeftModel.from_pretrained(load_model(sparse), adapter)(**batch).logits
    torch.testing.assert_close(unmasked, unmerged, atol=1e-5, rtol=0)  # the reference scales as PEFT does
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got - unmasked).abs().max() > 1e-2  # the mask dropped a visible part of the update

    # The manifest's dropped fraction, recomputed here: ||(1-M) ⊙ ΔW|| / ||ΔW|| over all modules.
    dropped = total = 0.0
    for name, w in base.items():
        a_key = f"base_model.model.{name.removesuffix('.weight')}.lora_A.weight"
        if a_key in lora:
            delta = (ALPHA / R) * lora[a_key.replace("lora_A", "lora_B")] @ lora[a_key]
            dropped, total = dropped + float(delta[w == 0].pow(2).sum()), total + float(delta.pow(2).sum())
    assert manifest["update_dropped_by_mask"] == pytest.approx((dropped / total) ** 0.5, rel=1e-5)
    # An update unrelated to the mask loses sqrt(sparsity) of its norm: half of its squares fall on pruned positions.
    assert manifest["update_dropped_by_mask"] == pytest.approx(0.5 ** 0.5, abs=0.05)
    assert manifest["merged_modules"] == 2 * 5 and manifest["merged"] is True
    assert manifest["sparsity"]["decoder_sparsity"] >= 0.5
    assert read_manifest(tmp_path / "merged", stage="extract")["chosen_by"] == "test"


@pytest.fixture(scope="module")
def super_adapter(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """A super-adapter from `shears train`'s own code: 3 optimizer steps on a 50%-sparse tiny LLaMA."""
    folder = tmp_path_factory.mktemp("merge_nls")
    base = tiny_llama_factory(seed=4)
    magnitude_(base, 0.5)
    train_tiny_super_adapter(base, tiny_tokenizer, folder)
    return folder


def test_extract_merge_writes_a_sparse_hf_folder_that_exports_with_its_zeros(super_adapter, tmp_path):
    folder = super_adapter
    merged = tmp_path / "merged"
    assert main(["extract", "--super-adapter", str(folder / "super"), "--merge", "--model", str(folder / "sparse"),
                 "--output", str(merged)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    manifest = read_manifest(merged, stage="extract")
    assert manifest["merged"] and manifest["chosen_by"] == "heuristic" and manifest["ranks"] == [12] * 6
    assert manifest["update_dropped_by_mask"] > 0

    base = _decoder_weights(load_file(folder / "sparse" / "model.safetensors"))
    assert main(["export", "--model", str(merged), "--output", str(tmp_path / "ir")]) == 0
    export = read_manifest(tmp_path / "ir", stage="export")
    assert export["adapter"] is None and not any(layer["adapter"] for layer in export["layers"])
    masks = ir_zero_masks(tmp_path / "ir" / IR_XML)
    for name, w in base.items():
        layer = name.removesuffix(".weight")
        assert np.all(masks[layer][(w == 0).numpy()]), f"{layer}: a pruned zero is non-zero in the IR"
    assert export["sparsity"]["base_sparsity"] >= 0.5


def test_extract_merge_refuses_a_missing_base_and_writes_nothing(super_adapter, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["extract", "--super-adapter", str(super_adapter / "super"), "--merge", "--model",
                 str(tmp_path / "nowhere"), "--output", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()
