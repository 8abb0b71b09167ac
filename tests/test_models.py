import subprocess
import sys

import pytest
import torch

from shears_nncf.errors import ShearsError
from shears_nncf.models import EMBEDDED_MODEL, ARCHITECTURES, architecture, block_linears, decoder_blocks, load_model, resolve_model


def test_tiny_llama_folder_loads_with_its_blocks_and_linears(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    blocks = decoder_blocks(model)
    assert len(blocks) == 2
    linears = block_linears(blocks[0], architecture(model))
    assert all(isinstance(m, torch.nn.Linear) for m in linears.values())
    assert list(linears)[0] == "self_attn.q_proj"


def test_embedded_tokenizer_does_not_add_bos_and_ends_with_im_end(tokenizer):
    ids = tokenizer("Hello world")["input_ids"]
    assert ids == [19556, 905]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    assert tokenizer.decode(tokenizer("a 12,345 b\n")["input_ids"]) == "a 12,345 b\n"


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ShearsError, match="does not exist"):
        resolve_model(tmp_path / "nope")


def test_unknown_architecture_lists_the_known_ones(tiny_llama_factory):
    model = tiny_llama_factory()
    model.config.model_type = "gpt_neox"
    with pytest.raises(ShearsError) as e:
        architecture(model)
    assert "gpt_neox" in str(e.value) and all(k in str(e.value) for k in ARCHITECTURES)




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
