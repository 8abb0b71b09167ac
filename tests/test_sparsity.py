"""Wanda, magnitude and N:M masks on the tiny random LLaMA, calibration loaders, and `shears sparsify` input checks."""

import json
import math

import pytest
import torch
from transformers import GPT2Config

from shears_nncf.cli import main
from shears_nncf.data.calibration import calibration_samples
from shears_nncf.evaluation.perplexity import perplexity
from shears_nncf.models import load_model
from shears_nncf.sparsity.api import sparsify
from shears_nncf.sparsity.report import folder_sparsity, model_sparsity

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
TEXT = " ".join(f"The {n}th sentence of a calibration text talks about {w} things." for n, w in
                zip(range(200), ["green", "quiet", "large", "small", "bright", "odd"] * 40))


@pytest.fixture(scope="module")
def samples():
    torch.manual_seed(1)
    return [torch.randint(0, 1000, (1, 24)) for _ in range(3)]


def reference_prune(model, samples, ratio, method, nm=None):
    """Sequential pruning written out directly: block i is scored on a full forward of the model whose
    blocks before i are already pruned; all of block i's linears are pruned from that one pass."""
    for block in model.model.layers:
        seen = {name: [] for name in LINEARS}
        hooks = [block.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: seen[name].append(a[0].reshape(-1, a[0].shape[-1])))
                 for name in LINEARS]
        with torch.no_grad():
            for ids in samples:
                model(input_ids=ids, use_cache=False)
        for hook in hooks:
            hook.remove()
        for name in LINEARS:
            weight = block.get_submodule(name).weight.data
            score = weight.abs().double()
            if method == "wanda":
                score = score * torch.cat(seen[name]).double().norm(dim=0)
            rows, cols = weight.shape
            if nm is None:
                order = score.argsort(dim=1)[:, : int(cols * ratio)]
                weight.scatter_(1, order, 0.0)
            else:
                n, m = nm
                order = score.reshape(rows, cols // m, m).argsort(dim=2)[:, :, :n]
                weight.view(rows, cols // m, m).scatter_(2, order, 0.0)


def zero_masks(model):
    return {f"{i}.{name}": (block.get_submodule(name).weight == 0) for i, block in enumerate(model.model.layers) for name in LINEARS}


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_unstructured_masks_equal_direct_per_row_scores_with_exactly_k_zeros_per_row(tiny_llama_factory, samples, method):
    ratio = 0.5
    ours, reference = tiny_llama_factory(0), tiny_llama_factory(0)
    sparsify(ours, samples, ratio, method)
    reference_prune(reference, samples, ratio, method)
    ours_masks, reference_masks = zero_masks(ours), zero_masks(reference)
    for name, mask in ours_masks.items():
        assert torch.equal(mask, reference_masks[name]), name
        assert (mask.sum(dim=1) == int(mask.shape[1] * ratio)).all(), name


def test_wanda_masks_differ_from_magnitude_masks(tiny_llama_factory, samples):
    wanda, magnitude = tiny_llama_factory(0), tiny_llama_factory(0)
    sparsify(wanda, samples, 0.5, "wanda")
    sparsify(magnitude, samples, 0.5, "magnitude")
    assert any(not torch.equal(a, b) for a, b in zip(zero_masks(wanda).values(), zero_masks(magnitude).values()))


def test_wanda_30_percent_zeros_int_cols_times_ratio_per_row(tiny_llama_factory, samples):
    model = tiny_llama_factory(0)
    sparsify(model, samples, 0.3, "wanda")
    for name, mask in zero_masks(model).items():
        assert (mask.sum(dim=1) == int(mask.shape[1] * 0.3)).all(), name


def test_2_4_wanda_masks_equal_direct_scores_with_two_zeros_in_every_group_of_four(tiny_llama_factory, samples):
    ours, reference = tiny_llama_factory(0), tiny_llama_factory(0)
    sparsify(ours, samples, 0.5, "wanda", "2:4")
    reference_prune(reference, samples, 0.5, "wanda", nm=(2, 4))
    reference_masks = zero_masks(reference)
    for name, mask in zero_masks(ours).items():
        assert torch.equal(mask, reference_masks[name]), name
        assert (mask.reshape(mask.shape[0], -1, 4).sum(dim=2) == 2).all(), name


def test_embeddings_and_lm_head_stay_dense(tiny_llama_factory, samples):
    model, dense = tiny_llama_factory(0), tiny_llama_factory(0)
    sparsify(model, samples, 0.5, "wanda")
    assert torch.equal(model.get_input_embeddings().weight, dense.get_input_embeddings().weight)
    assert torch.equal(model.lm_head.weight, dense.lm_head.weight)
    stats = model_sparsity(model)
    assert stats["decoder_sparsity"] == pytest.approx(0.5)
    assert len(stats["layers"]) == 2 * len(LINEARS)


def test_txt_calibration_windows_are_seeded_contiguous_slices(tmp_path, tokenizer):
    path = tmp_path / "calib.txt"
    path.write_text(TEXT)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    first = calibration_samples(str(path), tokenizer, nsamples=5, seqlen=16, seed=3)
    again = calibration_samples(str(path), tokenizer, nsamples=5, seqlen=16, seed=3)
    other = calibration_samples(str(path), tokenizer, nsamples=5, seqlen=16, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    for window in first:
        assert window.shape == (1, 16)
        window = window[0].tolist()
        assert any(ids[s : s + 16] == window for s in range(len(ids) - 15))


def test_jsonl_calibration_takes_lines_in_order_truncated(tmp_path, tokenizer):
    lines = ["first line of text", "a second, rather longer line of calibration text than the first", "third"]
    path = tmp_path / "calib.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in lines) + "\n")
    samples = calibration_samples(str(path), tokenizer, nsamples=None, seqlen=6, seed=0)
    assert [s[0].tolist() for s in samples] == [tokenizer(t, add_special_tokens=False)["input_ids"][:6] for t in lines]
    assert len(calibration_samples(str(path), tokenizer, nsamples=2, seqlen=6, seed=0)) == 2


def test_perplexity_is_exp_of_mean_window_nll(tiny_llama_factory, tiny_tokenizer):
    model = tiny_llama_factory(0)
    ids = torch.tensor(tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        losses = [model(input_ids=ids[i * 32 : (i + 1) * 32][None], labels=ids[i * 32 : (i + 1) * 32][None]).loss for i in range(3)]
    expected = math.exp(torch.stack(losses).mean().item())
    assert perplexity(model, tiny_tokenizer, TEXT, seqlen=32, nsamples=3, device="cpu") == \
        pytest.approx(expected, rel=1e-5)


def test_cli_sparsify_writes_model_tokenizer_and_manifest_then_reports(tiny_llama_dir, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)
    out = tmp_path / "sparse"
    assert main(["sparsify", "--model", str(tiny_llama_dir), "--ratio", "0.5", "--calibration", str(calib),
                 "--nsamples", "4", "--seqlen", "32", "--output", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    manifest = json.loads((out / "shears_manifest.json").read_text())
    assert manifest["stage"] == "sparsify" and manifest["method"] == "wanda"
    assert manifest["calibration"] == {"source": str(calib), "nsamples": 4, "seqlen": 32, "tokens": 128,
                                       "uncalibrated": []}
    assert manifest["sparsity"]["decoder_sparsity"] == pytest.approx(0.5)
    assert folder_sparsity(out) == manifest["sparsity"]
    assert model_sparsity(load_model(out))["decoder_sparsity"] == pytest.approx(0.5)
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nonzero_parameters"] == manifest["sparsity"]["nonzero_parameters"]
    assert main(["report", str(out)]) == 0
    assert "decoder weight sparsity" in capsys.readouterr().out


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, extra", [
    ("ratio above 1", ["--ratio", "1.5"]),
    ("ratio 0", ["--ratio", "0"]),
    ("2:4 with ratio 0.4", ["--ratio", "0.4", "--pattern", "2:4"]),
    ("unknown pattern", ["--ratio", "0.5", "--pattern", "3:7"]),
    ("missing calibration file", ["--ratio", "0.5", "--calibration", "no/such/file.txt"]),
    ("missing model path", ["--ratio", "0.5", "--model", "./no/such/model"]),
    ("unknown architecture", ["--ratio", "0.5", "--model", "GPT2"]),
])
def test_cli_sparsify_bad_input_exits_2_with_one_line_and_writes_nothing(case, extra, tiny_llama_dir, gpt2_dir, tmp_path, capsys):
    args = {"--model": str(tiny_llama_dir), "--calibration": "default"}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = str(gpt2_dir) if value == "GPT2" else value
    argv = ["sparsify", "--output", str(tmp_path / "out")] + [x for kv in args.items() for x in kv]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses the flag (a ratio out of range): its usage, then one error line
        code = e.code
    assert code == 2, case
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "error" in err.splitlines()[-1], err
    assert len(err.splitlines()) == 1 or err.startswith("usage: shears sparsify"), err
    assert list(tmp_path.iterdir()) == []
