"""Faults a user meets while a command runs: each is one line and exit status 2, and nothing is left behind."""

import errno
import json

import torch
from safetensors import SafetensorError

from shears_nncf.cli import main


def _sparsify(model_dir, out, calibration):
    return main(["sparsify", "--model", str(model_dir), "--ratio", "0.5", "--calibration", str(calibration),
                 "--nsamples", "2", "--seqlen", "16", "--output", str(out)])


def _calibration(tmp_path):
    (tmp_path / "calib.txt").write_text("Twelve apples and three pears make fifteen pieces of fruit. " * 20)
    return tmp_path / "calib.txt"


def _one_line(capsys) -> str:
    """shears' own stderr (progress bars of transformers aside): one error line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("shears ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    import transformers.modeling_utils

    def full(*args, **kwargs):  # what safetensors raises on ENOSPC
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    assert _sparsify(tiny_llama_dir, tmp_path / "sparse", _calibration(tmp_path)) == 2
    assert "is full (no space left on device) while writing" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt"]  # no partial folder


def test_an_oserror_enospc_is_the_same_line(tmp_path):
    import pytest

    from shears_nncf.artifacts import atomic_output_dir
    from shears_nncf.errors import ShearsError

    with pytest.raises(ShearsError, match="no space left on device"):
        with atomic_output_dir(tmp_path / "out"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_a_nan_weight_is_refused_before_any_work(tiny_llama_factory, tiny_tokenizer, tmp_path, capsys):
    model = tiny_llama_factory()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    model.save_pretrained(tmp_path / "nan_model")
    tiny_tokenizer.save_pretrained(tmp_path / "nan_model")
    assert _sparsify(tmp_path / "nan_model", tmp_path / "sparse", _calibration(tmp_path)) == 2
    assert _one_line(capsys).endswith("has 1 NaN or infinite weights in model.layers.1.mlp.up_proj.weight (128, 64); "
                                      "give a model whose weights are all finite (a damaged or wrongly converted "
                                      "checkpoint?)")
    assert not (tmp_path / "sparse").exists()


def test_a_learning_rate_of_nan_is_one_line_naming_it(tiny_llama_dir, tmp_path, capsys):
    from shears_nncf.config import bundled_config

    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    raw["bootstrapNAS"]["training"]["schedule"]["list_stage_descriptions"][0]["init_lr"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(raw))  # Python's json writes and reads NaN
    assert main(["train", "--config", str(tmp_path / "nan.json"), "--model", str(tiny_llama_dir), "--data", "default",
                 "--max-steps", "1", "--output", str(tmp_path / "super")]) == 2
    assert _one_line(capsys).endswith("bootstrapNAS.training.schedule.list_stage_descriptions[0].init_lr is nan; "
                                      "give a finite number")
    assert not (tmp_path / "super").exists()  # (the --lr flag refuses nan itself: "expected a positive number")
