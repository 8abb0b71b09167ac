"""One loader for a base model with its adapter: `bench`, `evaluate`, `export` and `extract --merge` give the same
logits for the same sparse base and sub-adapter, plain, mask-aware and on MPT (whose q/k/v are split for the adapter
and fused again when merged)."""

import json

import numpy as np
import pytest
import torch
from transformers import MptConfig, MptForCausalLM

from conftest import train_tiny_super_adapter
from shears_nncf.bench import eager_model
from shears_nncf.cli import main
from shears_nncf.config import bundled_config, parse_config
from shears_nncf.evaluation.stage import _load
from shears_nncf.export.adapted import load_adapted
from shears_nncf.models import load_model
from shears_nncf.nls.folder import TrainingInputs
from shears_nncf.sparsity.masks import magnitude_
from shears_nncf.stages import STAGES

IDS = [[5, 17, 301, 42, 9, 77, 120, 33]]


def _logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits.float().numpy()


def _ir_logits(folder) -> np.ndarray:
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(folder, ov_config={"INFERENCE_PRECISION_HINT": "f32"}, compile=True)
    ids = torch.tensor(IDS)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy()


def _tiny_mpt_super_adapter(tokenizer, folder, sparse_adapter: bool):
    """The paper's MPT config's groups on a 50%-sparse tiny MPT, trained 2 steps by `shears train`'s code."""
    from shears_nncf.nls import training

    torch.manual_seed(0)
    base = MptForCausalLM(MptConfig(vocab_size=len(tokenizer), d_model=64, n_heads=4, n_layers=2, max_seq_len=128,
                                    expansion_ratio=2, pad_token_id=tokenizer.pad_token_id)).eval()
    magnitude_(base, 0.5)
    base.save_pretrained(folder / "sparse")
    tokenizer.save_pretrained(folder / "sparse")
    raw = json.loads(bundled_config("mpt7b_gsm8k_50").read_text())
    raw["shears"]["protocol"] = "shears"
    raw["shears"]["lora"]["sparse_adapter"] = sparse_adapter
    raw["shears"].pop("pipeline", None)
    config = parse_config(raw, batch_size=2, grad_accum=1, lr=5e-2, precision="fp32")
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": (ids := torch.randint(5, 300, (12,), generator=g).tolist()), "attention_mask": [1] * 12,
                 "labels": ids} for _ in range(8)]
    training.train(load_model(folder / "sparse"), tokenizer, config, examples, folder / "super", max_steps=2,
                   save_steps=100, inputs=TrainingInputs(base_model=str(folder / "sparse")))


@pytest.fixture(scope="module", params=["llama", "llama-mask-aware", "mpt-mask-aware"])
def adapted_folder(request, tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    mask_aware = request.param.endswith("mask-aware")
    if request.param.startswith("mpt"):
        _tiny_mpt_super_adapter(tiny_tokenizer, folder, mask_aware)
    else:
        base = tiny_llama_factory(seed=3)
        magnitude_(base, 0.5)
        train_tiny_super_adapter(base, tiny_tokenizer, folder, sparse_adapter=mask_aware)
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", "heuristic",
                 "--output", str(folder / "sub")]) == 0
    return folder, mask_aware


def test_every_stage_loads_the_same_model_for_the_same_base_and_sub_adapter(adapted_folder):
    folder, mask_aware = adapted_folder
    sparse, sub = folder / "sparse", folder / "sub"
    reference = _logits(load_adapted(sparse, sub).model)

    evaluate_args = STAGES["evaluate"].namespace(model=str(sparse), adapter=str(sub), device="cpu")
    np.testing.assert_allclose(_logits(_load(evaluate_args)[0]), reference, atol=1e-6)
    np.testing.assert_allclose(_logits(eager_model(sub).model), reference, atol=1e-6)  # bench's eager row
    # The super-adapter's heuristic sub-network, scored without extracting it, is the same model too.
    super_args = STAGES["evaluate"].namespace(super_adapter=str(folder / "super"), subnet="heuristic", device="cpu")
    np.testing.assert_allclose(_logits(_load(super_args)[0]), reference, atol=1e-5)

    assert main(["export", "--model", str(sparse), "--adapter", str(sub), "--output", str(folder / "ir")]) == 0
    np.testing.assert_allclose(_ir_logits(folder / "ir"), reference, atol=1e-4)

    # The masked merge is the trained model exactly when the adapter was trained mask-aware; a plain adapter's
    # update also had a part on pruned positions, which the merge drops (the manifest says how much).
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", "heuristic", "--merge",
                 "--output", str(folder / "merged")]) == 0
    merged = _logits(load_model(folder / "merged"))
    if mask_aware:
        np.testing.assert_allclose(merged, reference, atol=1e-5)
    else:
        assert np.abs(merged - reference).max() > 1e-4
    names = {name for name, _ in load_model(folder / "merged").named_parameters()}
    if folder_type(folder) == "mpt":  # saved in HF's layout: the merged q/k/v rows fused into Wqkv again
        assert "transformer.blocks.0.attn.Wqkv.weight" in names and not any("q_proj" in n for n in names)


def folder_type(folder) -> str:
    return json.loads((folder / "sparse" / "config.json").read_text())["model_type"]


def test_giving_both_an_adapter_and_a_super_adapter_is_one_error(adapted_folder, capsys):
    folder, _ = adapted_folder
    assert main(["evaluate", "--model", str(folder / "sparse"), "--adapter", str(folder / "sub"),
                 "--super-adapter", str(folder / "super"), "--tasks", "piqa", "--limit", "1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_lora_training_is_an_adapter_and_a_super_adapter_is_refused_as_one(tiny_llama_factory, tiny_tokenizer,
                                                                             tmp_path, capsys):
    """`shears train --lora-only` writes a PEFT LoRA folder: it loads as --adapter, as the trained model. A
    super-adapter holds many sub-adapters: given as --adapter it is one line naming the ways to take one."""
    base = tiny_llama_factory(seed=3)
    magnitude_(base, 0.5)
    lora = train_tiny_super_adapter(base, tiny_tokenizer, tmp_path / "lora", lora_only=True)
    trained = _logits(lora.supernet.peft_model.eval())
    np.testing.assert_allclose(_logits(load_adapted(tmp_path / "lora" / "sparse", tmp_path / "lora" / "super").model),
                               trained, atol=1e-6)

    train_tiny_super_adapter(tiny_llama_factory(seed=3), tiny_tokenizer, tmp_path / "nls")
    assert main(["evaluate", "--model", str(tmp_path / "nls" / "sparse"), "--adapter", str(tmp_path / "nls" / "super"),
                 "--tasks", "piqa", "--limit", "1"]) == 2
    assert "is a super-adapter" in capsys.readouterr().err
