"""The `reference` protocol against the reference's own code, and how a protocol reaches every command.

The expected prompts are the reference's f-strings, evaluated for the records below and pasted here
literally; the oracle for answer extraction is a literal transcription of the reference's functions.
Source: IntelLabs/Hardware-Aware-Automated-Machine-Learning @ fc29bc781ff71ef009e6b0117dd6afcdc91caf89,
Shears/run_math.py and Shears/run_commonsense.py (the same functions as LLM-Adapters' evaluate.py).
"""

import json
import re

import pytest

from shears_nncf.cli import build_parser, main
from shears_nncf.config import bundled_config, load_config, parse_config
from shears_nncf.data.prompts import IGNORE_INDEX, format_prompt, generation_prompt, tokenize_for_training
from shears_nncf.data.sources import carve_validation, load_training_records, read_records, shipped_folder
from shears_nncf.data.tasks import get_task
from shears_nncf.errors import ShearsError
from shears_nncf.evaluation.answers import is_correct
from shears_nncf.evaluation.generation import TorchGenerator
from shears_nncf.evaluation.harness import evaluate
from shears_nncf.pipeline import plan
from shears_nncf.protocol import PROTOCOLS, REFERENCE_MPT_PROTOCOL, REFERENCE_PROTOCOL, SHEARS_PROTOCOL

RECORD = {"instruction": "Solve 2 + 3.", "input": "", "output": "2 + 3 = 5. The answer is 5", "answer": "5"}
RECORD_WITH_INPUT = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The answer is 5", "answer": "5"}

# run_math.py / run_commonsense.py `generate_prompt(data_point)` (the two are identical), for RECORD and RECORD_WITH_INPUT.
REFERENCE_TRAINING_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n"
    "\n"
    "                    ### Instruction:\n"
    "                    Solve 2 + 3.\n"
    "\n"
    "                    ### Response:\n"
    "                    2 + 3 = 5. The answer is 5"
)
REFERENCE_TRAINING_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n"
    "\n"
    "                    ### Instruction:\n"
    "                    Add the numbers.\n"
    "\n"
    "                    ### Input:\n"
    "                    2 and 3\n"
    "\n"
    "                    ### Response:\n"
    "                    The answer is 5"
)
# run_math.py `generate_prompt_eval(instruction, input=None)`: 28 spaces.
REFERENCE_MATH_EVALUATION_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
    "\n"
    "                            ### Instruction:\n"
    "                            Solve 2 + 3.\n"
    "\n"
    "                            ### Response:\n"
    "                            "
)
REFERENCE_MATH_EVALUATION_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n"
    "\n"
    "                            ### Instruction:\n"
    "                            Add the numbers.\n"
    "\n"
    "                            ### Input:\n"
    "                            2 and 3\n"
    "\n"
    "                            ### Response:\n"
    "                            "
)
# run_commonsense.py `generate_prompt_eval(instruction, input=None)`: 24 spaces.
REFERENCE_COMMONSENSE_EVALUATION_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
    "\n"
    "                        ### Instruction:\n"
    "                        Solve 2 + 3.\n"
    "\n"
    "                        ### Response:\n"
    "                        "
)
REFERENCE_COMMONSENSE_EVALUATION_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n"
    "\n"
    "                        ### Instruction:\n"
    "                        Add the numbers.\n"
    "\n"
    "                        ### Input:\n"
    "                        2 and 3\n"
    "\n"
    "                        ### Response:\n"
    "                        "
)


def test_reference_training_prompt_is_the_references_byte_for_byte():
    assert format_prompt(RECORD, True, REFERENCE_PROTOCOL) == REFERENCE_TRAINING_PROMPT
    assert format_prompt(RECORD_WITH_INPUT, True, REFERENCE_PROTOCOL) == REFERENCE_TRAINING_PROMPT_WITH_INPUT
    # What the reference masks when train_on_inputs is off: generate_prompt({**data_point, "output": ""}).
    assert format_prompt(RECORD, False, REFERENCE_PROTOCOL) == REFERENCE_TRAINING_PROMPT.removesuffix(RECORD["output"])


@pytest.mark.parametrize("task, plain, with_input", [
    ("gsm8k", REFERENCE_MATH_EVALUATION_PROMPT, REFERENCE_MATH_EVALUATION_PROMPT_WITH_INPUT),
    ("aqua", REFERENCE_MATH_EVALUATION_PROMPT, REFERENCE_MATH_EVALUATION_PROMPT_WITH_INPUT),
    ("boolq", REFERENCE_COMMONSENSE_EVALUATION_PROMPT, REFERENCE_COMMONSENSE_EVALUATION_PROMPT_WITH_INPUT),
    ("arc_challenge", REFERENCE_COMMONSENSE_EVALUATION_PROMPT, REFERENCE_COMMONSENSE_EVALUATION_PROMPT_WITH_INPUT),
])
def test_reference_evaluation_prompt_is_the_references_byte_for_byte(task, plain, with_input):
    assert generation_prompt(RECORD, task, REFERENCE_PROTOCOL) == plain
    assert generation_prompt(RECORD_WITH_INPUT, task, REFERENCE_PROTOCOL) == with_input


def test_shears_prompt_is_the_clean_template_for_training_and_evaluation():
    prompt = format_prompt(RECORD, False, SHEARS_PROTOCOL)
    assert prompt == ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
                      "\n\n### Instruction:\nSolve 2 + 3.\n\n### Response:\n")
    assert generation_prompt(RECORD, "gsm8k") == generation_prompt(RECORD, "boolq") == prompt == format_prompt(RECORD, False)


# ---- The reference's extraction, transcribed literally (the oracle) -------------------------------------------------
# run_math.py `extract_answer_number`, `extract_answer_letter` and the comparison in `evaluate` (miss = 0.001);
# run_commonsense.py `extract_answer` and its `label == predict`; `evaluate_one_sample`'s answer split.

def oracle_extract_answer_number(dataset, sentence: str) -> float:
    dataset = dataset.lower()
    if dataset in ["gsm8k", "svamp", "mawps"]:
        sentence = sentence.replace(",", "")
        pred = [s for s in re.findall(r"-?\d+\.?\d*", sentence)]
        if not pred:
            return float("inf")
        pred_answer = float(pred[-1])
    else:
        raise NotImplementedError(" not support dataset: {}".format(dataset))
    if isinstance(pred_answer, str):
        try:
            pred_answer = float(pred_answer)
        except ValueError as e:
            pred_answer = float("inf")
    return pred_answer


def oracle_extract_answer_letter(sentence: str) -> str:
    sentence_ = sentence.strip()
    pred_answers = re.findall(r"A|B|C|D|E", sentence_)
    if pred_answers:
        if not pred_answers:
            return ""
        return pred_answers[0]
    else:
        return ""


def oracle_extract_answer(dataset_name, sentence: str) -> float:
    dataset = dataset_name
    if dataset == "boolq":
        sentence_ = sentence.strip()
        pred_answers = re.findall(r"true|false", sentence_)
        if not pred_answers:
            return ""
        return pred_answers[0]
    elif dataset == "piqa":
        sentence_ = sentence.strip()
        pred_answers = re.findall(r"solution1|solution2", sentence_)
        if not pred_answers:
            return ""
        return pred_answers[0]
    elif dataset in ["social_i_qa", "ARC-Challenge", "ARC-Easy", "openbookqa"]:
        sentence_ = sentence.strip()
        pred_answers = re.findall(r"answer1|answer2|answer3|answer4|answer5", sentence_)
        if not pred_answers:
            return ""
        return pred_answers[0]
    elif dataset == "hellaswag":
        sentence_ = sentence.strip()
        pred_answers = re.findall(r"ending1|ending2|ending3|ending4", sentence_)
        if not pred_answers:
            return ""
        return pred_answers[0]
    elif dataset == "winogrande":
        sentence_ = sentence.strip()
        pred_answers = re.findall(r"option1|option2", sentence_)
        if not pred_answers:
            return ""
        return pred_answers[0]


def oracle_verdict(folder: str, prompt: str, generation: str, label: str) -> bool:
    """evaluate_one_sample's `output.split("### Response:")[1].strip()`, then `evaluate`'s comparison."""
    outputs = (prompt + generation).split("### Response:")[1].strip()
    if folder.lower() in ["aqua"]:
        return label == oracle_extract_answer_letter(outputs)
    if folder in ("boolq", "piqa", "social_i_qa", "ARC-Challenge", "ARC-Easy", "openbookqa", "hellaswag", "winogrande"):
        return label == oracle_extract_answer(folder, outputs)
    return abs(float(label) - oracle_extract_answer_number(folder, outputs)) <= 0.001

# ---------------------------------------------------------------------------------------------------------------------


HAND_WRITTEN = {
    "gsm8k": [
        ("They paid 1,234,567 dollars in total.", "1234567"),
        ("It fell from 10 to -3.5 degrees, so the answer is -3.5", "-3.5"),
        ("Half of it: 3/4", "0.75"),  # the reference reads the last number, 4
        ("The answer is 576.0004", "576"),
        ("The answer is 576.01", "576"),
        ("Seasons 2018-19 had 19 games", "19"),
        ("x = 5-3, so x is 2.", "2"),
        ("no number here", "576"),
        ("The answer is 12.50", "12.5"),
        ("The answer is 7.\n\n### Response: 9", "7"),  # the reference keeps only what comes before a second marker
        ("", "0"),
    ],
    "aqua": [
        ("Answer: C", "C"),  # the reference reads the A of "Answer"
        ("The answer is (D).", "D"),
        ("the answer is (d)", "D"),
        ("Rationale: 2 + 2 = 4. The answer is (C)", "C"),
        ("nothing to choose", "A"),
        ("  E  ", "E"),
    ],
    "boolq": [("True. Although some say false", "false"), ("the correct answer is true", "true"), ("", "true")],
    "social_i_qa": [("answer4 then answer2", "answer2"), ("answer10", "answer1"), ("the answer is answer3", "answer3")],
    "winogrande": [("Option1", "option1"), ("option2", "option2")],
}


def _score(tmp_path, task, rows, protocol="reference"):
    predictions, verdicts = tmp_path / f"{task}.jsonl", tmp_path / f"{task}.verdicts.jsonl"
    predictions.write_text("".join(json.dumps({"prediction": p, "answer": a}) + "\n" for p, a in rows))
    assert main(["score", "--task", task, "--predictions", str(predictions), "--protocol", protocol,
                 "--output", str(verdicts), "--json"]) == 0
    return [json.loads(line)["correct"] for line in verdicts.read_text().splitlines()]


@pytest.mark.parametrize("task", ["gsm8k", "aqua", "mawps", "svamp"])
def test_reference_score_gives_the_references_verdict_on_every_shipped_output(tmp_path, task):
    folder = get_task(task).folder
    records = read_records(shipped_folder() / folder / "test.json")
    # The real outputs (MAWPS's are empty), and each answer written into a sentence.
    rows = [(r["output"], r["answer"]) for r in records] + [(f"So it is {r['answer']}.", r["answer"]) for r in records]
    expected = [oracle_verdict(folder, REFERENCE_MATH_EVALUATION_PROMPT, p, a) for p, a in rows]
    assert _score(tmp_path, task, rows) == expected
    assert len(expected) == 2 * len(records) and 0 < sum(expected) < len(expected)


@pytest.mark.parametrize("task", sorted(HAND_WRITTEN))
def test_reference_score_gives_the_references_verdict_on_corner_cases(tmp_path, task):
    folder = get_task(task).folder
    prompt = generation_prompt(RECORD, task, REFERENCE_PROTOCOL)
    expected = [oracle_verdict(folder, prompt, p, a) for p, a in HAND_WRITTEN[task]]
    assert _score(tmp_path, task, HAND_WRITTEN[task]) == expected
    # The corner cases are corner cases: the shears protocol reads some of them differently.
    assert _score(tmp_path, task, HAND_WRITTEN[task], "shears") != expected


def test_harness_under_reference_prompts_and_reads_answers_as_the_reference():
    class Echo:
        def __init__(self):
            self.prompts, self.outputs = [], [["Answer: C"], ["The answer is 1,000.\n### Response: 3"]]

        def generate(self, prompts, max_new_tokens):
            self.prompts += prompts
            return self.outputs.pop(0)

    records = {"aqua": [{**RECORD, "answer": "A"}], "gsm8k": [{**RECORD, "answer": "1000"}]}
    generator = Echo()
    results = evaluate(generator, records, protocol=REFERENCE_PROTOCOL)
    assert generator.prompts[1] == REFERENCE_MATH_EVALUATION_PROMPT
    assert results["tasks"]["aqua"]["correct"] == 1 and results["tasks"]["gsm8k"]["correct"] == 1
    assert evaluate(Echo(), records)["tasks"]["aqua"]["correct"] == 0  # shears reads "Answer: C" as C


def test_reference_decoding_is_beam_search_and_runs(tiny_llama_factory, tiny_tokenizer):
    generator = TorchGenerator(tiny_llama_factory(), tiny_tokenizer, batch_size=2, device="cpu", progress=False,
                               protocol=REFERENCE_PROTOCOL)
    assert generator.decoding == {"do_sample": False, "num_beams": 4, "temperature": 0.1, "top_p": 0.75, "top_k": 40}
    assert len(generator.generate(["Hello there", "A longer prompt than the first"], max_new_tokens=3)) == 2
    assert TorchGenerator(tiny_llama_factory(), tiny_tokenizer, device="cpu").decoding["num_beams"] == 1


# ---- Threading: config, flags, commands -----------------------------------------------------------------------------

def _config(protocol=None, **lora):
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    raw["shears"].pop("protocol", None)
    raw["shears"]["lora"].pop("dropout", None)
    raw["shears"].get("training", {}).pop("train_on_inputs", None)
    raw["shears"]["lora"].update(lora)
    if protocol:
        raw["shears"]["protocol"] = protocol
    return raw


def test_protocol_sets_the_defaults_and_an_explicit_config_value_wins():
    shears, reference = parse_config(_config()), parse_config(_config("reference"))
    assert (shears.protocol, shears.lora.dropout, shears.training.train_on_inputs) == (SHEARS_PROTOCOL, 0.05, False)
    assert (reference.protocol, reference.lora.dropout, reference.training.train_on_inputs) == (REFERENCE_PROTOCOL, 0.1, True)
    assert parse_config(_config("reference", dropout=0.0)).lora.dropout == 0.0


def test_protocol_flag_overrides_the_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config("reference")))
    overridden = load_config(path, protocol="shears")
    assert overridden.protocol is SHEARS_PROTOCOL and overridden.lora.dropout == 0.05
    assert overridden.raw["shears"]["protocol"] == "shears"  # the saved config is the one trained
    assert load_config(path).protocol is REFERENCE_PROTOCOL
    with pytest.raises(ShearsError, match="invalid at shears.protocol"):
        parse_config(_config("paper"))
    with pytest.raises(ShearsError, match="^unknown protocol 'paper'; expected one of reference, shears$"):
        PROTOCOLS["paper"]


@pytest.mark.parametrize("argv", [
    ["train", "--config", "c.json", "--model", "m", "--output", "o"],
    ["evaluate", "--model", "m"],
    ["score", "--task", "gsm8k", "--predictions", "p.jsonl"],
    ["search", "--super-adapter", "s", "--strategy", "heuristic", "--output", "o"],
    ["run", "--config", "c.json", "--output", "o"],
])
def test_every_command_it_affects_takes_the_protocol_flag(argv):
    assert build_parser().parse_args(argv).protocol is None  # None: the config's (or the super-adapter's) protocol
    assert build_parser().parse_args(argv + ["--protocol", "reference"]).protocol == "reference"
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv + ["--protocol", "paper"])


def test_train_command_uses_the_flag_over_the_config(monkeypatch, tmp_path, tiny_llama_dir):
    import shears_nncf.nls.training

    seen = {}

    def fake_train(model, tokenizer, config, examples, output, **kwargs):
        seen.update(config=config, examples=examples, inputs=kwargs["inputs"])
        raise SystemExit(0)

    monkeypatch.setattr(shears_nncf.nls.training, "train", fake_train)
    config, data = tmp_path / "config.json", tmp_path / "train.json"
    config.write_text(json.dumps(_config("reference")))
    data.write_text(json.dumps([RECORD] * 130))
    argv = ["train", "--config", str(config), "--model", str(tiny_llama_dir), "--data", str(data), "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main(argv)
    assert seen["config"].protocol is REFERENCE_PROTOCOL and seen["inputs"].protocol == "reference"
    assert len(seen["examples"]) == 10  # 120 of the 130 records are set aside for the search
    assert all(IGNORE_INDEX not in e["labels"] for e in seen["examples"])  # train_on_inputs
    with pytest.raises(SystemExit):
        main(argv + ["--protocol", "shears"])
    assert seen["config"].protocol is SHEARS_PROTOCOL and len(seen["examples"]) == 130
    assert all(IGNORE_INDEX in e["labels"] for e in seen["examples"])


def test_train_without_a_supervised_token_fails_before_loading_the_model(monkeypatch, tmp_path, capsys, tiny_llama_dir):
    import shears_nncf.nls.stage

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(shears_nncf.nls.stage, "load_model", no_model)
    config, data = tmp_path / "config.json", tmp_path / "empty.json"
    config.write_text(json.dumps(_config()))
    data.write_text("[]")
    assert main(["train", "--config", str(config), "--model", str(tiny_llama_dir), "--data", str(data),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leaves no supervised token (0 examples)" in err
    assert not (tmp_path / "o").exists()


def test_reference_validation_is_datasets_train_test_split_with_seed_42():
    import datasets

    records = [{**RECORD, "instruction": f"question {i}"} for i in range(500)]
    train, validation = carve_validation(records, REFERENCE_PROTOCOL.val_set_size)
    expected = datasets.Dataset.from_list(records).train_test_split(test_size=120, shuffle=True, seed=42)
    assert validation == expected["test"].to_list() and len(validation) == 120
    assert train == expected["train"].to_list()
    with pytest.raises(ShearsError, match="sets 120 training records aside"):
        carve_validation(records[:100], 120)


def test_the_validation_split_is_the_configs_120_for_commonsense_and_none_for_math():
    """run_commonsense.py `val_set_size` 120; run_math.py and run_gsm8k.py 0 (every record trained on)."""
    sizes = {name: load_config(bundled_config(name)).training.val_set_size
             for name in ("llama7b_commonsense_40", "llama7b_commonsense15k_50", "llama7b_math_50", "mpt7b_gsm8k_60")}
    assert sizes == {"llama7b_commonsense_40": 120, "llama7b_commonsense15k_50": 120, "llama7b_math_50": 0,
                     "mpt7b_gsm8k_60": 0}
    assert parse_config(_config("reference")).training.val_set_size == 120  # the protocol's default: run_commonsense.py's
    assert parse_config(_config()).training.val_set_size == 0


def test_reference_training_never_sees_the_search_validation_records(tmp_path):
    from shears_nncf.search.objective import validation_records

    path = tmp_path / "train.json"
    path.write_text(json.dumps([{**RECORD, "instruction": f"question {i}"} for i in range(300)]))
    trained = load_training_records(str(path), None, None, seed=1, val_set_size=120)
    manifest = {"data": str(path), "tasks": None}
    by_task, _ = validation_records("default", None, 50, 0, manifest, val_set_size=120)
    (validation,) = by_task.values()
    assert len(trained) == 180 and len(validation) == 120
    assert not {r["instruction"] for r in trained} & {r["instruction"] for r in validation}
    assert list(validation_records("default", ["gsm8k"], 50, 0, manifest, val_set_size=120)[0]) == ["gsm8k"]
    assert len(load_training_records(str(path), None, None, seed=1)) == 300  # val_set_size 0: every record


def test_reference_search_chooses_validation_data_as_the_reference_would_have_to():
    from shears_nncf.search.objective import validation_plan

    reference, shears = REFERENCE_PROTOCOL, SHEARS_PROTOCOL
    assert validation_plan("heuristic", "default", None, "accuracy", reference, 120, None) is None  # evaluates nothing
    assert validation_plan("heuristic", "default", None, "loss", shears, 0, None).startswith("the embedded train split")
    assert "120 records set aside" in validation_plan("hill-climbing", "default", None, "loss", reference, 120, None)
    assert validation_plan("nsga2", "default", ["boolq"], "accuracy", reference, 120, None)
    with pytest.raises(ShearsError, match="which mix its tasks; score them with --metric loss"):
        validation_plan("hill-climbing", "default", None, "accuracy", reference, 120, ["commonsense"])
    with pytest.raises(ShearsError, match="sets none aside here .* name a held-out set with --data"):
        validation_plan("hill-climbing", "default", ["gsm8k"], "accuracy", reference, 0, None)
    assert "named with --data" in validation_plan("hill-climbing", "heldout.json", ["gsm8k"], "accuracy", reference, 0, None)


def test_run_passes_the_protocol_to_the_evaluation_of_the_exported_model(tmp_path):
    from shears_nncf.pipeline import pipeline_settings

    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    settings = pipeline_settings(raw, None, None)
    settings["protocol"] = None
    evaluate = next(s for s in plan(tmp_path / "c.json", tmp_path, settings) if s.stage == "evaluate")
    assert evaluate.args.protocol is None
    settings["protocol"] = "reference"
    evaluate = next(s for s in plan(tmp_path / "c.json", tmp_path, settings) if s.stage == "evaluate")
    assert evaluate.args.protocol == "reference"


def test_reference_protocol_records_the_references_other_settings():
    p = REFERENCE_PROTOCOL
    assert (p.calibration, p.calibration_nsamples, p.calibration_seqlen, p.calibration_seed) == ("c4", 128, 2048, 0)
    assert (p.val_set_size, p.val_seed, p.training_precision, p.truncation) == (120, 42, "fp16", "end")
    assert get_task("gsm8k").max_new_tokens == 256 and get_task("boolq").max_new_tokens == 32  # per script


def test_reference_tokenization_trains_on_the_prompt_in_the_reference_template(tokenizer):
    (example,), _ = tokenize_for_training([RECORD], tokenizer, 256, train_on_inputs=True, protocol=REFERENCE_PROTOCOL)
    assert example["labels"] == example["input_ids"]
    assert tokenizer.decode(example["input_ids"][:-1]) == REFERENCE_TRAINING_PROMPT
    assert is_correct("gsm8k", "The answer is 5", "5", REFERENCE_PROTOCOL)


def oracle_generate_and_tokenize_prompt(tokenizer, data_point, cutoff_len, train_on_inputs):
    """run_math.py / run_commonsense.py / run_gsm8k.py `tokenize` and `generate_and_tokenize_prompt`, verbatim but for
    the prompt, which is the reference protocol's training template (tested byte for byte above)."""
    def generate_prompt(data_point):
        return format_prompt(data_point, True, REFERENCE_PROTOCOL)

    def tokenize(prompt, add_eos_token=True):
        result = tokenizer(
            prompt,
            truncation=True,
            max_length=cutoff_len,
            padding=True,
            return_tensors=None,
        )
        if (
            result["input_ids"][-1] != tokenizer.eos_token_id
            and len(result["input_ids"]) < cutoff_len
            and add_eos_token
        ):
            result["input_ids"].append(tokenizer.eos_token_id)

            result["attention_mask"].append(1)

        result["labels"] = result["input_ids"].copy()

        return result

    full_prompt = generate_prompt(data_point)
    tokenized_full_prompt = tokenize(full_prompt)
    if not train_on_inputs:
        user_prompt = generate_prompt({**data_point, "output": ""})
        tokenized_user_prompt = tokenize(user_prompt, add_eos_token=False)
        user_prompt_len = len(tokenized_user_prompt["input_ids"])

        tokenized_full_prompt["labels"] = [-100] * user_prompt_len + tokenized_full_prompt["labels"][
            user_prompt_len:
        ]
    return tokenized_full_prompt


@pytest.mark.parametrize("train_on_inputs", [True, False])
def test_reference_truncation_is_the_references_tokenize_for_short_cut_and_exact_examples(tokenizer, train_on_inputs):
    records = [RECORD, {**RECORD, "output": "two plus three is five " * 30},  # short; its response cut at the end
               {**RECORD, "instruction": "Add these numbers: " + "2 + 3 " * 60}]  # its prompt alone is longer
    exact = len(tokenizer(format_prompt(RECORD, True, REFERENCE_PROTOCOL))["input_ids"])  # fits exactly: no EOS, as cut
    for cutoff in (64, exact):
        got, truncated = tokenize_for_training(records, tokenizer, cutoff, train_on_inputs, protocol=REFERENCE_PROTOCOL)
        expected = [oracle_generate_and_tokenize_prompt(tokenizer, r, cutoff, train_on_inputs) for r in records]
        assert [{k: e[k] for k in ("input_ids", "attention_mask", "labels")} for e in expected] == got
        assert truncated == 2  # the two longer ones (one that fits exactly is not cut)
    assert got[0]["input_ids"][-1] != tokenizer.eos_token_id  # exactly cutoff_len tokens: no EOS either
    cut = tokenize_for_training(records, tokenizer, 64, protocol=REFERENCE_PROTOCOL)[0]
    assert cut[0]["input_ids"][-1] == tokenizer.eos_token_id  # shorter: EOS appended
    assert all(len(e["input_ids"]) == 64 and e["input_ids"][-1] != tokenizer.eos_token_id for e in cut[1:])
    # The shears protocol's truncation (shears.training.truncation: prompt) keeps the response and EOS instead.
    kept = tokenize_for_training(records[2:], tokenizer, 64, protocol=REFERENCE_PROTOCOL, truncation="prompt")[0][0]
    assert kept["input_ids"][-1] == tokenizer.eos_token_id and len(kept["input_ids"]) == 64
    assert parse_config(_config()).training.truncation == "prompt"
    assert parse_config(_config("reference")).training.truncation == "end"


# run_gsm8k.py `generate_prompt(data_point)` and `generate_prompt_eval(instruction)`: 16 and 24 spaces, no input form.
REFERENCE_GSM8K_TRAINING_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n"
    "\n"
    "                ### Instruction:\n"
    "                Solve 2 + 3.\n"
    "\n"
    "                ### Response:\n"
    "                2 + 3 = 5. The answer is 5"
)
REFERENCE_GSM8K_EVALUATION_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
    "\n"
    "                        ### Instruction:\n"
    "                        Solve 2 + 3.\n"
    "\n"
    "                        ### Response:\n"
    "                        "
)


def test_mpt_under_the_reference_gets_run_gsm8k_prompts_byte_for_byte(tmp_path):
    from transformers import LlamaConfig, MptConfig

    from shears_nncf.data.prompts import protocol_for_model
    from shears_nncf.generate import templated

    MptConfig(d_model=64, n_heads=4, n_layers=2).save_pretrained(tmp_path / "mpt")  # config.json alone
    LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4).save_pretrained(tmp_path / "llama")
    mpt = protocol_for_model(REFERENCE_PROTOCOL, tmp_path / "mpt")
    assert mpt.script == "run_gsm8k.py"
    assert format_prompt(RECORD, True, mpt) == REFERENCE_GSM8K_TRAINING_PROMPT
    assert generation_prompt(RECORD, "gsm8k", mpt) == REFERENCE_GSM8K_EVALUATION_PROMPT
    assert protocol_for_model(REFERENCE_PROTOCOL, tmp_path / "llama") is REFERENCE_PROTOCOL
    assert protocol_for_model(SHEARS_PROTOCOL, tmp_path / "mpt") is SHEARS_PROTOCOL
    assert mpt.generate_kwargs == REFERENCE_PROTOCOL.generate_kwargs  # only the templates differ
    # `shears generate --template reference` on an MPT IR (its folder holds the config.json) prompts the same way.
    assert templated(RECORD["instruction"], "reference", tmp_path / "mpt") == format_prompt(
        {"instruction": RECORD["instruction"]}, False, mpt)
    assert templated(RECORD["instruction"], "reference", tmp_path / "llama") == format_prompt(
        {"instruction": RECORD["instruction"]}, False, REFERENCE_PROTOCOL) != format_prompt(
        {"instruction": RECORD["instruction"]}, False, mpt)


def test_evaluate_takes_the_super_adapters_protocol_unless_the_flag_says_otherwise(tmp_path):
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, MptConfig

    from shears_nncf.artifacts import write_manifest
    from shears_nncf.evaluation.stage import _protocol

    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    MptConfig(d_model=64, n_heads=4, n_layers=2).save_pretrained(tmp_path / "mpt")  # config.json alone
    LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4).save_pretrained(tmp_path / "llama")
    trained = tmp_path / "super_adapter"
    trained.mkdir()
    write_manifest(trained, {"stage": "train", "protocol": "reference", "base_model": str(tmp_path / "mpt"),
                             "config": raw, "groups": []})
    save_file({"unused": torch.zeros(1)}, trained / "adapter_model.safetensors")  # a super-adapter folder has weights
    parse = build_parser().parse_args
    # The recorded name, as the object, in the templates of the base scored: the super-adapter's MPT, else --model.
    assert _protocol(parse(["evaluate", "--super-adapter", str(trained)])) is REFERENCE_MPT_PROTOCOL
    assert _protocol(parse(["evaluate", "--super-adapter", str(trained), "--model", str(tmp_path / "llama")])) \
        is REFERENCE_PROTOCOL
    assert _protocol(parse(["evaluate", "--super-adapter", str(trained), "--protocol", "shears"])) is SHEARS_PROTOCOL
    assert _protocol(parse(["evaluate", "--model", "m"])) is SHEARS_PROTOCOL
