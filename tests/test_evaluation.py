"""Answer extraction and scoring, the task table, generation, the harness and the evaluate/score CLI."""

import json

import pytest

from shears_nncf.cli import main
from shears_nncf.errors import ShearsError
from shears_nncf.evaluation.answers import extract_answer, is_correct
from shears_nncf.evaluation.generation import TorchGenerator
from shears_nncf.evaluation.harness import evaluate, format_results_table
from shears_nncf.data.sources import shipped_folder
from shears_nncf.data.tasks import COMMONSENSE, MATH_TASKS, get_task

LLM_ADAPTERS = shipped_folder()  # the LLM-Adapters test files shipped in the package
RECORD = {"instruction": "Is the sky blue?\n\nAnswer format: true/false", "input": "", "output": "the correct answer is true", "answer": "true"}


def _records(task):
    return json.loads((LLM_ADAPTERS / get_task(task).folder / "test.json").read_text())


@pytest.mark.parametrize("task", [t for t in COMMONSENSE if t != "hellaswag"])  # LLM-Adapters' HellaSwag test file is not shipped
def test_extracting_from_every_commonsense_output_recovers_its_answer(task):
    records = _records(task)
    assert records
    wrong = [r for r in records if extract_answer(task, r["output"]) != r["answer"] or not is_correct(task, r["output"], r["answer"])]
    assert wrong == []


@pytest.mark.parametrize("task", MATH_TASKS)
def test_extracting_from_a_worked_sentence_recovers_every_math_answer(task):
    records = _records(task)
    assert records
    wrong = [r["answer"] for r in records
             if not is_correct(task, f"... so the result is {r['answer']}. The answer is {r['answer']}.", r["answer"])]
    assert wrong == []


@pytest.mark.parametrize("text, answer", [
    ("They paid 1,234,567 dollars in total.", "1234567"),
    ("The answer is 42.", "42"),
    ("It fell from 10 to -3.5 degrees, so the answer is -3.5", "-3.5"),
    ("First 3 apples, then 7, then 12 pears: the answer is 19", "19"),
    ("Half of it: 3/4", "0.75"),
    ("The answer is 576.0004", "576"),  # within 1e-3, as LLM-Adapters scores
    ("Seasons 2018-19 had 19 games", "19"),  # a hyphen between numbers is no minus sign
])
def test_math_extraction_hard_cases(text, answer):
    assert is_correct("gsm8k", text, answer)


def test_math_wrong_or_missing_number_is_incorrect():
    assert not is_correct("gsm8k", "The answer is 576.01", "576")
    assert not is_correct("gsm8k", "no number here", "576")
    assert extract_answer("gsm8k", "I cannot say") is None


@pytest.mark.parametrize("text, letter", [
    ("The answer is (D).", "D"),
    ("Rationale: 2 + 2 = 4. The answer is (C)", "C"),
    ("Answer Choices: (A) 1 (B) 2 ... so it must be (E)", "E"),
    ("answer: B", "B"),
])
def test_aqua_letter_extraction(text, letter):
    assert extract_answer("aqua", text) == letter


def test_commonsense_takes_the_first_vocabulary_word_case_insensitively():
    assert extract_answer("boolq", "True. Although some say false") == "true"
    assert extract_answer("arc_easy", "the correct answer is answer3, not answer1") == "answer3"
    assert extract_answer("piqa", "I do not know") is None
    assert not is_correct("piqa", "solution11", "solution1")


def test_task_names_accept_llm_adapters_folder_names_and_aliases():
    assert get_task("ARC-Easy").name == get_task("arc-e").name == "arc_easy"
    assert get_task("siqa").name == get_task("social_i_qa").name == get_task("SocialIQA").name
    assert get_task("AQuA").kind == "option-letter" and get_task("gsm8k").max_new_tokens > get_task("boolq").max_new_tokens


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ShearsError, match=r"unknown task 'gsm9k'; known tasks: boolq, .*gsm8k.*aqua \(AQuA\)"):
        get_task("gsm9k")


def test_left_padded_batch_generates_what_each_prompt_generates_alone(tiny_llama_factory, tiny_tokenizer):
    generator = TorchGenerator(tiny_llama_factory(seed=3), tiny_tokenizer, batch_size=3, device="cpu", progress=False)
    prompts = ["Hello", "A much longer prompt that needs padding in a batch", "Is the sky blue?"]
    batched = generator.generate(prompts, max_new_tokens=6)
    alone = [generator.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone
    assert all(text for text in batched)  # only the new text, and some of it


def test_generator_runs_a_peft_model(tiny_llama_factory, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama_factory(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    (text,) = TorchGenerator(model, tiny_tokenizer, batch_size=2, device="cpu", progress=False).generate(["Hello"], 4)
    assert isinstance(text, str)


class CannedGenerator:
    """Answers each prompt from a table: a stand-in runtime to test the harness's bookkeeping."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate(self, prompts, max_new_tokens):
        self.calls.append(max_new_tokens)
        return [self.answers[p.split("### Instruction:\n")[1].split("\n")[0]] for p in prompts]


def test_harness_scores_every_example_and_writes_them(tmp_path):
    records = {
        "boolq": [{**RECORD, "instruction": "q1"}, {**RECORD, "instruction": "q2", "answer": "false"}],
        "gsm8k": [{**RECORD, "instruction": "m1", "answer": "12.0"}],
    }
    generator = CannedGenerator({"q1": "true", "q2": "true", "m1": "so 1,2 is 12. The answer is 12."})
    out = tmp_path / "results.json"
    results = evaluate(generator, records, output_path=out)
    assert generator.calls == [32, 256]
    assert results["tasks"]["boolq"] == {"accuracy": 0.5, "correct": 1, "count": 2}
    assert results["tasks"]["gsm8k"]["accuracy"] == 1.0
    assert results["average"] == pytest.approx(0.75)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    example = results["examples"]["boolq"][1]
    assert example["prompt"].endswith("### Instruction:\nq2\n\n### Response:\n")
    assert (example["generation"], example["extracted"], example["answer"], example["correct"]) == ("true", "true", "false", False)
    table = format_results_table(results)
    assert [line.split() for line in table.splitlines() if line.startswith(("boolq", "gsm8k", "average"))] == [
        ["boolq", "50.0", "2"], ["gsm8k", "100.0", "1"], ["average", "75.0", "3"]]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_score_json_prints_only_task_accuracy_and_count(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "p.jsonl", [
        {"prediction": "The answer is 1,000.", "answer": "1000.0"},
        {"prediction": "The answer is 7", "answer": "8"},
    ])
    assert main(["score", "--task", "SVAMP", "--predictions", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"task": "svamp", "accuracy": 0.5, "count": 2}


def test_score_rejects_a_file_that_is_not_jsonl(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prediction": "x", "answer": "y"}], indent=2))
    assert main(["score", "--task", "boolq", "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 1 is not JSON" in err and len(err.strip().splitlines()) == 1


def test_evaluate_cli_rejects_bad_input_with_exit_2(tmp_path, capsys, tiny_llama_dir):
    bad = tmp_path / "boolq.json"
    bad.write_text(json.dumps([{"instruction": "x", "input": "", "output": "y"}]))
    cases = [
        (["--tasks", "boolk"], "known tasks: boolq"),
        (["--tasks", ""], "task list is empty"),
        (["--tasks", "boolq", "--data", str(bad)], "record 0 has no 'answer'"),
        (["--tasks", "boolq", "--super-adapter", str(tmp_path)], "shears_manifest.json does not exist"),
    ]
    for extra, message in cases:
        assert main(["evaluate", "--model", str(tiny_llama_dir), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_cli_writes_every_example_and_prints_the_table(tmp_path, capsys, tiny_llama_dir):
    data = tmp_path / "mine.jsonl"
    _write_jsonl(data, [RECORD, {**RECORD, "answer": "false"}, RECORD])
    out = tmp_path / "results.json"
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--tasks", "boolq", "--data", str(data),
                 "--batch-size", "2", "--device", "cpu", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["tasks"]["boolq"]["count"] == 3 and len(results["examples"]["boolq"]) == 3
    assert "average" in printed and "boolq" in printed


def test_evaluate_perplexity_mode_prints_the_perplexity(tmp_path, capsys, tiny_llama_dir):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    out = tmp_path / "ppl.json"
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--perplexity", str(text), "--seqlen", "16",
                 "--nsamples", "2", "--device", "cpu", "--output", str(out)]) == 0
    value = float(capsys.readouterr().out.split("perplexity: ")[1].split()[0])
    assert value > 1 and json.loads(out.read_text())["perplexity"] == pytest.approx(value, rel=1e-3)
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--perplexity", str(tmp_path / "none.txt")]) == 2


class InterruptedGenerator(CannedGenerator):
    """A canned runtime that stops (as Ctrl-C would) when it is asked for its `stop_at`-th task."""

    def __init__(self, answers, stop_at=None):
        super().__init__(answers)
        self.stop_at = stop_at

    def generate(self, prompts, max_new_tokens):
        if len(self.calls) + 1 == self.stop_at:
            raise KeyboardInterrupt
        return super().generate(prompts, max_new_tokens)


def test_an_interrupted_evaluation_keeps_finished_tasks_and_a_rerun_generates_only_the_rest(tmp_path):
    records = {task: [{**RECORD, "instruction": f"q{i}"}] for i, task in enumerate(["boolq", "piqa", "gsm8k", "svamp"])}
    answers = {"q0": "true", "q1": "solution1", "q2": "The answer is 1", "q3": "The answer is 2"}
    out, settings = tmp_path / "results.json", {"model": "m", "limit": 1}
    with pytest.raises(KeyboardInterrupt):
        evaluate(InterruptedGenerator(answers, stop_at=3), records, output_path=out, metadata=settings)
    saved = json.loads(out.read_text())
    assert list(saved["tasks"]) == ["boolq", "piqa"] and list(saved["examples"]) == ["boolq", "piqa"]
    rerun = InterruptedGenerator(answers)
    results = evaluate(rerun, records, output_path=out, metadata=settings)
    assert rerun.calls == [256, 256]  # only gsm8k and svamp were generated
    assert list(results["tasks"]) == list(records) and results["examples"]["boolq"] == saved["examples"]["boolq"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
