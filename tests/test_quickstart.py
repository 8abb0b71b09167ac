"""examples/quickstart.py, the Python API's stage functions end to end, at tiny size: every stage writes its folder,
the IR keeps the sparse base's zeros, and both rows are scored."""

import importlib.util
from pathlib import Path

from shears_nncf.export.openvino import OpenVINOModel
from shears_nncf.sparsity.api import SparseModel

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_runs_every_stage_through_the_python_api(tiny_llama_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    scores = quickstart.main(["--model", str(tiny_llama_dir), "--output", str(tmp_path), "--steps", "2",
                              "--records", "16", "--documents", "4"])
    assert set(scores) == {"sparse", "sparse + sub-adapter (INT8 IR)"}
    assert all(0 <= value <= 1 for value in scores.values())
    sparse = SparseModel.read(tmp_path / "sparse")
    assert abs(sparse.sparsity["decoder_sparsity"] - 0.5) < 0.01
    ir = OpenVINOModel.read(tmp_path / "openvino")
    assert ir.weights == "int8" and ir.sparsity["base_sparsity"] >= 0.5  # the adapter rides beside, unmerged
    assert "ARC-Easy accuracy: sparse" in capsys.readouterr().out
