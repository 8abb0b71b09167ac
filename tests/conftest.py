"""Shared fixtures: the embedded tokenizer, the tiny models' cut of it and one tiny random LLaMA, built once per session.

Also the session's housekeeping (no test's behaviour depends on it): the objects alive once the tests are collected,
and those alive between modules, are moved out of the garbage collector's reach (`gc.freeze`), so that the full
collections which training (accelerate) and export (optimum) ask for do not walk every imported module each time;
and under pytest-xdist (`-n 2`) each worker runs torch on one thread, with its own cache of converted documents."""

import gc
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shears_nncf.models import EMBEDDED, EMBEDDED_MODEL, cache_dir, load_model, load_tokenizer

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... in an xdist worker; None otherwise


def pytest_configure(config):
    if WORKER:
        _worker_setup()
    elif getattr(config.option, "numprocesses", None):
        # The xdist controller, before it starts the workers: the embedded models each worker's tests load are
        # converted once here, rather than by every worker at once into the same cache folder.
        _convert_embedded_models()


def _convert_embedded_models() -> None:
    import importlib.util

    from shears_nncf.models import resolve_model

    for name, embedded in EMBEDDED.items():
        if importlib.util.find_spec(embedded.package) is not None:
            resolve_model(name)


def _worker_setup() -> None:
    """One torch thread per worker (two workers on two cores; launched subprocesses inherit OMP_NUM_THREADS), and a
    cache of its own: the lm-eval task folders the tests write go there, not into the user's cache; the converted
    embedded models are the user cache's own folders, linked. The datasets library's cache
    of those task files (keyed by their paths, new in every run) goes there too, and goes away with it."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    shared = cache_dir()
    own = Path(tempfile.mkdtemp(prefix=f"shears-cache-{WORKER}-"))
    for name in EMBEDDED:
        if (shared / name / "config.json").is_file():
            (own / name).symlink_to(shared / name, target_is_directory=True)
    os.environ["SHEARS_CACHE"] = str(own)
    os.environ["HF_DATASETS_CACHE"] = str(own / "hf_datasets")  # read when `datasets` is first imported, after this
    _worker_caches.append(own)


_worker_caches: list[Path] = []


def pytest_unconfigure(config):
    for own in _worker_caches:
        shutil.rmtree(own, ignore_errors=True)


# The modules that take longest (about a minute or more each on two cores), longest first: they run first, so that
# the two xdist workers (pytest.ini: --dist loadfile, --no-loadscope-reorder) end together. Any other module runs after
# them in the usual order; a module missing from this list only runs later.
LONGEST_FIRST = (
    "test_architectures.py", "test_quantization_study.py", "test_qa_stages.py", "test_nls_vs_lora.py", "test_loglik.py",
    "test_distributed.py", "test_steps.py", "test_pipeline.py", "test_training.py", "test_gguf_tokenizer.py", "test_openvino_export.py",
    "test_paper_configs_run.py", "test_distributed_evaluate.py", "test_pruners_study.py", "test_pruners.py",
    "test_evaluation_slow.py", "test_sparsity_slow.py", "test_runtime_adapters.py",
)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering within a module, which the stable sort keeps
def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's own order is kept


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()


_last_module = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Between modules (the last one's module fixtures are gone): collect what they left, freeze what remains."""
    module = getattr(item, "module", None)
    if module is not _last_module[0]:
        _last_module[0] = module
        gc.collect()
        gc.freeze()


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


TINY_VOCAB = 1024  # ids of `tiny_tokenizer`


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (converted into the user cache on first use)."""
    return load_tokenizer(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def tiny_tokenizer(tokenizer, tmp_path_factory):
    """The tokenizer of the tiny random models: the embedded one with its first TINY_VOCAB ids alone (the special
    tokens, the 256 byte-level symbols, so it still encodes any text, and the BPE merges among them), saved and loaded
    back as a user's folder is. With all 49152 ids, the embedding and output layers were 99% of a tiny model's
    weights, which every save, load, export and tokenizer conversion paid for; no test of a tiny model depends on the
    vocabulary's size. Tests of the embedded tokenizer itself use `tokenizer`."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    tokenizer.save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = {token: i for token, i in spec["model"]["vocab"].items() if i < TINY_VOCAB}
    pairs = [m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]]
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = [m for m in pairs if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    assert all(t["id"] < TINY_VOCAB for t in spec["added_tokens"])
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    tiny = AutoTokenizer.from_pretrained(folder)
    assert len(tiny) == TINY_VOCAB and (tiny.pad_token_id, tiny.eos_token_id, tiny.bos_token_id) == \
        (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    text = "The quick brown fox: 12 apples, \u00e9t\u00e9 \U0001F642.\n"
    assert tiny.decode(tiny(text)["input_ids"]) == text and max(tiny(text)["input_ids"]) < TINY_VOCAB
    return tiny


@pytest.fixture(scope="session")
def tiny_llama_factory(tiny_tokenizer):
    """Build fresh copies of the same tiny random LLaMA: tests that modify a model get their own. Its vocabulary is
    `tiny_tokenizer`'s, or that of the `tokenizer` given (the embedded one's, for a test of the real tokenizer's
    path through a tiny model)."""

    def build(seed: int = 0, tokenizer=None) -> LlamaForCausalLM:
        tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer
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
def tiny_llama_dir(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """The tiny LLaMA saved as an HF folder (model + its tokenizer), for CLI and loading tests."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama_factory().save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
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
