"""`shears run`: every stage in order; an interrupted run resumes, a changed setting reruns only what depends on it."""

import json

import pytest

from shears_nncf.artifacts import read_json
from shears_nncf.cli import main
from shears_nncf.config import bundled_config


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
        "sparsity": {"ratio": 0.5, "calibration": str(calibration), "nsamples": 4, "seqlen": 32},
        "training": {"data": str(train), "tasks": ["boolq"], "max_steps": 2},
        "search": {"strategy": "heuristic", "metric": "loss", "tasks": ["piqa"], "limit": 4},
        "evaluation": {"tasks": ["boolq"], "limit": 2, "batch_size": 2},
        "export": {"weights": "int8"},
        "bench": {"max_new_tokens": 4, "sparse_rate": None},
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
    assert summary["sparsity"]["decoder_linear_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert summary["sub_adapter"]["strategy"] == "heuristic" and "boolq" in summary["accuracy"]
    assert summary["bench"] and summary["demonstration_size"]
    text = (out / "summary.md").read_text()
    assert "Demonstration size" in text and "boolq" in text


def test_rerun_after_a_kill_following_training_skips_sparsify_and_training(tiny_run, monkeypatch, capsys):
    config, out = tiny_run
    before = read_json(out / "summary.json")
    trained = (out / "super_adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    # Forget everything after training, then die in the search stage as a killed run would.
    state = read_json(out / "pipeline.json")
    for stage in ("search", "sub_adapter", "openvino", "eval", "bench"):
        state["stages"].pop(stage)
    (out / "pipeline.json").write_text(json.dumps(state))

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
    assert "sparse: up to date, skipped" in printed and "super_adapter: up to date, skipped" in printed
    assert (out / "super_adapter" / "adapter_model.safetensors").stat().st_mtime_ns == trained
    after = read_json(out / "summary.json")
    for key in ("sparsity", "training", "sub_adapter", "accuracy"):
        assert after[key] == before[key], key


def test_a_changed_evaluation_setting_reruns_only_the_evaluation(tiny_run, capsys):
    config, out = tiny_run
    keys = _stage_keys(out)
    raw = json.loads(config.read_text())
    raw["shears"]["pipeline"]["evaluation"]["limit"] = 1
    changed = config.with_name("run_limit1.json")
    changed.write_text(json.dumps(raw))
    assert main(["run", "--config", str(changed), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    new_keys = _stage_keys(out)
    assert {name for name in keys if keys[name] != new_keys[name]} == {"eval"}
    assert read_json(out / "summary.json")["settings"]["evaluation"]["limit"] == 1
    assert "[shears run] eval: shears evaluate" in printed
