"""Mask-aware adapters (shears.lora.sparse_adapter): the update is M ⊙ (s B_r A_r), so the masked merge is exact."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from shears_nncf.artifacts import read_json, read_manifest
from shears_nncf.cli import main
from shears_nncf.config import bundled_config, parse_config
from shears_nncf.errors import ShearsError
from shears_nncf.models import load_model
from shears_nncf.export.openvino import OpenVINOModel
from shears_nncf.nls.folder import SuperAdapter
from shears_nncf.nls.sparse_adapter import MASK, apply_sparse_adapter, masked_delta
from shears_nncf.nls.supernet import build_supernet, load_super_adapter
from shears_nncf.sparsity.masks import magnitude_
from conftest import train_tiny_super_adapter


def _demo_config(**lora_keys):
    raw = read_json(bundled_config("demo/smollm2_commonsense"))
    raw["shears"]["lora"].update(lora_keys)
    return parse_config(raw, source="demo config")


def _batch(tokenizer):
    return tokenizer(["The sparse model answers", "A second prompt, longer than the first one"],
                     return_tensors="pt", padding=True)


def _masked_reference(model, lora: dict, rank_of: dict, scaling: float):
    """The sparse base `model` with every adapted weight W replaced by W + M ⊙ (s B_r A_r), from the factors in
    PEFT's state-dict format (nested prefixes A[:r], B[:, :r]) in plain torch."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for path, r in rank_of.items():
            a, b = lora[f"{path}.lora_A.weight"][:r], lora[f"{path}.lora_B.weight"][:, :r]
            weight = modules[path.removeprefix("base_model.model.")].weight
            weight += scaling * (b @ a) * (weight != 0)
    return model


@pytest.fixture(scope="module")
def trained(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """A super-adapter trained mask-aware for 3 steps by `shears train`'s code on a 50%-sparse tiny LLaMA."""
    folder = tmp_path_factory.mktemp("sparse_adapter")
    base = tiny_llama_factory(seed=5)
    magnitude_(base, 0.5)
    result = train_tiny_super_adapter(base, tiny_tokenizer, folder, sparse_adapter=True)
    return folder, result


def test_training_masks_the_update_and_the_forward_is_the_masked_weight(trained, tiny_tokenizer):
    folder, result = trained
    supernet = result.supernet
    lora = load_file(folder / "super" / "adapter_model.safetensors")
    trained = SuperAdapter.read(folder / "super")
    modules = trained.group_modules
    assert trained.mask_aware and trained.manifest["config"]["shears"]["lora"]["sparse_adapter"] is True
    scaling = supernet.config.lora.alpha / supernet.config.lora.r
    layers = {name: m for name, m in supernet.peft_model.named_modules() if isinstance(m, LoraLayer)}
    assert len(layers) == 2 * 5
    for ranks in (supernet.space.maximal, supernet.space.minimal):
        supernet.activate(list(ranks))
        rank_of = {path: r for group, r in zip(modules, ranks) for path in group}
        for name, module in layers.items():
            r, s = rank_of[name], module.scaling["default"]
            a, b = module.lora_A["default"], module.lora_B["default"]
            prefix = s * (b.weight[:, :r] @ a.weight[:r])
            x = torch.randn(3, a.in_features)
            # NNCF's own elastic branch (lora_A's rows, lora_B's columns) at this rank is the unmasked update ...
            torch.testing.assert_close(b(a(x)) * s, F.linear(x, prefix), atol=1e-6, rtol=1e-5)
            # ... and the masked branch applies it on the base's non-zeros only.
            delta = masked_delta(module, "default")
            pruned = module.get_base_layer().weight == 0
            assert pruned.float().mean() >= 0.5
            torch.testing.assert_close(delta, prefix * ~pruned, atol=0, rtol=0)
            assert torch.all(delta[pruned] == 0), f"{name}: the update reaches a pruned position"
            assert delta.abs().max() > 0, f"{name}: training left no update"
            assert prefix[pruned].abs().max() > 1e-4, f"{name}: B A is zero off the mask, so the mask was not tested"
        reference = _masked_reference(load_model(folder / "sparse"), lora, rank_of, scaling)
        batch = _batch(tiny_tokenizer)
        with torch.no_grad(), supernet.untraced() as model:
            got = model.eval()(**batch).logits
            expected = reference(**batch).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_extract_merge_of_a_mask_aware_super_adapter_is_exact_and_keeps_every_zero(trained, tiny_tokenizer, tmp_path,
                                                                                  capsys):
    folder, _ = trained
    super_dir, sparse = folder / "super", folder / "sparse"
    assert main(["extract", "--super-adapter", str(super_dir), "--merge", "--output", str(tmp_path / "merged")]) == 0
    assert "exact" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "merged", stage="extract")
    assert manifest["sparse_adapter"] is True and manifest["chosen_by"] == "heuristic"
    base = load_file(sparse / "model.safetensors")
    merged_weights = load_file(tmp_path / "merged" / "model.safetensors")
    adapted = [k for k in base if ".layers." in k and k.endswith("proj.weight") and not torch.equal(base[k], merged_weights[k])]
    assert len(adapted) == 2 * 5  # the update landed on every adapted module ...
    for key in adapted:
        assert torch.all(merged_weights[key][base[key] == 0] == 0), f"{key}: a pruned zero was filled"  # ... not off the mask

    # The unmerged mask-aware model, as `shears evaluate --super-adapter` loads it (NNCF's traced forward).
    supernet = load_super_adapter(super_dir)
    supernet.activate_heuristic()
    batch = _batch(tiny_tokenizer)
    with torch.no_grad():
        unmerged = supernet.peft_model.eval()(**batch).logits
        merged = load_model(tmp_path / "merged")(**batch).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)

    # The unmerged sub-adapter folder says how it was trained; loaded by plain PEFT it is not the trained model.
    assert main(["extract", "--super-adapter", str(super_dir), "--output", str(tmp_path / "sub")]) == 0
    assert "--merge" in capsys.readouterr().out
    assert read_manifest(tmp_path / "sub", stage="extract")["sparse_adapter"] is True
    with torch.no_grad():
        plain = PeftModel.from_pretrained(load_model(sparse), str(tmp_path / "sub"))
        assert (plain(**batch).logits - merged).abs().max() > 1e-3
        apply_sparse_adapter(plain)  # masked, the extracted folder is the trained model again, merged by PEFT too
        torch.testing.assert_close(plain(**batch).logits, merged, atol=1e-5, rtol=0)
        torch.testing.assert_close(plain.merge_and_unload()(**batch).logits, merged, atol=1e-5, rtol=0)

    # `shears evaluate --adapter` scores the trained (masked) model; `shears export --adapter` exports it merged, exactly.
    assert main(["evaluate", "--model", str(sparse), "--adapter", str(tmp_path / "sub"), "--tasks", "piqa", "--limit", "1",
                 "--device", "cpu"]) == 0
    assert "update masked by the base's zeros" in capsys.readouterr().out
    assert main(["export", "--model", str(sparse), "--adapter", str(tmp_path / "sub"), "--output", str(tmp_path / "ir")]) == 0
    assert "exported merged into the sparse base" in capsys.readouterr().out
    assert OpenVINOModel.read(tmp_path / "ir").manifest["adapter_merged"] is True


def test_plain_lora_with_sparse_adapter_masks_its_update(tiny_llama_factory, tiny_tokenizer):
    model = tiny_llama_factory(seed=6)
    magnitude_(model, 0.5)
    reference = copy.deepcopy(model)
    config = _demo_config(sparse_adapter=True)
    supernet = build_supernet(model, config, elastic=False)  # --lora-only: no NNCF, the full rank
    with torch.no_grad():
        for name, p in supernet.peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        lora = get_peft_model_state_dict(supernet.peft_model)
        rank_of = {k.removesuffix(".lora_A.weight"): config.lora.r for k in lora if k.endswith(".lora_A.weight")}
        reference = _masked_reference(reference, lora, rank_of, config.lora.alpha / config.lora.r)
        batch = _batch(tiny_tokenizer)
        torch.testing.assert_close(supernet.peft_model.eval()(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)
    assert not any(MASK in k for k in supernet.peft_model.state_dict())  # the mask is not saved


def test_sparse_adapter_key_is_validated():
    assert _demo_config().lora.sparse_adapter is False
    assert _demo_config(sparse_adapter=True).lora.sparse_adapter is True
    with pytest.raises(ShearsError, match=r"shears\.lora\.sparse_adapter.*boolean"):
        _demo_config(sparse_adapter="yes")
