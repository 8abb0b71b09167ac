"""Every shipped paper config through `shears run` to its summary, scaled down: a tiny random LLaMA or MPT in place of
the 7B/13B model, a local calibration file, fp32 on the CPU, 2 optimizer steps of 2 x 1 sequences, 2 test examples
per task; every other setting as shipped (reference protocol, its validation split, truncation, heuristic, the test
sets, PyTorch scoring). The data files the configs name are written into the working directory, where a user puts
them, with few records: `math_10k.json`, `commonsense_170k.json` (121+ records, so that 120 can be set aside),
LLM-Adapters' `datasets/hellaswag/test.json`; GSM8K from the hub is replaced by local rows converted as the
reference converts them.

The tiny models' output embedding favours EOS whatever the input, so that every generation ends after one token:
the runs check what is prompted and scored, not what a random model writes, and 256 beam-searched tokens per
GSM8K prompt would dominate the file's time.
"""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MptConfig, MptForCausalLM

from shears_nncf.artifacts import read_json
from shears_nncf.cli import main
from shears_nncf.config import bundled_config
from shears_nncf.data import gsm8k
from shears_nncf.data.prompts import generation_prompt
from shears_nncf.data.sources import read_records, shipped_folder
from shears_nncf.protocol import REFERENCE_MPT_PROTOCOL, REFERENCE_PROTOCOL

from conftest import TINY_LLAMA

PAPER_CONFIGS = sorted(p.stem for p in bundled_config("llama7b_math_50").parent.glob("*.json"))
EXPORTED = "llama7b_math_40"  # the one run that also exports the IR and scores it (shears.pipeline.evaluate_on)
CS_RECORDS, MATH_RECORDS = 123, 10


def _favour_eos(model):
    """Dimension 0 of every token embedding is large, so the residual stream's dimension 0 is (after the final norm)
    large and positive for any input; the output row of EOS reads it with a large weight (MPT ties the two)."""
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 10.0
        model.get_output_embeddings().weight[model.config.eos_token_id, 0] = 100.0
    return model


def _record(instruction: str, answer: str, output: str) -> dict:
    return {"instruction": instruction, "input": "", "output": output, "answer": answer}


@pytest.fixture(scope="module")
def inputs(tiny_tokenizer, tmp_path_factory):
    """The working directory of the runs: tiny models, calibration text and the data files the configs name."""
    folder = tmp_path_factory.mktemp("paper")
    ids = dict(pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
               bos_token_id=tiny_tokenizer.bos_token_id)
    torch.manual_seed(0)
    models = {
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), **ids, **TINY_LLAMA)),
        "mpt": MptForCausalLM(MptConfig(vocab_size=len(tiny_tokenizer), d_model=64, n_heads=4, n_layers=2, max_seq_len=512,
                                        expansion_ratio=2, **ids)),
    }
    for name, model in models.items():
        _favour_eos(model.eval()).save_pretrained(folder / name)
        tiny_tokenizer.save_pretrained(folder / name)
    (folder / "calibration.txt").write_text("Twelve apples and three pears make fifteen pieces of fruit. " * 40)
    math = [_record(f"What is {n} plus {n}?", str(2 * n), f"{n} + {n} = {2 * n}. The answer is {2 * n}")
            for n in range(MATH_RECORDS)]
    (folder / "math_10k.json").write_text(json.dumps(math))
    commonsense = [_record(f"Is {n} even? Answer format: true/false", str(n % 2 == 0).lower(),
                           f"the correct answer is {str(n % 2 == 0).lower()}") for n in range(CS_RECORDS)]
    for name in ("commonsense_170k.json", "commonsense_15k.json"):
        (folder / name).write_text(json.dumps(commonsense))
    hellaswag = [_record(f"Please choose the correct ending to complete the given sentence: Sentence {n} ...\n\n"
                         "Ending1: a Ending2: b Ending3: c Ending4: d\n\nAnswer format: ending1/ending2/ending3/ending4",
                         "ending1", "the correct answer is ending1") for n in range(3)]
    (folder / "datasets" / "hellaswag").mkdir(parents=True)
    (folder / "datasets" / "hellaswag" / "test.json").write_text(json.dumps(hellaswag))
    return folder


GSM8K_ROWS = {split: [{"question": f"Tom has {n} apples and buys {n} more. How many has he?",
                       "answer": f"He has {n} + {n} = {2 * n}.\n#### {2 * n}"} for n in range(size)]
              for split, size in (("train", 8), ("test", 3))}


def _scaled_down(name: str, folder, export: bool = False) -> dict:
    raw = json.loads(bundled_config(name).read_text())
    shears, pipeline = raw["shears"], raw["shears"]["pipeline"]
    shears["training"].update(precision="fp32", batch_size=2, grad_accum=1)
    pipeline.update(model=str(folder / ("mpt" if name.startswith("mpt") else "llama")), dtype="fp32")
    pipeline["sparsify"].update(calibration=str(folder / "calibration.txt"), nsamples=2, seqlen=16)
    pipeline["train"]["max_steps"] = 2
    pipeline["evaluate"]["limit"] = 2
    if export:
        pipeline["evaluate_on"] = ["pytorch", "openvino"]
        pipeline["bench"] = {"max_new_tokens": 2, "rounds": 1}
    return raw


@pytest.fixture(scope="module")
def paper_run(inputs, tmp_path_factory):
    """`shears run` of a scaled-down paper config, once per config for the whole module: its run folder."""
    runs = {}
    patch = pytest.MonkeyPatch()

    def run(name: str):
        if name not in runs:
            with patch.context() as m:
                m.chdir(inputs)  # the configs name their data relative to the working directory
                m.setattr(gsm8k, "gsm8k_records", lambda split: [gsm8k.gsm8k_record(r) for r in GSM8K_ROWS[split]])
                config, out = inputs / f"{name}.json", tmp_path_factory.mktemp(name) / "run"
                config.write_text(json.dumps(_scaled_down(name, inputs, export=name == EXPORTED)))
                assert main(["run", "--config", str(config), "--output", str(out)]) == 0
            runs[name] = out
        return runs[name]

    return run


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_runs_to_its_summary_scoring_the_heuristic_sub_adapter_in_pytorch(name, paper_run):
    out = paper_run(name)
    raw = json.loads(bundled_config(name).read_text())
    tasks = raw["shears"]["pipeline"]["evaluate"]["tasks"]
    summary = read_json(out / "summary.json")
    assert list(summary["accuracy"]) == [*tasks, "average"]
    assert summary["demonstration_size"] and summary["training"]["optimizer_steps"] == 2
    assert set(summary["sub_adapter"]["ranks"]) == {24}  # the heuristic: the middle of [32, 24, 16]
    scored = summary["scored"]["evaluate"]
    assert (scored["model"], scored["dtype"], scored["device"]) == ("pytorch", "fp32", "cpu")
    assert "PyTorch, fp32 on cpu" in (out / "summary.md").read_text()
    results = read_json(out / "eval" / "results.json")
    assert results["adapter"] == str(out / "sub_adapter") and results["openvino"] is None
    assert all(summary_["count"] == 2 for summary_ in results["tasks"].values())
    # The reference's heuristic evaluates nothing: no validation data was read, no model loaded for the search.
    search = read_json(out / "search" / "search.json")
    assert (search["objective_evaluations"], search["validation"]["examples"]) == (0, 0)
    assert not (out / "search" / "evaluations.json").exists()
    assert (out / "openvino").exists() == (name == EXPORTED)


def test_the_exporting_paper_run_scores_the_ir_too_and_says_which_column_is_which(paper_run):
    out = paper_run(EXPORTED)
    summary = read_json(out / "summary.json")
    assert [s["model"] for s in summary["scored"].values()] == ["pytorch", "openvino"]
    assert list(summary["also_scored"]) == ["openvino"] and (out / "eval" / "results-openvino.json").is_file()
    text = (out / "summary.md").read_text()
    assert "| task | accuracy, generation (%), PyTorch | accuracy, generation (%), OpenVINO IR |" in text
    assert "OpenVINO IR (int8 weights" in text and summary["bench"]


def test_commonsense_paper_config_scores_llm_adapters_test_questions(paper_run):
    out = paper_run("llama7b_commonsense_40")
    examples = read_json(out / "eval" / "results.json")["examples"]
    first_arc_c = read_records(shipped_folder() / "ARC-Challenge" / "test.json")[0]
    assert examples["arc_challenge"][0]["prompt"] == generation_prompt(first_arc_c, "arc_challenge", REFERENCE_PROTOCOL)
    assert first_arc_c["instruction"].startswith("Please choose the correct answer to the question: An astronomer")
    assert examples["hellaswag"][0]["prompt"].count("Sentence 0 ...") == 1  # the user's datasets/hellaswag/test.json


def test_reference_math_run_trains_on_every_record_and_commonsense_sets_120_aside(paper_run):
    math = read_json(paper_run("llama7b_math_50") / "super_adapter" / "shears_manifest.json")
    assert math["examples"] == MATH_RECORDS and math["settings"]["val_set_size"] == 0
    commonsense = read_json(paper_run("llama7b_commonsense15k_50") / "super_adapter" / "shears_manifest.json")
    assert commonsense["examples"] == CS_RECORDS - 120 and commonsense["settings"]["val_set_size"] == 120
    assert math["settings"]["truncation"] == commonsense["settings"]["truncation"] == "end"


def test_mpt_paper_run_prompts_with_run_gsm8k_templates(paper_run):
    out = paper_run("mpt7b_gsm8k_50")
    (example, *_) = read_json(out / "eval" / "results.json")["examples"]["gsm8k"]
    record = gsm8k.gsm8k_record(GSM8K_ROWS["test"][0])
    assert example["prompt"] == generation_prompt(record, "gsm8k", REFERENCE_MPT_PROTOCOL)
    assert "\n                        ### Instruction:\n" in example["prompt"]  # run_gsm8k.py's 24 spaces


def test_commonsense_paper_run_without_the_hellaswag_file_fails_before_any_work(inputs, tmp_path, monkeypatch, capsys):
    for name in ("commonsense_170k.json", "calibration.txt"):
        (tmp_path / name).write_text((inputs / name).read_text())
    monkeypatch.chdir(tmp_path)  # no datasets/hellaswag/test.json here
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_scaled_down("llama7b_commonsense_40", inputs)))
    assert main(["run", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "datasets/hellaswag/test.json" in error
    assert "github.com/AGI-Edgerunners/LLM-Adapters" in error
    assert not (tmp_path / "run").exists()


def test_reference_math_search_that_evaluates_needs_a_named_held_out_set_before_any_work(inputs, tmp_path, monkeypatch,
                                                                                        capsys):
    monkeypatch.chdir(inputs)
    raw = _scaled_down("llama7b_math_50", inputs)
    raw["shears"]["pipeline"]["search"] = {"strategy": "hill-climbing", "metric": "accuracy"}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(raw))
    assert main(["run", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "sets none aside" in error and "--data" in error
    assert not (tmp_path / "run").exists()
