"""Shared fixtures: one tiny random LLaMA (and the embedded tokenizer) built once per session."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shears_nncf.models import EMBEDDED_MODEL, load_model, load_tokenizer

TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (converted into the user cache on first use)."""
    return load_tokenizer(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def tiny_llama_factory(tokenizer):
    """Build fresh copies of the same tiny random LLaMA: tests that modify a model get their own."""

    def build(seed: int = 0) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **TINY_LLAMA,
        )
        return LlamaForCausalLM(config).eval()

    return build


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llama_factory, tokenizer, tmp_path_factory):
    """The tiny LLaMA saved as an HF folder (model + tokenizer), for CLI and loading tests."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama_factory().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M, loaded once for the slow integration tests."""
    return load_model(EMBEDDED_MODEL), load_tokenizer(EMBEDDED_MODEL)
