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


def train_tiny_super_adapter(base, tokenizer, folder, sparse_adapter: bool = False, lora_only: bool = False):
    """`shears train`'s own code for 3 optimizer steps on `base`, saved (with its tokenizer, as `shears sparsify`
    writes it) to folder/sparse; the super-adapter goes to folder/super. Returns the training result.
    `sparse_adapter` trains it mask-aware (shears.lora.sparse_adapter); `lora_only` a plain LoRA."""
    from shears_nncf.artifacts import read_json
    from shears_nncf.config import bundled_config, parse_config
    from shears_nncf.nls import training
    from shears_nncf.nls.folder import TrainingInputs

    base.save_pretrained(folder / "sparse")
    tokenizer.save_pretrained(folder / "sparse")
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(12):
        ids = torch.randint(5, 300, (12,), generator=g).tolist()
        examples.append({"input_ids": ids, "attention_mask": [1] * 12, "labels": ids})
    path = bundled_config("demo/smollm2_commonsense")
    raw = read_json(path, what="config")
    if sparse_adapter:
        raw["shears"]["lora"]["sparse_adapter"] = True
    config = parse_config(raw, source=str(path), batch_size=2, grad_accum=1, lr=5e-2)
    return training.train(base, tokenizer, config, examples, folder / "super", max_steps=3, save_steps=100,
                          lora_only=lora_only, inputs=TrainingInputs(base_model=str(folder / "sparse")))



def interrupt_training_at(monkeypatch, micro_batch: int = 7):
    """Make NLS training (float or quantization-aware: both step through NLSTrainer) stop with a KeyboardInterrupt
    at its `micro_batch`-th micro-batch, as a user's Ctrl-C would; the default 7 falls in optimizer step 4 of
    2 micro-batches each, after a checkpoint at step 2. Returns the original step, to put back for the resume."""
    from shears_nncf.nls import training

    original, calls = training.NLSTrainer.training_step, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == micro_batch:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(training.NLSTrainer, "training_step", interrupted)
    return original


def save_sparse_tiny_llama(tiny_llama_factory, tokenizer, folder):
    """A fresh tiny LLaMA, 50% magnitude-pruned, saved with its tokenizer to `folder` as `shears sparsify` writes
    it (weights and tokenizer); returns the pruned model."""
    from shears_nncf.sparsity.masks import magnitude_

    model = tiny_llama_factory()
    magnitude_(model, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
