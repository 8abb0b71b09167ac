"""One sparse base IR, several sub-adapters applied at run time by OpenVINO GenAI: exported once, switched per call.

A tiny sparse LLaMA (magnitude-pruned at 50%), a super-adapter trained for 3 steps by `shears train`'s own code,
and two of its sub-adapters (maximal and minimal) exported once with `--runtime-adapter`. The check that
matters is against the baked export of each sub-adapter (its LoRA MatMuls in the IR's graph): the same
greedy tokens, from one `LLMPipeline` switched between the adapters.
"""

import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from shears_nncf.artifacts import read_manifest
from shears_nncf.bench import benchmark, format_table
from shears_nncf.cli import main
from shears_nncf.data.tasks import get_task
from shears_nncf.evaluation.openvino_backend import runtime_model
from shears_nncf.export.openvino import IR_XML, OpenVINOModel, export_openvino
from shears_nncf.export.runtime_adapters import adapter_name, runtime_adapter
from shears_nncf.export.extract import ExtractConfig, extract
from shears_nncf.export.sub_adapter import SubAdapter
from shears_nncf.sparsity.masks import magnitude_
from conftest import train_tiny_super_adapter

PROMPTS = ["The quick brown fox", "Question: is water wet? Answer:", "Once upon a time"]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # both routes in fp32: the comparison is exact arithmetic, not bf16 noise
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def deployment(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """The sparse base, two sub-adapters, the runtime IR (both adapters), and each sub-adapter's baked IR."""
    root = tmp_path_factory.mktemp("runtime_adapters")
    base = tiny_llama_factory(seed=3)
    magnitude_(base, 0.5)
    train_tiny_super_adapter(base, tiny_tokenizer, root)
    subs = {name: root / name for name in ("maximal", "minimal")}
    for name, folder in subs.items():
        extract(root / "super", ExtractConfig(name), folder)
    runtime = export_openvino(root / "sparse", root / "ov_runtime", runtime_adapters=list(subs.values()))
    baked = {name: export_openvino(root / "sparse", root / f"ov_{name}", adapter=folder) for name, folder in subs.items()}
    return {"root": root, "sparse": root / "sparse", "subs": subs, "runtime": runtime, "baked": baked}


def _tokens(pipeline, prompt, adapters=None):
    """Greedy token ids of one prompt, with `adapters` (a GenAI AdapterConfig) active when given."""
    config = pipeline.get_generation_config()
    config.max_new_tokens, config.apply_chat_template, config.do_sample = NEW_TOKENS, False, False
    if adapters is not None:
        config.adapters = adapters
    return list(pipeline.generate(pipeline.get_tokenizer().encode(prompt), config).tokens[0])


def test_one_pipeline_switching_runtime_adapters_gives_each_baked_exports_greedy_tokens(deployment):
    """GenAI used as a user would, from the manifest alone: its files and alphas, one LLMPipeline for all."""
    import openvino_genai

    entries = OpenVINOModel.read(deployment["runtime"]).runtime_adapters
    adapters = {name: (openvino_genai.Adapter(str(e["path"])), e["alpha"]) for name, e in entries.items()}
    pipeline = openvino_genai.LLMPipeline(str(deployment["runtime"]), "CPU",
                                          adapters=openvino_genai.AdapterConfig(list(adapters.values())), **F32)
    got = {}
    for name in ["maximal", "minimal", "maximal"]:  # and back: nothing of the previous adapter stays behind
        config = openvino_genai.AdapterConfig(*adapters[name])
        tokens = [_tokens(pipeline, p, config) for p in PROMPTS]
        assert got.setdefault(name, tokens) == tokens
    base_alone = [_tokens(pipeline, p, openvino_genai.AdapterConfig()) for p in PROMPTS]
    for name, folder in deployment["baked"].items():
        baked = openvino_genai.LLMPipeline(str(folder), "CPU", **F32)
        assert got[name] == [_tokens(baked, p) for p in PROMPTS], name
    # The comparison could fail: the two sub-adapters (and the base) generate different tokens.
    assert got["maximal"] != got["minimal"] and base_alone not in got.values()


def test_the_runtime_export_is_the_base_alone_and_its_manifest_lists_each_adapter(deployment):
    manifest = read_manifest(deployment["runtime"], stage="export")
    assert not any(layer["adapter"] for layer in manifest["layers"])  # no LoRA MatMul in the graph
    assert manifest["sparsity"]["base_sparsity"] == pytest.approx(0.5)
    entries = {e["name"]: e for e in manifest["runtime_adapters"]}
    assert set(entries) == {"maximal", "minimal"}
    for name, entry in entries.items():
        sub = SubAdapter.read(deployment["subs"][name])
        assert entry["alpha"] == pytest.approx(sub.scaling)  # lora_alpha / r_max, whatever the rank
        assert entry["ranks"] == sorted(set(sub.manifest["ranks"]), reverse=True)
        assert entry["folded_modules"] == 0  # a Shears sub-adapter has one scale everywhere
        assert (deployment["runtime"] / entry["file"]).stat().st_size == entry["bytes"]
    assert entries["maximal"]["parameters"] > entries["minimal"]["parameters"]


def test_per_module_peft_scales_are_folded_into_b_so_one_alpha_is_exact(tiny_llama_factory, tmp_path):
    """A PEFT folder whose modules have different alpha / r: alpha * B' A equals PEFT's own scaling * B A, module by module."""
    model = get_peft_model(tiny_llama_factory(), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"],
        rank_pattern={"model.layers.0.self_attn.q_proj": 2}, alpha_pattern={"model.layers.1.mlp.up_proj": 3.0}))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    model.save_pretrained(tmp_path / "adapter")
    tensors, summary = runtime_adapter(SubAdapter.read(tmp_path / "adapter"))
    assert summary["alpha"] == 2.0 and summary["folded_modules"] == 2 and summary["ranks"] == [8, 2]
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            key = name.removesuffix(".base_layer")
            expected = module.scaling["default"] * module.lora_B["default"].weight @ module.lora_A["default"].weight
            found = summary["alpha"] * tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]
            assert torch.allclose(found, expected.detach(), atol=1e-6), name


def test_shears_generate_streams_the_adapters_completion_and_switches_per_prompt(deployment, tmp_path, capsys):
    model = runtime_model(deployment["runtime"])  # the CPU's default precision, as `shears generate` runs
    expected = [model.generate(PROMPTS[0], name, 6).texts[0] for name in ("maximal", "minimal")]
    assert expected[0] != expected[1]
    assert main(["generate", "--openvino", str(deployment["runtime"]), "--adapter", "maximal",
                 "--prompt", PROMPTS[0], "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == expected[0] + "\n"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n")
    assert main(["generate", "--openvino", str(deployment["runtime"]), "--adapter", "maximal,minimal",
                 "--prompts", str(prompts), "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[:2] == expected  # the first prompt with each adapter, in turn
    assert len(captured.out.splitlines()) == 4
    assert "[adapter minimal] Question: is water wet? Answer:" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--adapter", "nonesuch", "--prompt", "hi"], "no run-time adapter 'nonesuch'; its adapters are maximal, minimal"),
    ([], "give --prompt TEXT or --prompts FILE"),
    (["--prompts", "missing.txt"], "prompts file missing.txt does not exist"),
])
def test_generate_refuses_bad_input_in_one_line(deployment, argv, message, capsys):
    assert main(["generate", "--openvino", str(deployment["runtime"]), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shears generate: error:") and message in err[0]


def test_generate_refuses_a_folder_without_an_ir(tmp_path, capsys):
    assert main(["generate", "--openvino", str(tmp_path), "--prompt", "hi"]) == 2
    assert f"{tmp_path} has no {IR_XML}" in capsys.readouterr().err


def test_export_refuses_a_mask_aware_runtime_adapter_and_adapter_with_runtime_adapter(deployment, tmp_path, capsys):
    masked = tmp_path / "masked"
    shutil.copytree(deployment["subs"]["minimal"], masked)
    manifest = json.loads((masked / "shears_manifest.json").read_text())
    (masked / "shears_manifest.json").write_text(json.dumps(dict(manifest, sparse_adapter=True)))
    out = tmp_path / "ir"
    assert main(["export", "--model", str(deployment["sparse"]), "--runtime-adapter", str(masked),
                 "--output", str(out)]) == 2
    assert "trained mask-aware" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["export", "--model", str(deployment["sparse"]), "--adapter", str(masked),
                 "--runtime-adapter", str(masked), "--output", str(out)]) == 2
    assert "not both" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists() and not list(tmp_path.glob(".ir*"))


def test_runtime_adapter_names_are_unique_and_say_how_they_were_chosen(deployment, tmp_path):
    """Two sub-adapters chosen the same way get distinct names: the second its folder's."""
    copy = tmp_path / "another_maximal"
    shutil.copytree(deployment["subs"]["maximal"], copy)
    taken = {adapter_name(SubAdapter.read(deployment["subs"]["maximal"]), set())}
    assert taken == {"maximal"}
    assert adapter_name(SubAdapter.read(copy), taken) == "another_maximal"
    assert adapter_name(SubAdapter.read(copy), taken | {"another_maximal"}) == "maximal-2"


def test_bench_measures_baked_runtime_merged_and_base_alone_in_one_run(deployment):
    merged = deployment["root"] / "merged"
    extract(deployment["root"] / "super", ExtractConfig("maximal", merge=True), merged, model=str(deployment["sparse"]))
    merged_ir = export_openvino(merged, deployment["root"] / "ov_merged")
    report = benchmark([deployment["baked"]["maximal"], deployment["runtime"], merged_ir], prompts=PROMPTS[:1],
                       max_new_tokens=3, rounds=1)
    rows = report["rows"]
    assert [(r["route"], r["adapter"]) for r in rows] == [
        ("baked", None), ("base", None), ("runtime", "maximal"), ("runtime", "minimal"), ("merged", None)]
    assert all(r["status"] == "ok" and r["backend"] == "genai" for r in rows), rows
    assert all(r["ttft_ms"] > 0 and r["decode_tokens_per_s"] > 0 and r["prefill_tokens_per_s"] > 0 for r in rows)
    assert rows[0]["adapter_ranks"] == rows[2]["adapter_ranks"] == [16]  # the baked and run-time maximal: one adapter
    assert rows[0]["adapter_parameters"] == rows[2]["adapter_parameters"]
    table = format_table(report)
    for cell in ("baked", "runtime: maximal", "runtime: minimal", "merged", "1.00x", "r 16, "):
        assert cell in table, cell


def test_bench_rounds_are_interleaved_and_each_row_is_its_median(deployment, monkeypatch):
    import shears_nncf.bench.run as bench

    calls = []

    def fake_spawn(spec):
        calls.append(spec["adapter"])
        value = float(len(calls))
        return {"status": "ok", "ttft_ms": value, "tpot_ms": value, "tokens_per_s": value, "decode_tokens_per_s": value,
                "prefill_tokens_per_s": value, "peak_rss_mb": value, "fc_kernels": {}}

    monkeypatch.setattr(bench, "_spawn", fake_spawn)
    report = benchmark([deployment["runtime"]], max_new_tokens=2, rounds=3)
    assert calls == [None, "maximal", "minimal"] * 3
    assert [r["tpot_ms"] for r in report["rows"]] == [4.0, 5.0, 6.0]  # medians of (1, 4, 7), (2, 5, 8), (3, 6, 9)
    assert [r["peak_rss_mb"] for r in report["rows"]] == [7.0, 8.0, 9.0]  # the highest


def test_evaluate_scores_generation_through_a_runtime_adapter_and_refuses_loglik(deployment, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--openvino", str(deployment["runtime"]), "--adapter", "minimal", "--tasks", "boolq",
                 "--limit", "2", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["tasks"]["boolq"]["count"] == 2 and results["adapter"] == "minimal"
    example = results["examples"]["boolq"][0]
    model = runtime_model(deployment["runtime"], ["minimal"])  # what GenAI generates with that adapter, and not without
    tokens = get_task("boolq").max_new_tokens
    assert example["generation"] == model.generate(example["prompt"], "minimal", tokens).texts[0]
    assert example["generation"] != model.generate(example["prompt"], "none", tokens).texts[0]
    capsys.readouterr()
    assert main(["evaluate", "--openvino", str(deployment["runtime"]), "--adapter", "minimal", "--tasks", "boolq",
                 "--limit", "2", "--scoring", "loglik"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("shears evaluate: error:") and "no log-probabilities" in err and "--scoring generate" in err
