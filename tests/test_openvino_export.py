"""OpenVINO export of a sparse tiny LLaMA with an unmerged, non-zero LoRA adapter; the benchmark's plumbing."""

import json

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from shears_nncf.artifacts import read_manifest
from shears_nncf.bench import benchmark, cpu_isa, format_table
from shears_nncf.cli import main
from shears_nncf.evaluation.openvino_backend import OpenVINOGenerator
from shears_nncf.export.openvino import IR_XML, export_openvino, ir_zero_masks

PROMPTS = ["The quick brown fox", "Question: is water wet? Answer:", "Once upon a time"]
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
# INT8 per-channel weights (and the adapter's too): measured max |diff| ~1e-2 of max |logit| on this model.
INT8_LOGIT_TOLERANCE = 5e-2


def _sparsify_rows(model, ratio=0.5, seed=0):
    """A random row-wise mask, as Wanda's (each row loses the same number of weights)."""
    generator = torch.Generator().manual_seed(seed)
    for block in model.model.layers:
        for linear in [m for m in block.modules() if isinstance(m, torch.nn.Linear)]:
            w = linear.weight.data
            order = torch.rand(w.shape, generator=generator).argsort(dim=1)
            w[order < int(w.shape[1] * ratio)] = 0.0
    return model


def _lora(model, seed=0, r=8):
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)  # PEFT starts B at zero: the adapter would be invisible
    return peft_model.eval()


@pytest.fixture(scope="module")
def sparse_with_adapter(tiny_llama_factory, tokenizer, tmp_path_factory):
    """(sparse model folder, adapter folder, the PyTorch PEFT model) of the tiny LLaMA, sized for the embedded tokenizer
    itself (not the tiny models' cut of it): its IR carries the real tokenizer's OpenVINO conversion, which GenAI runs."""
    root = tmp_path_factory.mktemp("ov_export")
    sparse = _sparsify_rows(tiny_llama_factory(seed=1, tokenizer=tokenizer))
    sparse.save_pretrained(root / "sparse")
    tokenizer.save_pretrained(root / "sparse")
    peft_model = _lora(sparse)
    peft_model.save_pretrained(root / "adapter")
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(root / "sparse")
    (root / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    return root / "sparse", root / "adapter", peft_model


@pytest.fixture(scope="module")
def exported(sparse_with_adapter, tmp_path_factory):
    """The same sparse model + adapter exported as-is (fp32) and with INT8 weights."""
    sparse, adapter, _ = sparse_with_adapter
    root = tmp_path_factory.mktemp("ov_irs")
    return {w: export_openvino(sparse, root / w, adapter=adapter, weights=w) for w in ("as-is", "int8")}


def _ir_logits(folder, batch):
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(folder, ov_config={"INFERENCE_PRECISION_HINT": "f32"}, device="CPU")
    return model(**batch).logits.numpy()


def _torch_logits(peft_model, batch):
    with torch.no_grad():
        return peft_model(**batch).logits.numpy()


def _relative_error(actual, expected, mask):
    return float(np.abs(actual - expected)[mask].max() / np.abs(expected[mask]).max())


def test_fp32_ir_logits_match_the_peft_model(exported, sparse_with_adapter, tokenizer):
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    mask = batch["attention_mask"].numpy().astype(bool)
    expected = _torch_logits(sparse_with_adapter[2], batch)
    assert _relative_error(_ir_logits(exported["as-is"], batch), expected, mask) < 1e-4


def test_fp32_ir_greedy_generation_gives_the_peft_models_tokens(exported, sparse_with_adapter, tokenizer):
    peft_model = sparse_with_adapter[2]
    expected = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        out = peft_model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    generator = OpenVINOGenerator(exported["as-is"], batch_size=2, precision="f32")
    assert generator.generate(PROMPTS, max_new_tokens=8) == expected


def test_fp32_ir_weight_zeros_are_the_sparse_torch_zeros(exported, sparse_with_adapter):
    masks = ir_zero_masks(exported["as-is"] / IR_XML)
    peft_model = sparse_with_adapter[2]
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            assert np.array_equal(masks[name], (module.weight == 0).numpy()), name


def test_adapter_stays_unmerged_and_the_manifest_counts_ir_zeros(exported):
    manifest = read_manifest(exported["as-is"], stage="export")
    assert manifest["adapter_merged"] is False
    layers = {layer["layer"]: layer for layer in manifest["layers"]}
    assert layers["model.layers.0.self_attn.q_proj.base_layer"]["sparsity"] == pytest.approx(0.5)
    assert layers["model.layers.0.self_attn.q_proj.lora_B.default"]["adapter"]
    assert layers["model.layers.0.self_attn.q_proj.lora_A.default"]["sparsity"] < 0.01  # dense, not merged
    assert manifest["sparsity"]["base_sparsity"] == pytest.approx(0.5)


def test_int8_weights_keep_every_pruned_zero_and_logits_stay_close(exported, sparse_with_adapter, tokenizer):
    fp32, int8 = ir_zero_masks(exported["as-is"] / IR_XML), ir_zero_masks(exported["int8"] / IR_XML)
    manifest = read_manifest(exported["int8"], stage="export")
    base = [layer for layer in manifest["layers"] if not layer["adapter"] and "lm_head" not in layer["layer"]]
    assert base and all(layer["dtype"] == "i8" for layer in base)
    for layer in base:
        name = layer["layer"]
        assert np.all(int8[name][fp32[name]]), f"{name}: a pruned zero became non-zero"
        # Rounding may add a few zeros (|w| < scale / 2), never lose one.
        assert int8[name].mean() - fp32[name].mean() < 0.02, name
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    mask = batch["attention_mask"].numpy().astype(bool)
    expected = _torch_logits(sparse_with_adapter[2], batch)
    assert _relative_error(_ir_logits(exported["int8"], batch), expected, mask) < INT8_LOGIT_TOLERANCE


def test_w8a8_export_through_the_cli_keeps_pruned_zeros(sparse_with_adapter, tmp_path):
    sparse, adapter, _ = sparse_with_adapter
    out, calibration = tmp_path / "w8a8", tmp_path / "calibration.jsonl"
    texts = PROMPTS + ["Persian, also known as Farsi, is a Western Iranian language."]
    calibration.write_text("\n".join(json.dumps({"text": text}) for text in texts))
    assert main(["export", "--model", str(sparse), "--adapter", str(adapter), "--output", str(out),
                 "--weights", "w8a8", "--calibration", str(calibration)]) == 0
    assert read_manifest(out, stage="export")["calibration"]["nsamples"] == 4
    masks = ir_zero_masks(out / IR_XML)
    layers = [layer for layer in read_manifest(out, stage="export")["layers"] if ".layers." in layer["layer"]]
    base = [layer for layer in layers if not layer["adapter"]]
    assert all(layer["dtype"] == "i8" for layer in base)
    assert all(masks[layer["layer"]].mean() >= 0.5 for layer in base)


def test_openvino_genai_llm_pipeline_runs_the_exported_folder(exported):
    import openvino_genai

    pipeline = openvino_genai.LLMPipeline(str(exported["as-is"]), "CPU")
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = 5
    text = pipeline.generate(PROMPTS[0], config)
    assert isinstance(text, str) and text


def test_export_refuses_an_adapter_of_another_base_and_writes_nothing(tiny_llama_factory, sparse_with_adapter,
                                                                      tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    sparse, _, _ = sparse_with_adapter
    config = tiny_llama_factory().config.to_dict()
    config.update(hidden_size=32, intermediate_size=64)
    other = _lora(LlamaForCausalLM(LlamaConfig.from_dict(config)))
    other.save_pretrained(tmp_path / "other_adapter")
    out = tmp_path / "ir"
    assert main(["export", "--model", str(sparse), "--adapter", str(tmp_path / "other_adapter"),
                 "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: transformers' loading progress
    assert error.startswith("shears export: error:") and "does not fit the model" in error
    assert not out.exists() and not list(tmp_path.glob(".ir*"))


def test_bench_refuses_a_folder_that_is_not_an_ir(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["bench", str(tmp_path), "--json", str(tmp_path / "out.json")]) == 2
    assert "is not an OpenVINO IR folder" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_bench_refuses_a_sparse_rate_outside_0_1(rate, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:  # argparse refuses the flag, before any folder is looked at
        main(["bench", str(tmp_path), "--sparse-rate", rate, "--json", str(tmp_path / "o.json")])
    assert refused.value.code == 2 and "--sparse-rate: expected a number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_bench_reports_kernels_and_says_when_the_sparse_path_did_not_run(exported, sparse_with_adapter, tmp_path):
    _, adapter, _ = sparse_with_adapter
    report = benchmark([exported["as-is"], adapter], prompts=PROMPTS[:1], max_new_tokens=3, sparse_rate=0.5,
                       json_out=tmp_path / "bench.json", rounds=1)
    rows = report["rows"]
    assert [(r["backend"], r["sparse_rate"]) for r in rows] == [("openvino", None), ("openvino", 0.5), ("pytorch", None)]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    fc_layers = 2 * 7 + 2 * 5 * 2 + 1  # base linears, LoRA A and B, lm_head
    assert sum(rows[1]["fc_kernels"]["decode"].values()) == fc_layers
    # fp32 weights never take the sparse INT8 path, whatever the rate: the table must say so.
    assert not any("sparse" in k for k in rows[1]["fc_kernels"]["decode"])
    table = format_table(report)
    reason = "needs INT8 weights+activations" if cpu_isa()["amx"] else "no AMX on this CPU"
    assert f"no ({reason})" in table and "n/a (eager)" in table
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][2]["backend"] == "pytorch"


def test_export_refuses_a_missing_calibration_file_and_writes_nothing(sparse_with_adapter, tmp_path, capsys):
    sparse, _, _ = sparse_with_adapter
    out = tmp_path / "ir"
    assert main(["export", "--model", str(sparse), "--output", str(out), "--weights", "w8a8",
                 "--calibration", str(tmp_path / "missing.txt")]) == 2
    assert "calibration file" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()


def test_bench_choice_table_marks_the_deployments_no_other_beats_on_speed_and_accuracy():
    from shears_nncf.bench import format_choice

    def row(name, tok_s, weights="int8", rate=None):
        return {"folder": f"runs/{name}", "status": "ok", "tokens_per_s": tok_s, "weights": weights, "sparse_rate": rate,
                "size_mb": 100.0}

    report = {"rows": [row("fp32", 10.0, "as-is"), row("int8", 30.0), row("w8a8", 35.0, "w8a8", 0.5),
                       row("int4", 40.0, "int4")]}
    accuracy = {f"runs/{name}": {"average": acc, "tasks": {"piqa": {}, "boolq": {}}}
                for name, acc in (("fp32", 0.66), ("int8", 0.66), ("w8a8", 0.60), ("int4", 0.62))}
    lines = format_choice(report, accuracy).splitlines()
    assert lines[0].endswith("(average over boolq, piqa):")
    marked = {line.split()[0]: line.rstrip().endswith("yes") for line in lines[2:]}
    # fp32 is as accurate as int8 but slower; w8a8 is slower and less accurate than int4.
    assert marked == {"int4": True, "w8a8": False, "int8": True, "fp32": False}
    assert [line.split()[0] for line in lines[2:]] == ["int4", "w8a8", "int8", "fp32"]  # fastest first


def test_bench_refuses_accuracy_for_a_folder_it_does_not_benchmark(exported, tmp_path, capsys):
    results = tmp_path / "acc.json"
    results.write_text(json.dumps({"tasks": {"piqa": {"acc": 0.5}}, "average": 0.5}))
    assert main(["bench", str(exported["as-is"]), "--accuracy", f"elsewhere={results}"]) == 2
    assert "give DIR=RESULTS.json with DIR one of the benchmarked folders" in capsys.readouterr().err


def test_throughput_runs_a_batch_of_synthetic_prompts_and_reports_the_kernels(exported):
    from shears_nncf.bench import throughput

    result = throughput(exported["int8"], batch=2, prompt_tokens=5, new_tokens=2)
    assert result["status"] == "ok", result
    assert result["prefill_tokens_per_s"] > 0 and result["decode_tokens_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert sum(result["fc_kernels"]["decode"].values()) == 2 * 7 + 2 * 5 * 2 + 1  # base, LoRA A and B, lm_head
