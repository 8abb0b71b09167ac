"""`shears export --weights int4`: NNCF INT4 groups (asymmetric by default) on the decoder linears, INT8 for the rest."""

import pytest

from shears_nncf.artifacts import read_manifest
from shears_nncf.cli import main

from conftest import save_sparse_tiny_llama


def _decoder(manifest):
    return [layer for layer in manifest["layers"] if ".layers." in layer["layer"]]


@pytest.fixture(scope="module")
def int4_ir(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """The tiny LLaMA, 50% magnitude-pruned, exported with --weights int4 (NNCF's defaults)."""
    root = tmp_path_factory.mktemp("int4")
    save_sparse_tiny_llama(tiny_llama_factory, tiny_tokenizer, root / "sparse")
    assert main(["export", "--model", str(root / "sparse"), "--output", str(root / "ir"), "--weights", "int4"]) == 0
    return root / "ir"


def test_int4_export_puts_decoder_linears_in_u4_and_records_the_settings(int4_ir):
    manifest = read_manifest(int4_ir, stage="export")
    assert manifest["weights"] == "int4"
    assert manifest["compression"] == {"mode": "int4_asym", "group_size": 128, "ratio": 1.0, "backup": "int8_asym",
                                       "group_size_fallback": "adjust", "all_layers": False}
    decoder = _decoder(manifest)
    assert len(decoder) == 2 * 7 and all(layer["dtype"] == "u4" for layer in decoder)
    # The tiny LLaMA's 64 inputs are fewer than a group of 128: NNCF fell back to one group of 64 per row.
    q_proj = next(layer for layer in decoder if layer["layer"].endswith("0.self_attn.q_proj"))
    assert q_proj["shape"][-2:] == [1, 64]
    lm_head = next(layer for layer in manifest["layers"] if layer["layer"] == "lm_head")
    assert lm_head["dtype"] == "u8"  # NNCF keeps the last linear in the backup precision
    assert manifest["ir_bytes"] == (int4_ir / "openvino_model.bin").stat().st_size
    # A pruned zero is quantized to its group's zero point: it dequantizes to exactly zero.
    assert all(layer["sparsity"] >= 0.5 for layer in decoder)


def test_int4_ir_loads_in_optimum_and_generates(int4_ir, tiny_tokenizer):
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(int4_ir, device="CPU")
    ids = tiny_tokenizer("The quick brown fox", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_int4_ratio_leaves_part_of_the_decoder_in_int8(tiny_llama_dir, tmp_path):
    out = tmp_path / "ir"
    assert main(["export", "--model", str(tiny_llama_dir), "--output", str(out), "--weights", "int4",
                 "--int4-ratio", "0.5", "--group-size", "64"]) == 0
    manifest = read_manifest(out, stage="export")
    dtypes = {layer["dtype"] for layer in _decoder(manifest)}
    assert dtypes == {"u4", "u8"} and manifest["compression"]["ratio"] == 0.5


def test_int4_symmetric_with_all_layers_puts_the_head_in_int4_too_and_keeps_the_zeros(tiny_llama_factory, tiny_tokenizer,
                                                                                    tmp_path):
    save_sparse_tiny_llama(tiny_llama_factory, tiny_tokenizer, tmp_path / "sparse")
    assert main(["export", "--model", str(tmp_path / "sparse"), "--output", str(tmp_path / "ir"), "--weights", "int4",
                 "--int4-mode", "int4_sym", "--int4-all-layers", "--group-size", "32"]) == 0
    manifest = read_manifest(tmp_path / "ir", stage="export")
    assert (manifest["compression"]["mode"], manifest["compression"]["all_layers"]) == ("int4_sym", True)
    decoder = _decoder(manifest)
    assert all(layer["dtype"] == "i4" and layer["shape"][-1] == 32 for layer in decoder)  # signed, groups of 32
    lm_head = next(layer for layer in manifest["layers"] if layer["layer"] == "lm_head")
    assert lm_head["dtype"] == "i4"  # without --int4-all-layers NNCF keeps it in INT8 (the test above)
    assert all(layer["sparsity"] >= 0.5 for layer in decoder)  # symmetric: q = 0 dequantizes to exactly 0


@pytest.mark.parametrize("flags, message", [(["--int4-ratio", "1.5"], "--int4-ratio: expected a number in (0, 1]"),
                                            (["--group-size", "0"], "--group-size: expected a group size")])
def test_int4_export_refuses_bad_settings_and_writes_nothing(tiny_llama_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "ir"
    with pytest.raises(SystemExit) as refused:  # argparse refuses the flag
        main(["export", "--model", str(tiny_llama_dir), "--output", str(out), "--weights", "int4", *flags])
    assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()
