"""Extraction of a sub-adapter to a standard PEFT folder that vanilla `PeftModel.from_pretrained` loads as it is."""

import json
import re

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from shears_nncf.artifacts import read_manifest
from shears_nncf.cli import main
from shears_nncf.export.sub_adapter import write_sub_adapter
from shears_nncf.nls.folder import module_path
from conftest import train_tiny_super_adapter

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def _ids(tokenizer):
    return tokenizer(["The sparse model answers", "A second prompt, longer than the first one"], return_tensors="pt", padding=True)


def _random_lora(model, r=32, alpha=64, seed=1):
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)  # lora_B starts at zero in PEFT: every slice would look alike
    return peft_model.eval()


def _groups(layers=2):
    prefix = "base_model.model.model.layers"
    return [g for i in range(layers) for g in (
        [f"{prefix}.{i}.self_attn.{m}" for m in ("q_proj", "k_proj", "v_proj")],
        [f"{prefix}.{i}.mlp.up_proj"], [f"{prefix}.{i}.mlp.down_proj"])]


def test_node_names_map_to_peft_module_paths():
    node = ("PeftModelForCausalLM/LoraModel[base_model]/LlamaForCausalLM[model]/LlamaModel[model]/ModuleList[layers]/"
            "LlamaDecoderLayer[3]/LlamaAttention[self_attn]/Linear[q_proj]/ModuleDict[lora_A]/NNCFLinear[default]/linear_0")
    assert module_path(node) == "base_model.model.model.layers.3.self_attn.q_proj"


def test_extracted_lora_loads_in_vanilla_peft_and_equals_the_sliced_super_adapter(tiny_llama_factory, tiny_tokenizer,
                                                                                  tmp_path):
    super_model = _random_lora(tiny_llama_factory())
    super_model.save_pretrained(tmp_path / "super")
    ranks = [24, 16, 32, 8, 24, 16]
    rank_of = write_sub_adapter(tmp_path / "super", _groups(), ranks, tmp_path / "sub", {"chosen_by": "test"})

    loaded = PeftModel.from_pretrained(tiny_llama_factory(), tmp_path / "sub").eval()
    modules = dict(loaded.named_modules())
    for path, r in rank_of.items():  # each module got exactly its rank and the supernet's scaling alpha / r_max
        assert modules[path].lora_A["default"].weight.shape[0] == r
        assert modules[path].scaling["default"] == pytest.approx(64 / 32)

    # Reference: the super-adapter itself with lora_A's rows beyond each module's rank set to zero.
    with torch.no_grad():
        for name, module in super_model.named_modules():
            if name in rank_of:
                module.lora_A["default"].weight[rank_of[name]:] = 0
        batch = _ids(tiny_tokenizer)
        expected = super_model(**batch).logits
        got = loaded(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5)
    config = json.loads((tmp_path / "sub" / "adapter_config.json").read_text())
    assert config["rank_pattern"][re.escape("model.layers.1.mlp.up_proj")] == 24
    assert read_manifest(tmp_path / "sub", stage="extract")["adapter_parameters"] < sum(
        p.numel() for n, p in super_model.named_parameters() if "lora_" in n)


def _sparse_base(factory):
    """The same sparse tiny LLaMA every call (half of every decoder linear zeroed)."""
    base = factory(seed=2)
    with torch.no_grad():
        for module in base.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[module.weight.abs() < module.weight.abs().median()] = 0
    return base


@pytest.fixture(scope="module")
def trained_super_adapter(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """A super-adapter from `shears train`'s own code: 3 optimizer steps on a sparse tiny LLaMA."""
    folder = tmp_path_factory.mktemp("nls")
    result = train_tiny_super_adapter(_sparse_base(tiny_llama_factory), tiny_tokenizer, folder)
    return folder, result.supernet


@pytest.mark.parametrize("ranks", [[16, 12, 8, 8, 16, 12], [8] * 6, [16] * 6, [12] * 6])
def test_extracted_adapter_on_the_base_gives_the_supernets_logits(trained_super_adapter, tiny_llama_factory,
                                                                  tiny_tokenizer, ranks):
    folder, supernet = trained_super_adapter
    (folder / "ranks.json").write_text(json.dumps({"ranks": ranks}))
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", str(folder / "ranks.json"),
                 "--output", str(folder / "sub")]) == 0
    manifest = read_manifest(folder / "sub", stage="extract")
    assert manifest["ranks"] == ranks and manifest["base_model"] == str(folder / "sparse")

    vanilla = PeftModel.from_pretrained(_sparse_base(tiny_llama_factory), folder / "sub").eval()
    supernet.activate(ranks)
    supernet.peft_model.eval()
    batch = _ids(tiny_tokenizer)
    with torch.no_grad():
        expected = supernet.peft_model(**batch).logits
        got = vanilla(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_extract_names_the_choice_and_rejects_bad_subnets(trained_super_adapter, tmp_path, capsys):
    folder, _ = trained_super_adapter
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", "heuristic", "--output", str(tmp_path / "h")]) == 0
    manifest = read_manifest(tmp_path / "h", stage="extract")
    assert manifest["chosen_by"] == "heuristic" and manifest["ranks"] == [12] * 6
    bad = tmp_path / "bad.json"
    for ranks, message in (([16] * 5, "has 5 ranks, but the super-adapter has 6 groups"), ([16, 12, 10, 8, 8, 8], "rank 10 of group")):
        bad.write_text(json.dumps(ranks))
        assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", str(bad), "--output", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_search_then_extract_pipeline_through_the_cli(trained_super_adapter, tmp_path):
    """`shears search` (loss on a seeded validation subset) writes search.json and pareto.png, and `shears extract`
    takes its choice."""
    folder, _ = trained_super_adapter
    assert main(["search", "--super-adapter", str(folder / "super"), "--strategy", "hill-climbing", "--budget", "5",
                 "--metric", "loss", "--tasks", "piqa", "--limit", "4", "--output", str(tmp_path / "search")]) == 0
    summary = json.loads((tmp_path / "search" / "search.json").read_text())
    assert summary["strategy_evaluations"] <= 5
    assert summary["validation"]["examples"] == 4 and summary["validation"]["split"].startswith("train")
    assert all(r["loss"] > 0 for r in summary["evaluated"])
    assert len({tuple(r["ranks"]) for r in summary["evaluated"]}) == len(summary["evaluated"])
    assert (tmp_path / "search" / "pareto.png").is_file()
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", str(tmp_path / "search" / "search.json"),
                 "--output", str(tmp_path / "sub")]) == 0
    manifest = read_manifest(tmp_path / "sub", stage="extract")
    assert manifest["ranks"] == summary["chosen"]["ranks"] and manifest["chosen_by"].startswith("hill-climbing")


def test_nncf_macs_cost_and_adapter_parameters_agree_on_what_a_rank_costs(trained_super_adapter):
    """NNCF counts the MACs of the whole subnet for its traced input; per token a LoRA module of rank r costs
    r * (in + out) MACs, which is also its parameter count: the two costs differ only by the token count."""
    from shears_nncf.nls.folder import SuperAdapter
    from shears_nncf.search.objective import adapter_cost, nncf_macs_cost

    folder, supernet = trained_super_adapter
    params, macs = adapter_cost(SuperAdapter.read(folder / "super").parameters_per_rank()), nncf_macs_cost(supernet)
    tokens = supernet.nncf_config["input_info"][0]["sample_size"][1]
    configs = [[16] * 6, [12] * 6, [8] * 6, [16, 8, 12, 8, 16, 8]]
    for config in configs[1:]:
        assert macs(configs[0]) - macs(config) == tokens * (params(configs[0]) - params(config)) > 0



def test_evaluate_with_a_super_adapter_subnet_runs_the_same_model_as_the_extracted_adapter(trained_super_adapter,
                                                                                           tiny_tokenizer, tmp_path):
    from shears_nncf.cli import build_parser
    from shears_nncf.evaluation.stage import _load

    folder, _ = trained_super_adapter
    assert main(["extract", "--super-adapter", str(folder / "super"), "--subnet", "minimal", "--output", str(tmp_path / "sub")]) == 0
    common = ["evaluate", "--tasks", "boolq", "--device", "cpu"]
    on_supernet, _, _ = _load(build_parser().parse_args([*common, "--super-adapter", str(folder / "super"), "--subnet", "minimal"]))
    extracted, _, _ = _load(build_parser().parse_args([*common, "--model", str(folder / "sparse"), "--adapter", str(tmp_path / "sub")]))
    batch = _ids(tiny_tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(on_supernet(**batch).logits, extracted(**batch).logits, atol=1e-5, rtol=0)
