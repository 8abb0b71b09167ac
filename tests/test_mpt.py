"""MPT end to end: the fused Wqkv is split into attn.q_proj/k_proj/v_proj wherever a model meets an adapter,
so a tiny MPT goes through sparsify, train, extract, export and evaluate, and its extracted adapter loads in
unmodified PEFT."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import MptConfig, MptForCausalLM

from shears_nncf.artifacts import read_json
from shears_nncf.cli import main
from shears_nncf.config import bundled_config
from shears_nncf.models import load_model
from shears_nncf.nls.mpt import prepare_for_adapters, split_fused_qkv
from shears_nncf.nls.supernet import load_super_adapter

TINY_MPT = dict(d_model=64, n_heads=4, n_layers=2, max_seq_len=512, expansion_ratio=2)


def _tiny_mpt(vocab_size: int, **ids) -> MptForCausalLM:
    torch.manual_seed(0)
    return MptForCausalLM(MptConfig(vocab_size=vocab_size, **TINY_MPT, **ids)).eval()


def test_split_keeps_the_fused_outputs_and_names_the_projections_of_the_attention():
    model = _tiny_mpt(1000)
    input_ids = torch.randint(0, 1000, (2, 9))
    with torch.no_grad():
        fused = model(input_ids=input_ids).logits
        split_fused_qkv(model)
        split_fused_qkv(model)  # idempotent
        split = model(input_ids=input_ids).logits
    torch.testing.assert_close(split, fused, rtol=1e-6, atol=1e-6)
    names = {name for name, _ in model.named_parameters()}
    assert "transformer.blocks.0.attn.q_proj.weight" in names and "transformer.blocks.1.attn.v_proj.weight" in names
    assert not any("Wqkv" in name for name in names)


def test_preparation_leaves_other_architectures_alone(tiny_llama_factory):
    model = tiny_llama_factory()
    before = [name for name, _ in model.named_modules()]
    assert prepare_for_adapters(model) is model
    assert [name for name, _ in model.named_modules()] == before


@pytest.fixture(scope="module")
def mpt_run(tiny_tokenizer, tmp_path_factory):
    """A tiny MPT folder, calibration text, training and test records, and a train config made from the paper's."""
    folder = tmp_path_factory.mktemp("mpt")
    ids = dict(pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
               bos_token_id=tiny_tokenizer.bos_token_id)
    _tiny_mpt(len(tiny_tokenizer), **ids).save_pretrained(folder / "model")
    tiny_tokenizer.save_pretrained(folder / "model")
    (folder / "calibration.txt").write_text("Twelve apples and three pears make fifteen pieces of fruit. " * 80)
    # Short answers (BoolQ's 32 new tokens, not GSM8K's 256) keep the generation of the evaluations short.
    records = [{"instruction": f"Is {n} even? Answer format: true/false", "input": "",
                "output": f"the correct answer is {str(n % 2 == 0).lower()}", "answer": str(n % 2 == 0).lower()}
               for n in range(8)]
    (folder / "train.json").write_text(json.dumps(records))
    (folder / "test.json").write_text(json.dumps(records[:2]))
    config = json.loads(bundled_config("mpt7b_gsm8k_50").read_text())
    config["shears"]["protocol"] = "shears"  # no validation records carved from 8 training records
    config["shears"]["training"].update(batch_size=2, grad_accum=1, max_length=64)
    config["shears"].pop("pipeline")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_tiny_mpt_goes_through_every_stage_and_its_sub_adapter_loads_in_plain_peft(mpt_run):
    f = mpt_run
    assert main(["sparsify", "--model", str(f / "model"), "--ratio", "0.5", "--calibration", str(f / "calibration.txt"),
                 "--nsamples", "2", "--seqlen", "32", "--output", str(f / "sparse")]) == 0
    assert read_json(f / "sparse" / "config.json")["model_type"] == "mpt"  # the sparse folder stays HF's MPT layout
    assert main(["train", "--config", str(f / "config.json"), "--model", str(f / "sparse"), "--data", str(f / "train.json"),
                 "--max-steps", "2", "--output", str(f / "super")]) == 0
    assert main(["extract", "--super-adapter", str(f / "super"), "--subnet", "heuristic", "--output", str(f / "sub")]) == 0

    patterns = read_json(f / "sub" / "adapter_config.json")["rank_pattern"]
    assert any(key.endswith(r"attn\.q_proj") for key in patterns) and not any("Wqkv" in key for key in patterns)
    assert set(patterns.values()) == {24}  # the heuristic: the middle of [32, 24, 16]

    # The extracted adapter in unmodified PEFT on the split sparse model = the super-adapter's heuristic sub-network.
    input_ids = torch.randint(0, 1000, (2, 12))
    supernet = load_super_adapter(f / "super")
    supernet.activate_heuristic()
    with torch.no_grad(), supernet.untraced():
        expected = supernet.peft_model.eval()(input_ids=input_ids).logits
    plain = PeftModel.from_pretrained(prepare_for_adapters(load_model(f / "sparse")), str(f / "sub")).eval()
    with torch.no_grad():
        got = plain(input_ids=input_ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    assert main(["evaluate", "--model", str(f / "sparse"), "--adapter", str(f / "sub"), "--data", str(f / "test.json"),
                 "--tasks", "boolq", "--batch-size", "2", "--output", str(f / "eval_torch.json")]) == 0
    assert main(["export", "--model", str(f / "sparse"), "--adapter", str(f / "sub"), "--output", str(f / "ov")]) == 0
    layers = [layer["layer"] for layer in read_json(f / "ov" / "shears_manifest.json")["layers"]]
    assert any("attn.q_proj.lora_A" in name for name in layers)
    assert main(["evaluate", "--openvino", str(f / "ov"), "--data", str(f / "test.json"), "--tasks", "boolq",
                 "--batch-size", "2", "--output", str(f / "eval_ov.json")]) == 0
    assert read_json(f / "eval_ov.json")["tasks"]["boolq"]["count"] == 2
