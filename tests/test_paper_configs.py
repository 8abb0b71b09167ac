"""Every shipped paper config against the reference's own values, and what the paper configs need: C4
calibration drawn as Wanda draws it, and a dry run that sizes LLaMA-7B's training from its config alone.

The reference values are read from IntelLabs/Hardware-Aware-Automated-Machine-Learning, `Shears/running_commands`
(commit fc29bc7): every command passes r 32, alpha 64, dropout 0.1, batch 4 x 4 (MPT 8 x 2), the epochs and
learning rates below, and Wanda with its defaults (C4, 128 x 2048 tokens, seed 0) on a model loaded in fp16.
"""

import random
import re

import pytest
import torch

from shears_nncf.cli import main
from shears_nncf.config import bundled_config, load_config
from shears_nncf.data import c4
from shears_nncf.data.calibration import calibration_samples

QKV, UD, UGD = ["q_proj", "k_proj", "v_proj"], ["up_proj", "down_proj"], ["up_proj", "gate_proj", "down_proj"]
MATH = ("math_10k.json", ["gsm8k", "aqua", "mawps", "svamp"])
CS = ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
LLAMA_GROUPS = [["q_proj", "k_proj", "v_proj"], ["up_proj"], ["down_proj"]]
LLAMA_GATE_GROUPS = [["q_proj", "k_proj", "v_proj"], ["up_proj", "gate_proj"], ["down_proj"]]
MPT_GROUPS = [["q_proj", "k_proj", "v_proj", "out_proj"], ["up_proj", "down_proj"]]

# name: model, sparsity, epochs, lr, targets, groups, (batch, accumulation), training data, evaluation tasks
REFERENCE = {
    "llama7b_math_40": ("yahma/llama-7b-hf", 0.4, 4, 3e-4, QKV + UGD, LLAMA_GATE_GROUPS, (4, 4), *MATH),
    "llama7b_math_50": ("yahma/llama-7b-hf", 0.5, 3, 3e-4, QKV + UD, LLAMA_GROUPS, (4, 4), *MATH),
    "llama13b_math_40": ("yahma/llama-13b-hf", 0.4, 3, 3e-4, QKV + UD, LLAMA_GROUPS, (4, 4), *MATH),
    "llama13b_math_50": ("yahma/llama-13b-hf", 0.5, 3, 3e-4, QKV + UD, LLAMA_GROUPS, (4, 4), *MATH),
    # commonsense-40: Gate in the targets; the groups of the reference's own config for it (commit b19beb1).
    "llama7b_commonsense_40": ("yahma/llama-7b-hf", 0.4, 3, 3e-4, QKV + UGD, LLAMA_GATE_GROUPS, (4, 4), "commonsense_170k.json", CS),
    "llama7b_commonsense_50": ("yahma/llama-7b-hf", 0.5, 5, 3e-4, QKV + UD, LLAMA_GROUPS, (4, 4), "commonsense_170k.json", CS),
    # The paper's 15k rows: not in running_commands; targets from the paper's appendix, LLM-Adapters' 3 epochs.
    "llama7b_commonsense15k_40": ("yahma/llama-7b-hf", 0.4, 3, 3e-4, QKV + UD, LLAMA_GROUPS, (4, 4), "commonsense_15k.json", CS),
    "llama7b_commonsense15k_50": ("yahma/llama-7b-hf", 0.5, 3, 3e-4, QKV + UGD, LLAMA_GATE_GROUPS, (4, 4), "commonsense_15k.json", CS),
    "mpt7b_gsm8k_40": ("mosaicml/mpt-7b", 0.4, 4, 5e-4, QKV + ["out_proj"] + UD, MPT_GROUPS, (8, 2), "gsm8k", ["gsm8k"]),
    "mpt7b_gsm8k_50": ("mosaicml/mpt-7b", 0.5, 5, 3e-4, QKV + ["out_proj"] + UD, MPT_GROUPS, (8, 2), "gsm8k", ["gsm8k"]),
    "mpt7b_gsm8k_60": ("mosaicml/mpt-7b", 0.6, 5, 3e-4, QKV + ["out_proj"] + UD, MPT_GROUPS, (8, 2), "gsm8k", ["gsm8k"]),
    # 70%: the paper's Figure 2 only; the 50/60% settings.
    "mpt7b_gsm8k_70": ("mosaicml/mpt-7b", 0.7, 5, 3e-4, QKV + ["out_proj"] + UD, MPT_GROUPS, (8, 2), "gsm8k", ["gsm8k"]),
}


def test_every_shipped_paper_config_is_checked():
    shipped = {p.stem for p in bundled_config("llama7b_math_50").parent.glob("*.json")}
    assert shipped == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_paper_config_has_every_reference_value(name):
    model, ratio, epochs, lr, targets, groups, (batch, accum), data, eval_tasks = REFERENCE[name]
    config = load_config(bundled_config(name))
    raw = config.raw
    assert config.protocol.name == "reference"
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (32, 64, 0.1)
    assert sorted(config.lora.target_modules) == sorted(targets)
    assert [[re.search(r"Linear\[(\w+)\]/ModuleDict\[lora_A\]", p).group(1) for p in g] for g in config.group_patterns] == groups
    assert config.group_widths == [[32, 24, 16]] * len(groups)
    t = config.training
    assert (t.epochs, config.stage["epochs_lr"], t.lr) == (epochs, epochs, lr)
    assert (t.batch_size, t.grad_accum, t.max_length, t.train_on_inputs) == (batch, accum, 256, True)
    assert t.precision == config.protocol.training_precision == "fp16"  # the reference's --fp16
    assert raw["bootstrapNAS"]["training"]["frozen_layers_allowed"] is True

    pipeline = raw["shears"]["pipeline"]
    assert (pipeline["model"], pipeline["dtype"]) == (model, "fp16")
    assert pipeline["sparsify"] == {"method": "wanda", "ratio": ratio, "pattern": "unstructured", "calibration": "c4",
                                    "nsamples": 128, "seqlen": 2048, "seed": 0}
    assert pipeline["train"]["data"] == data
    assert pipeline["evaluate"]["tasks"] == eval_tasks and pipeline["evaluate"]["limit"] is None
    # run_commonsense.py sets 120 records aside and scores LLM-Adapters' test files; run_math.py and run_gsm8k.py set
    # none aside, and score LLM-Adapters' math files (shipped, "default") and the hub's GSM8K test split; all in PyTorch.
    commonsense = data.startswith("commonsense")
    assert (t.val_set_size, t.truncation) == (120 if commonsense else 0, "end")
    assert pipeline["evaluate"]["data"] == ("llm-adapters" if commonsense else "gsm8k" if data == "gsm8k" else "default")
    assert pipeline["evaluate_on"] == ["pytorch"] and pipeline["search"] == {"strategy": "heuristic"}
    assert data in raw["comment"] or "GSM8K" in raw["comment"]


def _wanda_get_c4(documents, nsamples, seed, seqlen, tokenizer):
    """locuslab/wanda lib/data.py `get_c4`'s sampling loop, verbatim but for the list of documents."""
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(documents) - 1)
            trainenc = tokenizer(documents[i], return_tensors="pt")
            if trainenc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        trainloader.append(trainenc.input_ids[:, i:i + seqlen])
    return trainloader


def test_c4_samples_are_the_windows_wanda_draws(tokenizer, monkeypatch):
    rng = random.Random(1)
    words = ["river", "stone", "light", "garden", "number", "window", "seven", "quiet"]
    # A local stand-in for the streamed shard: documents of very different lengths, most too short.
    documents = [" ".join(rng.choice(words) for _ in range(rng.choice([3, 10, 40, 90, 200]))) for _ in range(60)]
    expected = _wanda_get_c4(documents, nsamples=6, seed=0, seqlen=64, tokenizer=tokenizer)
    got = c4.c4_samples(tokenizer, nsamples=6, seqlen=64, seed=0, documents=documents)
    assert [g.tolist() for g in got] == [e.tolist() for e in expected]
    assert all(g.shape == (1, 64) for g in got)

    monkeypatch.setattr(c4, "stream_shard", lambda: iter(documents))  # `--calibration c4` reaches the same draw
    assert [s.tolist() for s in calibration_samples("c4", tokenizer, 6, 64, seed=0)] == [e.tolist() for e in expected]


def test_c4_offline_fails_with_one_line(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(Exception) as e:
        c4.c4_samples(tokenizer, nsamples=1, seqlen=16)
    assert type(e.value).__name__ == "ShearsError"
    message = str(e.value)
    assert "\n" not in message and "allenai/c4" in message and "--calibration" in message


def test_dry_run_of_llama7b_math50_counts_the_papers_trainable_parameters(tmp_path, capsys):
    """r = 32 on Q, K, V (4096 x 4096), Up and Down (4096 x 11008) of 32 layers: 32 x 1,753,088 = 56,098,816."""
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000).save_pretrained(tmp_path / "llama7b")  # config.json only: no weights anywhere
    assert main(["train", "--dry-run", "--config", str(bundled_config("llama7b_math_50")),
                 "--model", str(tmp_path / "llama7b"), "--dtype", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert "trainable parameters: 56,098,816" in printed
    peak = float(re.search(r"estimated peak memory: ([\d.]+) GiB", printed).group(1))
    weights = float(re.search(r"base weights \(fp16\): ([\d.]+) GiB", printed).group(1))
    assert weights == pytest.approx(6_738_415_616 * 2 / 2**30, abs=0.01) and weights < peak < 2 * weights
    assert list(tmp_path.iterdir()) == [tmp_path / "llama7b"]  # nothing written


def test_dry_run_estimate_shrinks_with_gradient_checkpointing_and_counts_mpt_split_adapters():
    from transformers import MptConfig

    from shears_nncf.nls.dry_run import estimate_training_memory

    mpt = MptConfig(d_model=64, n_heads=4, n_layers=2, expansion_ratio=4, max_seq_len=128, vocab_size=1000)
    plain, checkpointed = (estimate_training_memory(mpt, load_config(bundled_config("mpt7b_gsm8k_50"), gradient_checkpointing=gc),
                                                    torch.float16) for gc in (False, True))
    # r = 32 on q, k, v, out (64 -> 64), up (64 -> 256) and down (256 -> 64) of 2 layers.
    assert plain.trainable_parameters == 2 * 32 * (4 * (64 + 64) + 2 * (64 + 256)) == checkpointed.trainable_parameters
    assert checkpointed.activation_bytes < plain.activation_bytes
    assert checkpointed.weights_bytes == plain.weights_bytes == 2 * plain.total_parameters


def test_gsm8k_rows_become_the_references_training_records():
    from shears_nncf.data.gsm8k import gsm8k_record

    row = {"question": "How many apples?", "answer": "Ann has 1,200.\nShe buys 34 more.\n#### 1,234"}
    assert gsm8k_record(row) == {"instruction": "How many apples?", "input": "",
                                 "output": "Ann has 1,200. She buys 34 more. The answer is 1,234", "answer": "1234"}
