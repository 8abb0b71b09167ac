"""The elastic-LoRA supernet on NNCF BootstrapNAS: search space, activation, and the sub-adapter definition."""

import contextlib
import random
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model

from shears_nncf.config import bundled_config, load_config
from shears_nncf.errors import ShearsError
from shears_nncf.nls.supernet import build_supernet

DEMO = bundled_config("demo/smollm2_commonsense")


@pytest.fixture
def supernet(tiny_llama_factory):
    """The demo config's supernet on the tiny LLaMA, with random (non-zero) adapter weights."""
    supernet = build_supernet(tiny_llama_factory(), load_config(DEMO))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in supernet.peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)  # PEFT starts lora_B at zero: every sub-adapter would look alike
    supernet.peft_model.eval()
    return supernet


def test_search_space_has_one_entry_per_group_with_the_configured_ranks(supernet):
    assert supernet.group_names == [f"{layer}:{g}" for layer in (0, 1) for g in ("q_proj+k_proj+v_proj", "up_proj", "down_proj")]
    assert supernet.search_space == [[16, 12, 8]] * 6
    assert supernet.activate_maximal() == [16] * 6
    assert supernet.activate_minimal() == [8] * 6
    assert supernet.activate_heuristic() == [12] * 6
    assert supernet.active_config == [12] * 6


def test_the_frozen_base_passes_nncf_only_when_the_config_allows_it(tiny_llama_factory):
    config = load_config(DEMO)
    config.raw["bootstrapNAS"]["training"]["frozen_layers_allowed"] = False
    from shears_nncf.config import parse_config

    with pytest.raises(Exception, match="Frozen layers are not allowed"):
        build_supernet(tiny_llama_factory(), parse_config(config.raw))


def _module_paths(peft_model, group_names):
    """For each group, the module paths (e.g. model.layers.0.self_attn.q_proj) of its adapted linears."""
    names = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    paths = []
    for group in group_names:
        layer, modules = group.split(":")
        paths.append([n for n in names for m in modules.split("+") if re.search(rf"layers\.{layer}\..*\.{m}$", n)])
    return paths


def _reference_lora(tiny_llama_factory, supernet, ranks):
    """A plain PEFT LoRA model whose adapters are the sub-adapter: lora_A[:r], lora_B[:, :r], scaling alpha/r_max."""
    lora = supernet.config.lora
    paths = _module_paths(supernet.peft_model, supernet.group_names)
    rank_pattern, alpha_pattern = {}, {}
    for group_paths, r in zip(paths, ranks):
        for path in group_paths:
            key = path.split("model.", 2)[-1]  # relative to the PEFT wrapper, e.g. model.layers.0.mlp.up_proj
            rank_pattern[key] = r
            alpha_pattern[key] = lora.alpha * r / lora.r  # PEFT scales by alpha / r; the sub-adapter by alpha / r_max
    reference = get_peft_model(
        tiny_llama_factory(),
        LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                   rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, task_type="CAUSAL_LM"),
    ).eval()
    super_modules = dict(supernet.peft_model.named_modules())
    ref_modules = dict(reference.named_modules())
    with torch.no_grad():
        for group_paths, r in zip(paths, ranks):
            for path in group_paths:
                src, dst = super_modules[path], ref_modules[path]
                assert dst.lora_A["default"].weight.shape[0] == r
                dst.lora_A["default"].weight.copy_(src.lora_A["default"].weight[:r])
                dst.lora_B["default"].weight.copy_(src.lora_B["default"].weight[:, :r])
    return reference


@pytest.mark.parametrize("traced", [True, False], ids=["nncf-traced", "untraced"])
@pytest.mark.parametrize("which", ["maximal", "minimal", "heuristic", "random", "explicit"])
def test_sub_adapter_logits_equal_a_plain_lora_with_the_first_r_ranks(supernet, tiny_llama_factory, which, traced):
    """Through NNCF's traced forward and through `untraced()` (what training runs): the same sub-adapter."""
    random.seed(3)
    if which == "explicit":
        ranks = supernet.activate([16, 8, 12, 8, 16, 12])
    else:
        ranks = getattr(supernet, f"activate_{which}")()
    assert supernet.active_config == ranks
    input_ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), contextlib.nullcontext(supernet.peft_model) if traced else supernet.untraced() as model:
        got = model(input_ids=input_ids).logits
        expected = _reference_lora(tiny_llama_factory, supernet, ranks)(input_ids=input_ids).logits
        base = tiny_llama_factory()(input_ids=input_ids).logits
    assert not torch.allclose(got, base, atol=1e-3)  # the adapters do contribute
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_untraced_runs_outside_nncf_tracing_and_only_inside_the_context(supernet):
    from nncf.torch.dynamic_graph.context import get_current_context

    seen = []
    lora_a = next(m for n, m in supernet.peft_model.named_modules() if n.endswith("lora_A.default"))
    handle = lora_a.register_forward_pre_hook(lambda *_: seen.append(get_current_context() is not None))
    input_ids = torch.arange(6).unsqueeze(0)
    with torch.no_grad():
        supernet.peft_model(input_ids=input_ids)
        with supernet.untraced() as model:
            model(input_ids=input_ids)
        supernet.peft_model(input_ids=input_ids)
    handle.remove()
    assert seen == [True, False, True]


def test_different_configurations_give_different_logits(supernet):
    input_ids = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        supernet.activate_maximal()
        maximal = supernet.peft_model(input_ids=input_ids).logits
        supernet.activate_minimal()
        minimal = supernet.peft_model(input_ids=input_ids).logits
    assert not torch.allclose(maximal, minimal, atol=1e-4)


def test_random_sub_adapters_cover_the_search_space(supernet):
    random.seed(0)
    seen = {tuple(supernet.activate_random()) for _ in range(20)}
    assert len(seen) > 10
    assert {r for config in seen for r in config} == {16, 12, 8}


def test_activating_a_rank_outside_the_search_space_is_an_error(supernet):
    with pytest.raises(ShearsError, match="not in the search space"):
        supernet.activate([16, 16, 16, 16, 16, 10])
    with pytest.raises(ShearsError, match="needs 6 ranks"):
        supernet.activate([16, 16])
    assert supernet.activate({"1:up_proj": 8}) == [16, 16, 16, 16, 8, 16]


def test_only_lora_b_inputs_get_elastic_input_width_ops(supernet):
    ops = supernet.ctrl.multi_elasticity_handler.width_handler._node_name_vs_dynamic_input_width_op_map
    assert len(ops) == 10  # 2 layers x (q, k, v, up, down)
    assert all("ModuleDict[lora_B]" in name for name in ops)


def test_lora_only_model_has_no_elasticity(tiny_llama_factory):
    plain = build_supernet(tiny_llama_factory(), load_config(DEMO), elastic=False)
    assert not plain.elastic
    with pytest.raises(ShearsError, match="plain LoRA"):
        plain.activate_heuristic()
    trainable = [n for n, p in plain.peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_mpt_paper_config_builds_qkvo_and_up_down_groups():
    from transformers import MptConfig, MptForCausalLM

    torch.manual_seed(0)
    model = MptForCausalLM(MptConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=1000, max_seq_len=64)).eval()
    supernet = build_supernet(model, load_config(bundled_config("mpt7b_gsm8k_50")))
    assert supernet.group_names == [f"{layer}:{g}" for layer in (0, 1) for g in ("q_proj+k_proj+v_proj+out_proj", "up_proj+down_proj")]
    assert supernet.search_space == [[32, 24, 16]] * 4


def test_another_nncf_version_is_a_clear_error_naming_the_one_needed():
    from shears_nncf.nls.bootstrapnas import check_nncf_version

    check_nncf_version("2.19.0")
    with pytest.raises(ShearsError, match=r"NNCF 3\.0\.0 is installed; install nncf==2\.19\.0"):
        check_nncf_version("3.0.0")
