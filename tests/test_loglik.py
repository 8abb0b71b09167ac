"""Log-likelihood scoring through lm-evaluation-harness: documents, task folders, the CLI, lm-eval's own front end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from shears_nncf.cli import main
from shears_nncf.data import lm_eval_documents
from shears_nncf.data.prompts import format_prompt
from shears_nncf.data.sources import shipped_folder
from shears_nncf.data.tasks import get_task
from shears_nncf.errors import ShearsError
from shears_nncf.evaluation import loglik
from shears_nncf.evaluation.harness import run_tasks
from shears_nncf.models import EMBEDDED_MODEL
from test_extract import trained_super_adapter  # noqa: F401  (a super-adapter from `shears train`'s code)

LLM_ADAPTERS = shipped_folder()


@pytest.fixture(autouse=True)
def offline_cache(tmp_path_factory, monkeypatch, tokenizer):
    """Every test reads local files only (HF_DATASETS_OFFLINE) and shares one cache of converted documents. The
    embedded model in it is the session's (converted once, when the `tokenizer` fixture first loaded it), linked:
    converting the GGUF again into this cache took a third of the SmolLM2 test's time."""
    from shears_nncf.models import resolve_model

    cache = tmp_path_factory.getbasetemp() / "shears_cache"
    if not (cache / EMBEDDED_MODEL).exists():
        cache.mkdir(exist_ok=True)
        (cache / EMBEDDED_MODEL).symlink_to(resolve_model(EMBEDDED_MODEL), target_is_directory=True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SHEARS_CACHE", str(cache))


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama_dir, tmp_path_factory):
    """A small PEFT LoRA on the tiny LLaMA with non-zero B, so the adapter changes the scores."""
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    folder = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(folder)
    return folder


def _llm_adapters_records(task, n=20):
    return json.loads((LLM_ADAPTERS / get_task(task).folder / "test.json").read_text())[:n]


@pytest.mark.parametrize("task", ["piqa", "social_i_qa", "winogrande", "boolq", "openbookqa"])
def test_llm_adapters_files_parse_into_the_documents_of_the_embedded_split(task):
    """LLM-Adapters' test files of these tasks are the embedded validation splits, reworded: parsing
    the wording back gives lm-eval's fields (BoolQ without its passage, SIQA's context and question joined)."""
    parsed = loglik.record_documents(task, _llm_adapters_records(task), "lm-eval")
    embedded = lm_eval_documents.olmo_documents(task)
    if task == "boolq":
        embedded = [{**d, "passage": ""} for d in embedded]
    if task == "social_i_qa":
        embedded = [{**d, "context": f"{d['context']} {d['question']}", "question": ""} for d in embedded]
    if task == "openbookqa":  # LLM-Adapters' OBQA file is the test split, the wheel holds validation: compare the form
        assert all(set(d) == set(embedded[0]) and d["choices"]["label"] == ["A", "B", "C", "D"] for d in parsed)
        return
    assert parsed == embedded[:len(parsed)]


def test_embedded_documents_carry_lm_evals_fields_without_the_olmes_wording():
    boolq = lm_eval_documents.olmo_documents("boolq")[0]
    assert boolq["passage"].startswith("Ethanol fuel --") and boolq["question"] == "does ethanol take more energy make that produces"  # lm-eval adds the "?"
    assert boolq["label"] == 0  # the gold choice is "no"
    arc = lm_eval_documents.olmo_documents("arc_easy")[0]
    assert arc["question"] == "Which technology was developed most recently?" and arc["answerKey"] == "A"
    assert arc["choices"]["text"][0] == "cellular telephone"


def test_llm_adapters_wording_ranks_the_papers_answer_sentences():
    record = _llm_adapters_records("arc_easy", 1)[0]
    (document,) = loglik.record_documents("arc_easy", [record], "llm-adapters")
    assert document["prompt"] == format_prompt(record, with_response=False)
    assert document["choices"] == [f"the correct answer is answer{i}" for i in range(1, 5)]
    assert document["choices"][document["gold"]] == record["output"]


def test_a_record_in_another_wording_is_named_by_index():
    records = _llm_adapters_records("piqa", 2)
    records[1] = {**records[1], "instruction": "Which is right?"}
    with pytest.raises(ShearsError, match=r"record 1 does not have LLM-Adapters' piqa wording"):
        loglik.record_documents("piqa", records, "lm-eval")


def test_the_task_folder_is_written_once_per_content_and_reads_local_files_only():
    documents = {"piqa": lm_eval_documents.olmo_documents("piqa")[:3]}
    folder = lm_eval_documents.task_folder(documents, "lm-eval")
    assert lm_eval_documents.task_folder(documents, "lm-eval") == folder
    assert lm_eval_documents.task_folder({"piqa": documents["piqa"][:2]}, "lm-eval") != folder
    assert lm_eval_documents.task_folder(documents, "llm-adapters") != folder
    yaml = (folder / "piqa.yaml").read_text()
    assert "task: shears_piqa" in yaml and str(folder / "piqa.jsonl") in yaml
    assert "dataset_path: json" in (folder / "_piqa_template_yaml").read_text()


def _lm_eval_cli(model, adapter, folder, tasks, limit, out):
    """lm-eval's own front end, in a subprocess, on the same task folder."""
    lm_eval = Path(sys.executable).with_name("lm_eval")
    subprocess.run([str(lm_eval), "--model", "hf", "--model_args", f"pretrained={model},peft={adapter}",
                    "--tasks", ",".join(lm_eval_documents.lm_eval_name(t) for t in tasks), "--include_path", str(folder),
                    "--limit", str(limit), "--device", "cpu", "--output_path", str(out)],
                   check=True, capture_output=True, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    (path,) = Path(out).glob("**/results_*.json")
    raw = json.loads(path.read_text())
    return {t: loglik.task_metrics(raw, lm_eval_documents.lm_eval_name(t)) for t in tasks}


def test_shears_evaluate_gives_lm_evals_own_numbers(tiny_llama_dir, adapter_dir, tmp_path):
    tasks, limit = ["piqa", "winogrande"], 6  # acc_norm, and partial scoring
    out = tmp_path / "results.json"
    assert main(["evaluate", "--scoring", "loglik", "--model", str(tiny_llama_dir), "--adapter", str(adapter_dir),
                 "--tasks", ",".join(tasks), "--limit", str(limit), "--device", "cpu", "--output", str(out)]) == 0
    ours = json.loads(out.read_text())["tasks"]
    folder = lm_eval_documents.task_folder(loglik.source_documents("default", tasks, "lm-eval"), "lm-eval")
    theirs = _lm_eval_cli(tiny_llama_dir, adapter_dir, folder, tasks, limit, tmp_path / "lm_eval")
    assert ours == theirs
    assert all(ours[t]["n"] == limit for t in tasks) and "acc_norm" in ours["piqa"] and "acc_norm" not in ours["winogrande"]


def test_results_file_has_acc_acc_norm_their_errors_n_and_the_average(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["evaluate", "--scoring", "loglik", "--prompt-style", "llm-adapters", "--model", str(tiny_llama_dir),
                 "--tasks", "boolq,arc_challenge", "--limit", "3", "--device", "cpu", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    for task in ("boolq", "arc_challenge"):  # the paper's wording has acc_norm for every task (lm-eval's BoolQ has not)
        assert set(results["tasks"][task]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n"}
        assert results["tasks"][task]["n"] == 3
    assert results["average"] == pytest.approx((results["tasks"]["boolq"]["acc_norm"] + results["tasks"]["arc_challenge"]["acc_norm"]) / 2)
    assert (results["scoring"], results["prompt_style"], results["limit"]) == ("loglik", "llm-adapters", 3)
    for task, documents in results["examples"].items():  # each document's own scores, which paired comparisons need
        assert [d["doc"] for d in documents] == [0, 1, 2]
        for metric in ("acc", "acc_norm"):
            assert sum(d[metric] for d in documents) / 3 == pytest.approx(results["tasks"][task][metric])
    printed = capsys.readouterr().out
    assert "acc_norm (%)" in printed and "wall time" in printed


class FailingScorer:
    """Scores every task as 50%, and fails on the task named in `fail_on`: a run interrupted there."""

    def __init__(self, fail_on=None):
        self.fail_on, self.scored = fail_on, []

    def __call__(self, task):
        if task == self.fail_on:
            raise KeyboardInterrupt
        self.scored.append(task)
        return {"acc": 0.5, "acc_stderr": 0.1, "n": 4}, None


def test_an_interrupted_run_keeps_its_finished_tasks_and_a_rerun_scores_only_the_rest(tmp_path):
    out, tasks, settings = tmp_path / "results.json", ["boolq", "piqa", "winogrande", "arc_easy"], {"model": "m", "limit": 4}
    with pytest.raises(KeyboardInterrupt):
        run_tasks(tasks, FailingScorer(fail_on="winogrande"), out, settings)
    assert list(json.loads(out.read_text())["tasks"]) == ["boolq", "piqa"]
    rerun = FailingScorer()
    results = run_tasks(tasks, rerun, out, settings)
    assert rerun.scored == ["winogrande", "arc_easy"]
    assert list(results["tasks"]) == tasks and json.loads(out.read_text()) == results
    other = FailingScorer()
    run_tasks(tasks, other, out, {**settings, "limit": 5})  # other settings: everything again
    assert other.scored == tasks


def test_cli_loglik_rerun_skips_finished_tasks(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    calls = []

    def score(self, task, limit=None):
        calls.append(task)
        if task == "openbookqa" and len(calls) == 3:
            raise KeyboardInterrupt
        return {"acc": 0.25, "acc_stderr": 0.1, "acc_norm": 0.5, "acc_norm_stderr": 0.1, "n": limit}, []

    monkeypatch.setattr(loglik.LoglikScorer, "score", score)
    out = tmp_path / "results.json"
    argv = ["evaluate", "--scoring", "loglik", "--model", str(tiny_llama_dir), "--tasks", "arc_easy,arc_challenge,openbookqa",
            "--limit", "2", "--device", "cpu", "--output", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert main(argv) == 0
    assert calls == ["arc_easy", "arc_challenge", "openbookqa", "openbookqa"]
    assert "arc_easy: already in" in capsys.readouterr().out


def test_bad_input_is_one_line_exit_2_and_nothing_written(tiny_llama_dir, tmp_path, capsys):
    missing = tmp_path / "piqa.json"
    missing.write_text(json.dumps([{"instruction": "x", "input": "", "output": "y"}]))
    reworded = tmp_path / "data" / "piqa" / "test.json"
    reworded.parent.mkdir(parents=True)
    reworded.write_text(json.dumps([{"instruction": "Pick one", "input": "", "output": "o", "answer": "solution1"}]))
    no_ir = tmp_path / "empty_ir"
    no_ir.mkdir()
    cases = [
        (["--model", str(tiny_llama_dir), "--tasks", "piqa,boolk"], "unknown task 'boolk'"),
        (["--model", str(tiny_llama_dir), "--tasks", "piqa", "--data", str(missing)], "record 0 has no 'answer'"),
        (["--model", str(tiny_llama_dir), "--tasks", "piqa", "--data", str(tmp_path / "data")], "record 0 does not have LLM-Adapters' piqa wording"),
        (["--openvino", str(no_ir), "--tasks", "piqa"], "has no openvino_model.xml"),
        (["--model", str(tiny_llama_dir), "--tasks", "boolq,gsm8k"], "task gsm8k has free-form answers, nothing to rank"),
    ]
    out = tmp_path / "results.json"
    for extra, message in cases:
        assert main(["evaluate", "--scoring", "loglik", *extra, "--limit", "2", "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_fp32_openvino_ir_of_a_sparse_model_with_its_unmerged_adapter_scores_as_pytorch(tiny_llama_dir, adapter_dir, tmp_path):
    from shears_nncf.export.openvino import export_openvino

    sparse, ir = tmp_path / "sparse", tmp_path / "ir"
    assert main(["sparsify", "--model", str(tiny_llama_dir), "--ratio", "0.5", "--method", "magnitude", "--output", str(sparse)]) == 0
    export_openvino(sparse, ir, adapter=adapter_dir, weights="as-is")
    scores = {}
    for name, source in [("torch", ["--model", str(sparse), "--adapter", str(adapter_dir), "--device", "cpu"]), ("ir", ["--openvino", str(ir)])]:
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--scoring", "loglik", *source, "--tasks", "piqa,winogrande", "--limit", "10",
                     "--output", str(out)]) == 0
        scores[name] = json.loads(out.read_text())["tasks"]
    for task, expected in scores["torch"].items():
        for metric in ("acc", "acc_norm"):
            if metric in expected:
                assert scores["ir"][task][metric] == pytest.approx(expected[metric], abs=0.005), (task, metric)


def test_search_by_loglik_and_evaluating_the_subnet_match_the_extracted_adapter(trained_super_adapter, tmp_path):
    """`search --metric loglik` ranks sub-adapters by lm-eval's score; the chosen one, evaluated on the supernet
    and as an extracted PEFT adapter, scores the same."""
    folder, _ = trained_super_adapter
    assert main(["search", "--super-adapter", str(folder / "super"), "--strategy", "hill-climbing", "--budget", "3",
                 "--metric", "loglik", "--tasks", "piqa", "--limit", "4", "--output", str(tmp_path / "search")]) == 0
    summary = json.loads((tmp_path / "search" / "search.json").read_text())
    assert summary["strategy_evaluations"] <= 3 and all(0 <= r["loglik"] <= 100 for r in summary["evaluated"])
    search_json = str(tmp_path / "search" / "search.json")
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", search_json, "--output", str(tmp_path / "sub")]) == 0
    scores = []
    for source in (["--super-adapter", str(folder / "super"), "--subnet", search_json],
                   ["--model", str(folder / "sparse"), "--adapter", str(tmp_path / "sub")]):
        out = tmp_path / f"eval{len(scores)}.json"
        assert main(["evaluate", "--scoring", "loglik", *source, "--tasks", "piqa,arc_easy",
                     "--limit", "4", "--device", "cpu", "--output", str(out)]) == 0
        scores.append(json.loads(out.read_text())["tasks"])
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_smollm2_ranks_piqa_and_arc_easy_choices_above_chance(tmp_path):
    """The embedded SmolLM2 scored as its model card is (zero-shot acc_norm): a handful of documents is
    already far above chance (deterministic: fixed weights, the first documents of the fixed splits)."""
    out = tmp_path / "results.json"
    assert main(["evaluate", "--scoring", "loglik", "--model", "smollm2-135m", "--tasks", "piqa,arc_easy", "--limit", "20",
                 "--device", "cpu", "--output", str(out)]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    assert tasks["piqa"]["acc_norm"] > 0.6 and tasks["arc_easy"]["acc_norm"] > 0.35, tasks


def test_training_records_are_the_gold_requests_lm_eval_scores(tmp_path):
    """Fine-tuning text (issue: training the scoring can see) is lm-eval's own context and gold continuation."""
    from shears_nncf.data.olmo import CONVERTERS, olmo_documents
    from shears_nncf.data.sources import load_training_records

    path = lm_eval_documents.write_training_records(tmp_path / "train.jsonl", ["piqa", "winogrande", "arc_easy"], limit=3)
    records = load_training_records(str(path), None, None, seed=0)  # what `shears train --data FILE` reads
    assert sorted(map(json.dumps, records)) == sorted(
        map(json.dumps, lm_eval_documents.training_records(["piqa", "winogrande", "arc_easy"], limit=3)))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["task"] for r in records] == ["piqa"] * 3 + ["winogrande"] * 3 + ["arc_easy"] * 3
    docs = {task: [lm_eval_documents._OLMO[task](d) for _, d in zip(range(3), olmo_documents(CONVERTERS[task][0], "train"))]
            for task in ("piqa", "winogrande", "arc_easy")}
    for record, doc in zip(records[:3], docs["piqa"]):
        assert record["prompt"] == f"Question: {doc['goal']}\nAnswer:"
        assert record["completion"] == " " + doc[f"sol{doc['label'] + 1}"]
    for record, doc in zip(records[3:6], docs["winogrande"]):  # partial scoring: the gold option fills the blank
        before, after = doc["sentence"].split("_", 1)
        assert record["prompt"] == before + doc[f"option{doc['answer']}"]
        assert record["completion"] == " " + after.strip()
    for record, doc in zip(records[6:], docs["arc_easy"]):
        gold = doc["choices"]["label"].index(doc["answerKey"])
        assert record["prompt"] == f"Question: {doc['question']}\nAnswer:"
        assert record["completion"] == " " + doc["choices"]["text"][gold]


def test_a_prompt_completion_record_trains_on_its_completion_only(tmp_path):
    from transformers import AutoTokenizer

    from shears_nncf.data.prompts import IGNORE_INDEX, tokenize_for_training
    from shears_nncf.data.sources import load_training_records
    from shears_nncf.models import EMBEDDED_MODEL, resolve_model

    record = {"prompt": "Question: How do you open a jar?\nAnswer:", "completion": " Twist the lid"}
    assert format_prompt(record, with_response=True) == record["prompt"] + record["completion"]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_MODEL))
    (example,), _ = tokenize_for_training([record], tokenizer, max_length=64)
    learned = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == " Twist the lid" + tokenizer.eos_token
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(record) + "\n" + json.dumps({"prompt": "no completion"}) + "\n")
    with pytest.raises(ShearsError, match=r"record 1 has no 'completion'"):
        load_training_records(str(data), None, None, seed=0)


def test_the_lm_eval_source_trains_on_the_documents_default_draws_worded_as_lm_eval_poses_them():
    """`shears train --data lm-eval`: no file to write; the same draw as "default" (tasks, limit, seed, records set aside),
    each document as lm-eval's prompt and its gold choice's text, as `lm_eval_records` builds them."""
    from shears_nncf.data.olmo import olmo_records
    from shears_nncf.data.sources import LM_EVAL, carved_validation_records, files_read, load_training_records

    tasks = ["arc_easy", "boolq"]
    worded = load_training_records(LM_EVAL, tasks, limit=12, seed=3)
    assert worded == load_training_records(LM_EVAL, tasks, limit=12, seed=3)
    default = load_training_records("default", tasks, limit=12, seed=3)
    assert [r["task"] for r in worded] != [tasks[0]] * 12 and all(set(r) == {"prompt", "completion", "task"} for r in worded)
    train_docs = {task: lm_eval_documents.olmo_documents(task, "train") for task in tasks}
    by_instruction = {r["instruction"]: (task, i) for task in tasks for i, r in enumerate(olmo_records(task, "train"))}
    drawn = [by_instruction[r["instruction"]] for r in default]  # the documents "default" drew, in its order
    assert [task for task, _ in drawn] == [r["task"] for r in worded]
    expected = lm_eval_documents.lm_eval_records({task: [train_docs[task][i] for t, i in drawn if t == task]
                                                  for task in tasks})
    assert worded == [expected[task][[t for t, _ in drawn[:n + 1]].count(task) - 1] for n, (task, _) in enumerate(drawn)]
    # Records set aside for the search (val_set_size) are the same draw too, and never trained on.
    held_out = carved_validation_records(LM_EVAL, ["arc_easy"], 5)
    assert len(held_out) == 5 and all(r["prompt"].startswith("Question: ") for r in held_out)
    trained = load_training_records(LM_EVAL, ["arc_easy"], None, seed=0, val_set_size=5)
    assert not {r["prompt"] for r in held_out} & {r["prompt"] for r in trained}
    assert files_read(LM_EVAL) == []  # the package's own data: keyed by its name, as "default"


def test_the_lm_eval_source_is_training_data_of_the_commonsense_tasks_only():
    from shears_nncf.data.sources import LM_EVAL, load_records, load_training_records

    with pytest.raises(ShearsError, match="lm-eval documents of .* not of gsm8k"):
        load_training_records(LM_EVAL, ["gsm8k"], None, seed=0)
    with pytest.raises(ShearsError, match="is training data .*--data default --scoring loglik"):
        load_records(LM_EVAL, ["piqa"])
