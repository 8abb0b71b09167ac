"""`shears run`: every stage in order; an interrupted run resumes, a changed setting reruns only what depends on it."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from shears_nncf.artifacts import read_json
from shears_nncf.cli import main
from shears_nncf.config import bundled_config
from shears_nncf.errors import ShearsError
from shears_nncf.pipeline import STEPS, _try_command, pipeline_settings, plan
from shears_nncf.steps import StepRunner
from shears_nncf.stages import STAGES


@pytest.fixture(scope="module")
def tiny_run(tiny_llama_dir, tmp_path_factory):
    """A run config for the tiny LLaMA: every stage at its smallest size, so the whole pipeline takes about a minute."""
    folder = tmp_path_factory.mktemp("run")
    calibration = folder / "calibration.txt"
    calibration.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    train = folder / "train.jsonl"
    train.write_text("\n".join(json.dumps({"instruction": f"Is {n} even? Answer format: true/false", "input": "",
                                           "output": f"the correct answer is {str(n % 2 == 0).lower()}",
                                           "answer": str(n % 2 == 0).lower()}) for n in range(16)))
    config = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    config["shears"]["pipeline"] = {
        "model": str(tiny_llama_dir),
        "sparsify": {"ratio": 0.5, "calibration": str(calibration), "nsamples": 4, "seqlen": 32},
        "train": {"data": str(train), "tasks": ["boolq"], "max_steps": 2},
        "search": {"strategy": "heuristic", "metric": "loss", "tasks": ["piqa"], "limit": 4},
        "evaluate": {"tasks": ["boolq"], "limit": 2, "batch_size": 2},
        "export": {"weights": "int8"},
        "bench": {"max_new_tokens": 4, "sparse_rate": None, "rounds": 1},
    }
    config["shears"]["training"].update(batch_size=2, grad_accum=1, max_length=192)
    path = folder / "run.json"
    path.write_text(json.dumps(config))
    return path, folder / "out"


def _stage_keys(out):
    return {name: stage["key"] for name, stage in read_json(out / "pipeline.json")["stages"].items()}


def test_run_writes_every_stage_and_the_summary(tiny_run, capsys):
    config, out = tiny_run
    assert main(["run", "--config", str(config), "--output", str(out)]) == 0
    for stage in ("sparse", "super_adapter", "search", "sub_adapter", "openvino"):
        assert (out / stage / "shears_manifest.json").is_file(), stage
    summary = read_json(out / "summary.json")
    assert summary["sparsity"]["decoder_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert summary["sub_adapter"]["strategy"] == "heuristic" and "boolq" in summary["accuracy"]
    assert summary["bench"] and summary["demonstration_size"]
    assert summary["comparison"] is None  # generation only: no log-likelihood rows
    text = (out / "summary.md").read_text()
    assert "Demonstration size" in text and "boolq" in text and "## Log-likelihood" not in text
    from shears_nncf.pipeline import RunSummary
    from shears_nncf.pipeline.render import summary_markdown

    again = out / "read_back"  # the summary read back is the one written: its JSON and its Markdown
    again.mkdir()
    RunSummary.read(out).write(again)
    assert (again / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    assert summary_markdown(RunSummary.read(out)) == text
    # The deployed forms: bench's own figures, each beside its non-zero parameters (the base's and the adapter's).
    bench = {(row["folder"], row["sparse_rate"]): row for row in read_json(out / "bench" / "bench.json")["rows"]}
    nonzero = read_json(out / "sparse" / "shears_manifest.json")["sparsity"]["nonzero_parameters"]
    for row in summary["bench"]:
        measured = bench[row["folder"], row["sparse_rate"]]
        assert row["nonzero_parameters"] == nonzero + (measured["adapter_parameters"] or 0)
        assert (row["route"], row["decode_tokens_per_s"], row["size_mb"]) == \
            (measured["route"], measured["decode_tokens_per_s"], measured["size_mb"])
        assert (f"| {Path(row['folder']).name} | {row['route']} | {row['backend']} | {row['weights']} "
                f"| {row['sparse_rate'] or '-'} | {row['nonzero_parameters']:,} | {row['size_mb']:.1f} "
                f"| {row['decode_tokens_per_s']:.1f} |") in text
    baked = next(row for row in summary["bench"] if row["route"] == "baked")
    assert baked["nonzero_parameters"] > nonzero  # the IR carries the sub-adapter
    ir_bytes = read_json(out / "openvino" / "shears_manifest.json")["ir_bytes"]
    assert summary["openvino"]["ir_bytes"] == ir_bytes and f"{ir_bytes:,} bytes of weights" in text
    # The line a newcomer pastes: shown as it is, and it talks to the exported IR.
    command = summary["try"]
    assert f"```\n{command}\n```" in text
    argv = shlex.split(command)
    assert argv[:3] == ["shears", "generate", "--openvino"] and argv[3] == str(out / "openvino")
    capsys.readouterr()
    assert main(argv[1:]) == 0
    assert "new tokens, the first after" in capsys.readouterr().err


def test_rerun_after_a_kill_following_training_skips_sparsify_and_training(tiny_run, monkeypatch, capsys):
    config, out = tiny_run
    before = read_json(out / "summary.json")
    trained = (out / "super_adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    # Forget everything after training, then die in the search stage as a killed run would.
    for stage in ("search", "extract", "export", "evaluate", "bench"):
        (out / "steps" / f"{stage}.json").unlink()

    import shears_nncf.search.cli

    def killed(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shears_nncf.search.cli, "search_command", killed)
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--config", str(config), "--output", str(out)])
    monkeypatch.undo()
    capsys.readouterr()

    assert main(["run", "--config", str(config), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sparsify: up to date, skipped" in printed and "train: up to date, skipped" in printed
    assert (out / "super_adapter" / "adapter_model.safetensors").stat().st_mtime_ns == trained
    after = read_json(out / "summary.json")
    for key in ("sparsity", "training", "sub_adapter", "accuracy"):
        assert after[key] == before[key], key


def test_a_changed_evaluation_setting_reruns_only_the_evaluation(tiny_run, capsys):
    config, out = tiny_run
    keys = _stage_keys(out)
    raw = json.loads(config.read_text())
    raw["shears"]["pipeline"]["evaluate"]["limit"] = 1
    changed = config.with_name("run_limit1.json")
    changed.write_text(json.dumps(raw))
    assert main(["run", "--config", str(changed), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    new_keys = _stage_keys(out)
    assert {name for name in keys if keys[name] != new_keys[name]} == {"evaluate"}
    assert read_json(out / "summary.json")["settings"]["evaluate"]["limit"] == 1
    assert "[shears run] evaluate: shears evaluate" in printed


LOGLIK_STEPS = {"evaluate-loglik": "openvino", "evaluate-dense-loglik": "dense", "evaluate-sparse-loglik": "sparse",
                "evaluate-pytorch-loglik": "pytorch"}


def test_asking_for_loglik_scores_dense_sparse_and_adapted_on_the_same_documents(tiny_run, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SHEARS_CACHE", str(tmp_path / "cache"))
    config, out = tiny_run
    keys = _stage_keys(out)
    raw = json.loads(config.read_text())
    raw["shears"]["pipeline"]["evaluate"]["tasks"] = ["boolq", "piqa"]
    raw["shears"]["pipeline"]["evaluate"]["scoring"] = ["generate", "loglik"]
    both = config.with_name("run_both.json")
    both.write_text(json.dumps(raw))
    assert main(["run", "--config", str(both), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    new_keys = _stage_keys(out)
    assert {name for name in new_keys if keys.get(name) != new_keys[name]} == {"evaluate", *LOGLIK_STEPS}
    assert "[shears run] evaluate-loglik: shears evaluate" in printed and "--scoring loglik" in printed
    summary = read_json(out / "summary.json")
    assert summary["scoring"] == "generate" and set(summary["also_scored"]) == {name[9:] for name in LOGLIK_STEPS}
    # Each row scored what its name says, on the same documents.
    results = {model: read_json(out / "eval" / f"results-{name[9:]}.json") for name, model in LOGLIK_STEPS.items()}
    which = {model: (r["model"], r["adapter"], r["openvino"]) for model, r in results.items()}
    assert which == {"dense": (str(raw["shears"]["pipeline"]["model"]), None, None),
                     "sparse": (str(out / "sparse"), None, None),
                     "pytorch": (str(out / "sparse"), str(out / "sub_adapter"), None),
                     "openvino": (None, None, str(out / "openvino"))}
    tasks, limit = ["boolq", "piqa"], raw["shears"]["pipeline"]["evaluate"]["limit"]
    for task in tasks:
        docs = {model: [d["doc"] for d in r["examples"][task]] for model, r in results.items()}
        assert all(d == docs["dense"] for d in docs.values()) and len(docs["dense"]) == limit

    def metric(r, task):
        return "acc_norm" if "acc_norm" in r["tasks"][task] else "acc"

    def mean(r, task):
        return sum(d[metric(r, task)] for d in r["examples"][task]) / len(r["examples"][task])

    comparison = summary["comparison"]
    assert comparison["tasks"] == tasks and comparison["documents"] == {task: limit for task in tasks}
    assert [row["model"] for row in comparison["rows"]] == ["dense", "sparse", "pytorch", "openvino"]
    text = (out / "summary.md").read_text()
    for row in comparison["rows"]:
        r = results[row["model"]]
        assert row["average"] == pytest.approx(100 * sum(mean(r, t) for t in tasks) / len(tasks))
        se = 100 * sum(r["tasks"][t][f"{metric(r, t)}_stderr"] ** 2 for t in tasks) ** 0.5 / len(tasks)
        assert row["se"] == pytest.approx(se)
        cells = " | ".join(f"{100 * mean(r, t):.1f}" for t in tasks)
        assert f"| {row['label']} | {cells} | {row['average']:.1f} ± {row['se']:.1f} |" in text
    labels = {row["model"]: row["label"] for row in comparison["rows"]}
    assert labels["dense"].startswith("dense") and labels["sparse"].startswith("sparse (")
    assert labels["pytorch"] == "sparse + heuristic sub-adapter" and "OpenVINO IR (int8)" in labels["openvino"]
    pairs = [(d["first"], d["second"]) for d in comparison["differences"]]
    assert pairs == [("pytorch", "sparse"), ("sparse", "dense"), ("openvino", "pytorch")]
    for d in comparison["differences"]:
        first, second = results[d["first"]], results[d["second"]]
        assert d["diff"] == pytest.approx(100 * sum(mean(first, t) - mean(second, t) for t in tasks) / len(tasks))
        assert d["low"] <= d["diff"] <= d["high"] and d["se"] >= 0
        assert (f"- {labels[d['first']]} minus {labels[d['second']]}: {d['diff']:+.1f} [{d['low']:+.1f}, "
                f"{d['high']:+.1f}]") in text
    assert f"on the first {limit} documents of each task, the same for every row; a demonstration size" in text
    # The generation column stays in its own table; the log-likelihood rows are not repeated there.
    assert "| task | accuracy, generation (%) |\n" in text and "log-likelihood (%) |" not in text
    raw["shears"]["pipeline"]["evaluate"]["scoring"] = ["loglik", "loglik"]
    both.write_text(json.dumps(raw))
    assert main(["run", "--config", str(both), "--output", str(out)]) == 2
    assert "a list of different ones" in capsys.readouterr().err


def test_a_config_that_names_no_model_is_an_error_and_writes_nothing(tmp_path, capsys):
    config = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    del config["shears"]["pipeline"]["model"]
    path = tmp_path / "no_model.json"
    path.write_text(json.dumps(config))
    assert main(["run", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "names no model" in error and "--model" in error
    assert not (tmp_path / "out").exists()


def test_offline_paper_run_fails_at_once_naming_the_model_and_writes_nothing(tmp_path):
    out = tmp_path / "X"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}  # an empty cache
    done = subprocess.run([sys.executable, "-m", "shears_nncf", "run", "--config", str(bundled_config("llama7b_math_50")),
                           "--output", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("shears run: error:")]
    assert len(errors) == 1 and "yahma/llama-7b-hf" in errors[0] and "download" in errors[0]
    assert not out.exists()


def test_paper_run_plans_wanda_on_c4_in_fp16_and_loads_every_torch_stage_in_fp16(tmp_path):
    raw = json.loads(bundled_config("mpt7b_gsm8k_50").read_text())
    settings = pipeline_settings(raw, model=None, data=None)
    steps = {step.stage: step.args for step in plan(tmp_path / "train.json", tmp_path / "out", settings)}
    sparsify = steps["sparsify"]
    assert (sparsify.model, sparsify.ratio, sparsify.method, sparsify.pattern, sparsify.calibration) == \
        ("mosaicml/mpt-7b", 0.5, "wanda", "unstructured", "c4")
    assert (sparsify.nsamples, sparsify.seqlen, sparsify.seed, sparsify.dtype) == (128, 2048, 0, "fp16")
    assert "--calibration c4 --nsamples 128 --seqlen 2048 --dtype fp16" in " ".join(STAGES["sparsify"].argv(sparsify))
    for name in ("train", "search"):
        assert steps[name].dtype == "fp16"
    assert steps["train"].data == "gsm8k"


def _keys(config_raw, out):
    """Every step's key for a config, computed as `shears run` does before running anything."""
    settings = pipeline_settings(config_raw, model=None, data=None)
    return StepRunner(out).plan_keys(plan(out / "train_config.json", out, settings))


def test_an_edited_input_file_reruns_exactly_the_steps_downstream_of_it(tmp_path):
    calibration, train = tmp_path / "calibration.txt", tmp_path / "train.jsonl"
    calibration.write_text("first line\nsecond line\n")
    train.write_text('{"instruction": "a", "input": "", "output": "b", "answer": "b"}\n')
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    raw["shears"]["pipeline"]["sparsify"]["calibration"] = str(calibration)
    raw["shears"]["pipeline"]["train"]["data"] = str(train)
    (tmp_path / "train_config.json").write_text("{}")
    before = _keys(raw, tmp_path)

    train.write_text('{"instruction": "a", "input": "", "output": "c", "answer": "c"}\n')
    after_data = _keys(raw, tmp_path)
    # The demo's log-likelihood rows of the dense and the sparse model read nothing of the training.
    evaluations = {"evaluate", "evaluate-dense", "evaluate-sparse", "evaluate-pytorch"}
    assert evaluations <= set(before)
    assert {s for s in before if before[s] != after_data[s]} == \
        {"train", "search", "extract", "export", "bench", *evaluations} - {"evaluate-dense", "evaluate-sparse"}

    calibration.write_text("first line\nan edited second line\n")
    after_calibration = _keys(raw, tmp_path)
    # sparsify, and all after it but the dense model's row
    assert {s for s in before if after_data[s] != after_calibration[s]} == set(before) - {"evaluate-dense"}

    raw["shears"]["pipeline"]["evaluate"]["limit"] = 7
    after_setting = _keys(raw, tmp_path)
    assert {s for s in before if after_calibration[s] != after_setting[s]} == evaluations


def test_the_demo_trains_on_lm_eval_records_of_the_tasks_it_scores_keyed_by_the_sources_name(tmp_path, monkeypatch):
    """Issue 32: the demo scores by log-likelihood in lm-eval's wording, so it trains on the records of that wording
    (`--data lm-eval`), of the tasks it scores; like "default", the named source is keyed by its name and options."""
    monkeypatch.chdir(tmp_path)
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    steps = {step.name: step for step in plan(tmp_path / "train_config.json", tmp_path, pipeline_settings(raw, None, None))}
    train, evaluate = steps["train"].args, steps["evaluate"].args
    assert train.data == "lm-eval" and train.tasks == evaluate.tasks and evaluate.scoring == "loglik"
    assert {"evaluate", "evaluate-dense", "evaluate-sparse", "evaluate-pytorch"} <= set(steps)  # with paired intervals
    keys = _keys(raw, tmp_path)  # no file of the source's is read to key it: only its name and the step's options
    raw["shears"]["pipeline"]["train"]["tasks"] = ["arc_easy", "piqa"]
    changed = _keys(raw, tmp_path)
    assert {name for name in keys if keys[name] != changed[name]} == \
        {"train", "search", "extract", "export", "bench", "evaluate", "evaluate-pytorch"}


def test_shears_run_and_the_stage_commands_share_one_set_of_defaults(tmp_path, monkeypatch):
    from shears_nncf.cli import build_parser
    from shears_nncf.stages import Stage, option

    search = STAGES["search"]
    changed = tuple(option("--limit", type=int, default=123) if o.dest == "limit" else o for o in search.options)
    monkeypatch.setitem(STAGES, "search", Stage(search.name, search.help, search.handler, changed))
    assert build_parser().parse_args(["search", "--super-adapter", "x", "--strategy", "heuristic", "--output", "y"]).limit == 123
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    del raw["shears"]["pipeline"]["search"]["limit"]
    steps = {step.stage: step for step in plan(tmp_path / "c.json", tmp_path, pipeline_settings(raw, None, None))}
    assert steps["search"].args.limit == 123


def test_a_pipeline_section_with_an_unknown_or_wired_option_is_a_one_line_error(tmp_path, capsys):
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    raw["shears"]["pipeline"]["search"]["limits"] = 3
    with pytest.raises(ShearsError, match=r"`shears search` has no option 'limits'; its options are .*limit"):
        pipeline_settings(raw, None, None)
    del raw["shears"]["pipeline"]["search"]["limits"]
    raw["shears"]["pipeline"]["export"]["output"] = "elsewhere"
    with pytest.raises(ShearsError, match="set by `shears run` itself"):
        pipeline_settings(raw, None, None)


def test_the_readme_shows_the_generate_line_that_the_demos_summary_prints():
    root = Path(__file__).resolve().parents[1]
    output = re.search(r"shears run .*--output (\S+)", (root / "Makefile").read_text()).group(1)
    protocol = json.loads(bundled_config("demo/smollm2_commonsense").read_text())["shears"]["protocol"]
    # The README's demo section shows it as a code block, wrapped with `\` continuations: compare the words.
    readme = (root / "README.md").read_text().replace("\\\n", " ")
    shown = [shlex.split(line) for line in readme.splitlines() if line.strip().startswith("shears generate ")]
    assert shlex.split(_try_command(Path(output) / STEPS["export"], protocol)) in shown
