import subprocess
import sys

import pytest
import torch

from shears_nncf.errors import ShearsError
from shears_nncf.artifacts import read_json
from shears_nncf.cli import main
from shears_nncf.models import (
    Architecture, EMBEDDED_MODEL, architecture, block_linears, decoder_blocks, dtype_name, load_model, load_tokenizer,
    meta_model, parameter_count, resolve_dtype, resolve_model,
)
from shears_nncf.sparsity.wanda import wanda_


def test_tiny_llama_folder_loads_with_its_blocks_and_linears(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    blocks = decoder_blocks(model)
    assert len(blocks) == 2
    linears = block_linears(blocks[0], architecture(model))
    assert all(isinstance(m, torch.nn.Linear) for m in linears.values())
    assert architecture(model) == Architecture("model.layers", (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    ))


def test_embedded_tokenizer_does_not_add_bos_and_ends_with_im_end(tokenizer):
    ids = tokenizer("Hello world")["input_ids"]
    assert ids == [19556, 905]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    assert tokenizer.decode(tokenizer("a 12,345 b\n")["input_ids"]) == "a 12,345 b\n"


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ShearsError, match="does not exist"):
        resolve_model(tmp_path / "nope")


def test_decoder_blocks_without_nn_linear_are_a_clear_error():
    from transformers import GPT2Config

    model = meta_model(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100))  # Conv1D projections
    with pytest.raises(ShearsError, match=r"gpt2 model \(transformer\.h\) hold a matmul weight no pruner here handles: "
                                          r"attn\.c_attn\.weight \(64, 192\) in a Conv1D"):
        architecture(model)




@pytest.mark.slow
def test_loaded_model_has_correct_rope_buffers_when_nncf_torch_is_imported_first():
    """With nncf.torch imported before transformers, the loader left RoPE's inv_freq uninitialised."""
    script = (
        "import shears_nncf.nncf_torch, torch\n"
        "from shears_nncf.models import load_model\n"
        "for _ in range(2):\n"
        f"    rotary = load_model({EMBEDDED_MODEL!r}).model.rotary_emb\n"
        "    expected, _ = rotary.compute_default_rope_parameters(rotary.config)\n"
        "    assert torch.equal(rotary.inv_freq, expected), rotary.inv_freq\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_dtype_auto_is_fp32_on_cpu_and_bf16_or_fp16_on_cuda(monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert [resolve_dtype(name, "cpu") for name in ("bf16", "fp16", "fp32")] == [torch.bfloat16, torch.float16, torch.float32]
    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
        assert resolve_dtype("auto", torch.device("cuda")) == expected
    with pytest.raises(ShearsError, match="auto, bf16, fp16, fp32"):
        resolve_dtype("int8", "cpu")
    assert dtype_name(torch.bfloat16) == "bf16"


def test_meta_model_counts_the_parameters_without_weights(tiny_llama_factory):
    model = tiny_llama_factory()
    meta = meta_model(model.config)
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert parameter_count(model.config) == sum(p.numel() for p in model.parameters())


def test_sparsify_loads_in_the_asked_dtype_and_records_it(tiny_llama_dir, tmp_path):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "sparse"
    assert main(["sparsify", "--model", str(tiny_llama_dir), "--ratio", "0.5", "--calibration", str(calibration),
                 "--nsamples", "2", "--seqlen", "16", "--dtype", "bf16", "--output", str(out)]) == 0
    manifest = read_json(out / "shears_manifest.json")
    assert (manifest["dtype"], manifest["blockwise_offload"]) == ("bf16", False)
    assert load_model(out, dtype=torch.bfloat16).model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_wanda_with_a_block_device_prunes_exactly_as_in_place(tiny_llama_factory):
    samples = [torch.randint(0, 1000, (1, 24)) for _ in range(3)]
    in_place, blockwise = tiny_llama_factory(), tiny_llama_factory()
    wanda_(in_place, samples, 0.5)
    wanda_(blockwise, samples, 0.5, block_device=torch.device("cpu"))
    for (name, a), b in zip(in_place.named_parameters(), blockwise.parameters()):
        assert torch.equal(a, b), name


def test_a_model_folder_without_a_tokenizer_is_a_clear_error(tiny_llama_factory, tmp_path):
    tiny_llama_factory().save_pretrained(tmp_path / "no_tokenizer")
    with pytest.raises(ShearsError, match="has no tokenizer"):
        load_tokenizer(tmp_path / "no_tokenizer")
