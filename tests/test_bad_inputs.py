"""Every bad input is one line naming it, exit 2, no traceback, and nothing written where the output would go.

One table: truncated weight files, data that is not UTF-8 or not JSON, sizes and counts that are not positive,
ratios out of range, names that are none of their option's choices, an output under a file, and the same checks on
values a `shears run` config gives.
Flag values are argparse's to refuse (its usage block, then one `shears <cmd>: error:` line); the rest are
ShearsErrors (exactly one line)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shears_nncf.cli import main
from shears_nncf.config import bundled_config

CONFIG = str(bundled_config("demo/smollm2_commonsense"))


@pytest.fixture(scope="module")
def files(tiny_llama_dir, tmp_path_factory):
    """The inputs the table names: a good base model and broken or badly encoded copies of what stages read."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    broken_model = folder / "broken_model"
    shutil.copytree(tiny_llama_dir, broken_model)
    weights = (broken_model / "model.safetensors").read_bytes()
    (broken_model / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # an interrupted copy
    broken_adapter = folder / "broken_adapter"
    broken_adapter.mkdir()
    (broken_adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    (broken_adapter / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00")  # shorter than a header
    other_stage = folder / "sparse_not_adapter"  # a readable LoRA folder whose manifest is another stage's
    other_stage.mkdir()
    (other_stage / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    save_file({"x": torch.zeros(1)}, other_stage / "adapter_model.safetensors")
    (other_stage / "shears_manifest.json").write_text(json.dumps({"stage": "sparsify"}))
    broken_super = folder / "broken_super"
    broken_super.mkdir()
    (broken_super / "shears_manifest.json").write_text(json.dumps(
        {"stage": "train", "base_model": str(tiny_llama_dir), "config": {}, "groups": []}))
    (broken_super / "adapter_model.safetensors").write_bytes(b"not safetensors at all" * 10)
    (folder / "latin1.json").write_bytes('[{"instruction": "caf\u00e9?", "output": "oui"}]'.encode("latin-1"))
    (folder / "latin1.txt").write_bytes("Les caf\u00e9s de Paris.\n".encode("latin-1") * 40)
    (folder / "bad.json").write_text('[{"instruction": "a", "output": ')
    (folder / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    (folder / "a_file").write_text("a file, not a folder\n")
    (folder / "a_folder").mkdir()
    for name, section, option, value in (("zero_batch", "evaluate", "batch_size", 0), ("ratio_two", "sparsify", "ratio", 2),
                                         ("zero_steps", "train", "max_steps", 0), ("greedy", "search", "strategy", "greedy"),
                                         ("int2", "export", "weights", "int2"), ("exact", "evaluate", "scoring", ["exact"]),
                                         ("minus_damping", "sparsify", "damping", -1),
                                         ("lm_eval_gsm8k", "train", "tasks", ["gsm8k"])):
        raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
        raw["shears"]["pipeline"].setdefault(section, {})[option] = value
        (folder / f"{name}.json").write_text(json.dumps(raw))
    return {"base": str(tiny_llama_dir), "dir": str(folder)}


SPARSIFY = ["sparsify", "--model", "{base}", "--ratio", "0.5", "--method", "magnitude"]
TRAIN = ["train", "--config", CONFIG, "--model", "{base}"]
EVALUATE = ["evaluate", "--model", "{base}", "--tasks", "boolq"]
SEARCH = ["search", "--super-adapter", "{dir}/broken_super", "--strategy", "heuristic"]
EXPORT = ["export", "--model", "{base}"]
BENCH = ["bench", "{base}"]
OUT = ["--output", "{dir}/out"]

CASES = [
    # Weight files that are truncated or not safetensors at all.
    (SPARSIFY[:2] + ["{dir}/broken_model"] + SPARSIFY[3:] + OUT, ["model.safetensors", "truncated"]),
    (["report", "{dir}/broken_model"], ["model.safetensors", "not a readable safetensors file"]),
    (EXPORT + ["--adapter", "{dir}/broken_adapter"] + OUT, ["adapter_model.safetensors", "header too small"]),
    (["extract", "--super-adapter", "{dir}/broken_super"] + OUT, ["adapter_model.safetensors", "not a readable"]),
    (EXPORT + ["--adapter", "{dir}/sparse_not_adapter"] + OUT, ["written by stage 'sparsify'", "expected a 'extract'"]),
    # Data, calibration, prompts, predictions and configs that are not UTF-8, or not JSON.
    (TRAIN + ["--data", "{dir}/latin1.json"] + OUT, ["latin1.json", "not UTF-8", "b'\\xe9'"]),
    (TRAIN + ["--data", "{dir}/bad.json"] + OUT, ["bad.json", "not valid JSON"]),
    (TRAIN + ["--data", "{dir}/bad.jsonl"] + OUT, ["bad.jsonl", "line 2 is not JSON"]),
    (["train", "--config", "{dir}/latin1.json", "--model", "{base}"] + OUT, ["config", "not UTF-8"]),
    (EVALUATE + ["--data", "{dir}/latin1.json"] + OUT, ["data file", "not UTF-8"]),
    (SPARSIFY[:-2] + ["--calibration", "{dir}/latin1.txt"] + OUT, ["calibration file", "not UTF-8"]),
    (["evaluate", "--model", "{base}", "--perplexity", "{dir}/latin1.txt"] + OUT, ["text file", "not UTF-8"]),
    (["score", "--task", "boolq", "--predictions", "{dir}/latin1.txt"] + OUT, ["predictions file", "not UTF-8"]),
    (BENCH + ["--prompts", "{dir}/latin1.txt", "--json", "{dir}/out"], ["prompts file", "not UTF-8"]),
    # Sizes and counts that are not positive (argparse refuses the flag).
    (EVALUATE + ["--batch-size", "0"] + OUT, ["--batch-size", "positive integer", "'0'"]),
    (EVALUATE + ["--limit", "-5"] + OUT, ["--limit", "positive integer", "'-5'"]),
    (EVALUATE + ["--seqlen", "0"] + OUT, ["--seqlen", "positive integer"]),
    (EVALUATE + ["--nsamples", "0"] + OUT, ["--nsamples", "positive integer"]),
    (TRAIN + ["--max-steps", "0"] + OUT, ["--max-steps", "positive integer"]),
    (TRAIN + ["--batch-size", "0"] + OUT, ["--batch-size", "positive integer"]),
    (TRAIN + ["--grad-accum", "0"] + OUT, ["--grad-accum", "positive integer"]),
    (TRAIN + ["--max-length", "-1"] + OUT, ["--max-length", "positive integer"]),
    (TRAIN + ["--limit", "0"] + OUT, ["--limit", "positive integer"]),
    (TRAIN + ["--epochs", "0"] + OUT, ["--epochs", "positive number"]),
    (TRAIN + ["--lr", "-0.1"] + OUT, ["--lr", "positive number"]),
    (TRAIN + ["--seed", "-1"] + OUT, ["--seed", "integer >= 0"]),
    (SEARCH + ["--budget", "0"] + OUT, ["--budget", "positive integer"]),
    (SEARCH + ["--limit", "0"] + OUT, ["--limit", "positive integer"]),
    (SPARSIFY + ["--nsamples", "0"] + OUT, ["--nsamples", "positive integer"]),
    (SPARSIFY + ["--seqlen", "2.5"] + OUT, ["--seqlen", "positive integer", "'2.5'"]),
    (BENCH + ["--max-new-tokens", "0", "--json", "{dir}/out"], ["--max-new-tokens", "positive integer"]),
    (BENCH + ["--threads", "0", "--json", "{dir}/out"], ["--threads", "positive integer"]),
    (EXPORT + ["--group-size", "0"] + OUT, ["--group-size", "group size"]),
    (SPARSIFY + ["--block-size", "0"] + OUT, ["--block-size", "positive integer"]),
    (SPARSIFY + ["--damping", "-0.1"] + OUT, ["--damping", "number >= 0", "'-0.1'"]),
    (SPARSIFY + ["--outlier-threshold", "0"] + OUT, ["--outlier-threshold", "positive number"]),
    # Ratios out of range.
    (SPARSIFY[:4] + ["1.5"] + SPARSIFY[5:] + OUT, ["--ratio", "(0, 1)", "'1.5'"]),
    (SPARSIFY[:4] + ["0"] + SPARSIFY[5:] + OUT, ["--ratio", "(0, 1)"]),
    (EXPORT + ["--weights", "int4", "--int4-ratio", "1.5"] + OUT, ["--int4-ratio", "(0, 1]"]),
    (BENCH + ["--sparse-rate", "2", "--json", "{dir}/out"], ["--sparse-rate", "[0, 1]"]),
    (SPARSIFY + ["--allocation", "owl", "--owl-lambda", "0.5"] + OUT, ["--owl-lambda 0.5", "below 0.5"]),
    # Settings that contradict each other: refused before the model is loaded.
    (SPARSIFY + ["--allocation", "owl", "--pattern", "2:4"] + OUT, ["--allocation owl", "2:4", "N:M fixes"]),
    (SPARSIFY[:-1] + ["sparsegpt", "--pattern", "2:4", "--block-size", "30"] + OUT, ["--block-size 30", "of 4"]),
    # A name that is none of its option's choices: argparse lists them from the option's table (choices.Choices).
    (SEARCH[:3] + ["--strategy", "greedy"] + OUT, ["--strategy", "invalid choice: 'greedy'", "'hill-climbing'"]),
    (SEARCH + ["--metric", "f1"] + OUT, ["--metric", "invalid choice: 'f1'", "'loglik'"]),
    (SEARCH + ["--cost", "flops"] + OUT, ["--cost", "invalid choice: 'flops'", "'macs'"]),
    (SEARCH + ["--prompt-style", "alpaca"] + OUT, ["--prompt-style", "invalid choice: 'alpaca'", "'llm-adapters'"]),
    (EXPORT + ["--weights", "int2"] + OUT, ["--weights", "invalid choice: 'int2'", "'w8a8'"]),
    (SPARSIFY[:-1] + ["random"] + OUT, ["--method", "invalid choice: 'random'", "'wanda'"]),
    (SPARSIFY + ["--allocation", "dense"] + OUT, ["--allocation", "invalid choice: 'dense'", "'owl'"]),
    (EVALUATE + ["--scoring", "exact"] + OUT, ["--scoring", "invalid choice: 'exact'", "'loglik'"]),
    # An output under a file, or a folder where a file goes.
    (EXPORT + ["--output", "{dir}/a_file/ov"], ["a_file/ov", "under", "which is a file"]),
    (EVALUATE + ["--output", "{dir}/a_file/results.json"], ["under", "which is a file"]),
    (["score", "--task", "boolq", "--predictions", "{dir}/bad.jsonl", "--output", "{dir}/a_folder"], ["is a folder"]),
    # The same checks on values a `shears run` config gives: before the run folder is made.
    (["run", "--config", "{dir}/zero_batch.json"] + OUT, ["shears.pipeline.evaluate.batch_size", "positive integer"]),
    (["run", "--config", "{dir}/ratio_two.json"] + OUT, ["shears.pipeline.sparsify.ratio", "(0, 1)"]),
    (["run", "--config", "{dir}/minus_damping.json"] + OUT, ["shears.pipeline.sparsify.damping", "number >= 0"]),
    (["run", "--config", "{dir}/zero_steps.json"] + OUT, ["shears.pipeline.train.max_steps", "positive integer"]),
    (["run", "--config", "{dir}/greedy.json"] + OUT, ["shears.pipeline.search.strategy", "'greedy'", "hill-climbing"]),
    (["run", "--config", "{dir}/int2.json"] + OUT, ["shears.pipeline.export.weights", "'int2'", "w8a8"]),
    (["run", "--config", "{dir}/exact.json"] + OUT, ["shears.pipeline.evaluate.scoring", "'exact'", "loglik"]),
    # The demo's lm-eval training source words only the tasks with choices: said before anything is pruned.
    (["run", "--config", "{dir}/lm_eval_gsm8k.json"] + OUT, ["lm-eval documents", "not of gsm8k"]),
]


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse refusing a flag
        return e.code


def _listing(folder) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(Path(folder).rglob("*"))}


@pytest.mark.parametrize("argv, words", CASES, ids=[f"{i}-{argv[0]}-{words[0]}" for i, (argv, words) in enumerate(CASES)])
def test_a_bad_input_is_one_line_exit_2_and_nothing_written(argv, words, files, capsys):
    argv = [word.format(**files) for word in argv]
    before = _listing(files["dir"])
    assert _exit_status(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith(f"shears {argv[0]}: error: ")
    assert len(lines) == 1 or lines[0].startswith("usage: shears " + argv[0]), err  # one line, or argparse's usage + one
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    assert _listing(files["dir"]) == before  # nothing written, nothing touched: no output, no partial folder
