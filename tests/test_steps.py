"""The step machinery that `shears run` and the benchmark studies share (shears_nncf/steps.py): keys, records, skips,
and a study killed after its first step that resumes without redoing it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shears_nncf.stages import STAGES
from shears_nncf.steps import StepRunner, Step

ROOT = Path(__file__).resolve().parents[1]


def _score_step(tmp_path, predictions: Path, name="score") -> Step:
    args = STAGES["score"].namespace(task="boolq", predictions=str(predictions), output=str(tmp_path / f"{name}.jsonl"))
    return Step("score", args, tmp_path / f"{name}.jsonl", name=name)


def test_a_step_runs_once_per_key_and_an_edited_input_reruns_it(tmp_path, capsys):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"prediction": "the answer is true", "answer": "true"}\n')
    runner = StepRunner(tmp_path)
    runner.run(_score_step(tmp_path, predictions))
    assert "score: shears score" in capsys.readouterr().out
    record = runner.record("score")
    assert record["complete"] and record["command"].startswith("shears score --task boolq")

    StepRunner(tmp_path).run(_score_step(tmp_path, predictions))  # a new process: reads the record back
    assert "up to date, skipped" in capsys.readouterr().out

    predictions.write_text('{"prediction": "false", "answer": "true"}\n')  # the input changed: its key too
    StepRunner(tmp_path).run(_score_step(tmp_path, predictions))
    assert "up to date" not in capsys.readouterr().out
    assert json.loads((tmp_path / "score.jsonl").read_text())["correct"] is False


def test_a_step_reading_an_earlier_product_is_keyed_by_that_steps_key(tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"prediction": "true", "answer": "true"}\n')
    runner = StepRunner(tmp_path)
    runner.run(_score_step(tmp_path, predictions, name="first"))
    later = _score_step(tmp_path, tmp_path / "first.jsonl", name="second")  # reads the first step's product
    key = runner.key(later)
    runner.keys["first"] = "another key"  # as if the first step had run with other settings
    assert runner.key(later) != key


def test_how_often_a_training_saves_a_checkpoint_is_not_part_of_its_key(tmp_path):
    """A study may pass --save-steps to resume its trainings across sessions: the results it recorded stay valid."""
    from shears_nncf.steps import step_from_argv

    train = ["train", "--config", "c.json", "--model", "m", "--output", str(tmp_path / "out")]
    key = StepRunner(tmp_path).key(step_from_argv(train, tmp_path / "out"))
    assert StepRunner(tmp_path).key(step_from_argv([*train, "--save-steps", "25"], tmp_path / "out")) == key
    assert StepRunner(tmp_path).key(step_from_argv([*train, "--seed", "7"], tmp_path / "out")) != key


def test_a_study_killed_after_its_first_step_resumes_without_redoing_it(tiny_llama_dir, tmp_path):
    """benchmarks/reproduce_small.py on the tiny LLaMA: killed while its second step runs, then run again."""
    out = tmp_path / "study"
    argv = [sys.executable, str(ROOT / "benchmarks" / "reproduce_small.py"), "--output", str(out),
            "--model", str(tiny_llama_dir), "--rows", "zero-wanda50", "--nsamples", "2", "--eval-limit", "2",
            "--pilot-limit", "0", "--generate-limit", "0", "--train-per-task", "1", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = out / "steps" / "sparsify_wanda-50.json"
    study = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (first.is_file() and json.loads(first.read_text())["complete"]):
        assert study.poll() is None and time.monotonic() < deadline, "the study ended before its first step did"
        time.sleep(0.5)
    os.killpg(study.pid, signal.SIGKILL)  # the study and the step it was running
    study.wait()
    sparse = out / "sparse" / "wanda-50" / "model.safetensors"
    written = sparse.stat().st_mtime_ns
    assert not (out / "eval" / "zero-wanda50.json").exists()

    rerun = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "[reproduce] sparsify wanda-50: up to date, skipped" in rerun.stdout
    assert "[reproduce] eval zero-wanda50: shears evaluate" in rerun.stdout
    assert sparse.stat().st_mtime_ns == written  # the pruned model was not written again
    assert json.loads((out / "steps" / "eval_zero-wanda50.json").read_text())["complete"]


def test_a_step_whose_result_is_kept_needs_nothing_it_was_made_from(tmp_path):
    """A study's committed results continue it elsewhere: an up-to-date step does not bring back its inputs' steps."""
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"prediction": "true", "answer": "true"}\n')
    first, second = _score_step(tmp_path, predictions, "first"), _score_step(tmp_path, predictions, "second")
    second.args.reads = str(first.product)  # an option naming the first step's product makes it an input
    runner = StepRunner(tmp_path)
    assert [s.name for s in runner.needed([first, second], {"second"})] == ["first", "second"]
    runner.run(first)
    runner.run(second)
    (tmp_path / "first.jsonl").unlink()  # the intermediate product is gone (another machine), the result is kept
    assert StepRunner(tmp_path).needed([first, second], {"second"}) == []
    (tmp_path / "second.jsonl").unlink()  # the result is gone too: both run again
    assert [s.name for s in StepRunner(tmp_path).needed([first, second], {"second"})] == ["first", "second"]



@pytest.mark.parametrize("name", ["test.json", "test.jsonl"])  # the reader takes either: the key follows the file read
def test_a_named_data_source_is_keyed_by_the_users_files_it_reads(name, tmp_path, monkeypatch):
    """`--data llm-adapters` reads HellaSwag from the user's datasets/hellaswag/test.json: editing that file reruns
    the evaluation that read it, as editing a file named on the command line does."""
    monkeypatch.chdir(tmp_path)
    hellaswag = tmp_path / "datasets" / "hellaswag" / name
    hellaswag.parent.mkdir(parents=True)
    hellaswag.write_text('{"instruction": "Pick an ending.", "answer": "ending1"}\n')
    args = STAGES["evaluate"].namespace(model="a-model", data="llm-adapters", tasks=["hellaswag"],
                                        output=str(tmp_path / "eval"))
    step = Step("evaluate", args, tmp_path / "eval")
    key = StepRunner(tmp_path / "runs").key(step)
    assert StepRunner(tmp_path / "runs").key(step) == key
    hellaswag.write_text('{"instruction": "Pick another ending.", "answer": "ending2"}\n')
    assert StepRunner(tmp_path / "runs").key(step) != key
