"""Config files: the shipped setups validate, patterns expand per layer, and every bad config fails early in one line."""

import json
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from shears_nncf.cli import main
from shears_nncf.config import (TRAINING_OVERRIDES, TrainingSettings, bundled_config, expand_groups, load_config,
                                parse_config)
from shears_nncf.errors import ShearsError
from shears_nncf.nls.supernet import build_supernet

DEMO = bundled_config("demo/smollm2_commonsense")
PAPER = ["llama7b_math_40", "llama7b_math_50", "llama13b_math_40", "llama13b_math_50",
         "llama7b_commonsense_40", "llama7b_commonsense_50", "llama7b_commonsense15k_40", "llama7b_commonsense15k_50",
         "mpt7b_gsm8k_40", "mpt7b_gsm8k_50", "mpt7b_gsm8k_60", "mpt7b_gsm8k_70"]


def demo_raw():
    return json.loads(DEMO.read_text())


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_use_rank_space_32_24_16_alpha_64_and_batch_16(name):
    config = load_config(bundled_config(name))
    assert config.lora.r == 32 and config.lora.alpha == 64
    assert all(ranks == [32, 24, 16] for ranks in config.group_widths)
    assert config.training.batch_size * config.training.grad_accum == 16
    assert config.training.lr == (5e-4 if name == "mpt7b_gsm8k_40" else 3e-4)
    assert config.frozen_layers_allowed


def test_paper_configs_target_the_tables_modules():
    def targets(name):
        return set(load_config(bundled_config(name)).lora.target_modules)

    qkvud = {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}
    assert targets("llama7b_math_40") == qkvud | {"gate_proj"}
    assert targets("llama7b_math_50") == qkvud
    assert targets("llama7b_commonsense15k_40") == qkvud
    assert targets("llama7b_commonsense15k_50") == qkvud | {"gate_proj"}
    assert targets("mpt7b_gsm8k_60") == qkvud | {"out_proj"}


def test_cli_overrides_change_the_config_that_is_saved():
    config = load_config(DEMO, epochs=2.5, lr=1e-3, batch_size=2, max_length=64)
    assert (config.training.epochs, config.training.lr, config.training.batch_size) == (2.5, 1e-3, 2)
    assert config.stage["epochs_lr"] == 2.5 and config.raw["shears"]["training"]["max_length"] == 64


def test_unknown_key_is_rejected_by_the_schema():
    raw = demo_raw()
    raw["shears"]["lora"]["rank"] = 16
    with pytest.raises(ShearsError, match=r"shears\.lora.*'rank' was unexpected"):
        parse_config(raw)


@pytest.mark.parametrize("ranks", [[16, 8, 12], [12, 8, 4], [16, 16, 8]])
def test_rank_list_must_be_descending_and_start_at_the_lora_rank(ranks):
    raw = demo_raw()
    raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups_widths"][1] = ranks
    with pytest.raises(ShearsError, match="strictly descending and start at the LoRA rank shears.lora.r=16"):
        parse_config(raw)


def test_one_rank_list_per_group_pattern():
    raw = demo_raw()
    raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups_widths"].pop()
    with pytest.raises(ShearsError, match="one rank list per group"):
        parse_config(raw)


def test_group_pattern_expands_to_one_group_per_layer(tiny_llama_factory):
    supernet = build_supernet(tiny_llama_factory(), load_config(DEMO))
    assert [len(nodes) for nodes in supernet.groups.nodes] == [3, 1, 1, 3, 1, 1]
    assert all("LlamaDecoderLayer[1]" in n for n in supernet.groups.nodes[3])
    expanded = supernet.nncf_config["bootstrapNAS"]["training"]["elasticity"]["width"]
    assert expanded["overwrite_groups"] == supernet.groups.nodes
    assert len(expanded["overwrite_groups_widths"]) == 6


# The demo's groups as its file wrote them before they became module names: the short form must expand to exactly these.
OLD_DEMO_GROUPS = [
    [f"{{*}}LlamaDecoderLayer[{{layer}}]/LlamaAttention[self_attn]/Linear[{m}]/ModuleDict[lora_A]/NNCFLinear[default]/linear_0"
     for m in ("q_proj", "k_proj", "v_proj")],
    ["{*}LlamaDecoderLayer[{layer}]/LlamaMLP[mlp]/Linear[up_proj]/ModuleDict[lora_A]/NNCFLinear[default]/linear_0"],
    ["{*}LlamaDecoderLayer[{layer}]/LlamaMLP[mlp]/Linear[down_proj]/ModuleDict[lora_A]/NNCFLinear[default]/linear_0"],
]
# What `{*}` stands for in front of a decoder layer, written out: the PEFT wrapper and the model's own scopes.
PREFIX = {
    "llama": "PeftModelForCausalLM/LoraModel[base_model]/LlamaForCausalLM[model]/LlamaModel[model]/ModuleList[layers]/",
    "mpt": "PeftModelForCausalLM/LoraModel[base_model]/MptForCausalLM[model]/MptModel[transformer]/ModuleList[blocks]/",
}


@pytest.fixture(scope="module")
def traced_nodes(tiny_llama_factory):
    """The node names NNCF traces on the tiny LLaMA and a tiny MPT (Wqkv split) with LoRA on every linear of a block."""
    from nncf import NNCFConfig
    from nncf.torch.model_creation import create_nncf_network
    from peft import LoraConfig, get_peft_model
    from transformers import MptConfig, MptForCausalLM

    from shears_nncf.nls.mpt import prepare_for_adapters

    mpt = MptForCausalLM(MptConfig(d_model=64, n_heads=4, n_layers=2, expansion_ratio=2, vocab_size=1000))
    models = {"llama": (tiny_llama_factory(), ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
              "mpt": (mpt, ["q_proj", "k_proj", "v_proj", "out_proj", "up_proj", "down_proj"])}
    nodes = {}
    for family, (model, targets) in models.items():
        peft_model = get_peft_model(prepare_for_adapters(model), LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))
        info = {"input_info": [{"sample_size": [1, 8], "type": "long", "keyword": "input_ids"}]}
        graph = create_nncf_network(peft_model, NNCFConfig.from_dict(info)).nncf.get_original_graph()
        nodes[family] = [node.node_name for node in graph.get_all_nodes()]
    return nodes


def _with_groups(raw: dict, groups: list[list[str]]) -> dict:
    raw = json.loads(json.dumps(raw))
    raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups"] = groups
    return raw


@pytest.mark.parametrize("name", ["demo/smollm2_commonsense"] + PAPER)
def test_module_name_groups_train_the_same_nodes_as_the_patterns_did(name, traced_nodes):
    """Every shipped config, as node patterns and as module names, expands to the node names its patterns spell out."""
    raw = json.loads(bundled_config(name).read_text())
    family = "mpt" if name.startswith("mpt") else "llama"
    patterns = OLD_DEMO_GROUPS if name.startswith("demo") else raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups"]
    module_names = [[re.search(r"Linear\[(\w+)\]/ModuleDict\[lora_A\]", p).group(1) for p in group] for group in patterns]
    expected = [[p.replace("{*}", PREFIX[family]).replace("{layer}", str(layer)) for p in group]
                for layer in range(2) for group in patterns]
    nodes = traced_nodes[family]
    as_patterns = expand_groups(parse_config(_with_groups(raw, patterns)), nodes)
    assert as_patterns.nodes == expected
    assert expand_groups(parse_config(_with_groups(raw, module_names)), nodes) == as_patterns
    assert expand_groups(parse_config(raw), nodes) == as_patterns  # the shipped file itself


def test_pattern_matching_no_node_names_the_closest_nodes(traced_nodes):
    groups = [OLD_DEMO_GROUPS[0], [OLD_DEMO_GROUPS[1][0].replace("Linear[up_proj]", "Linear[upproj]")], ["down_proj"]]
    with pytest.raises(ShearsError) as error:
        expand_groups(parse_config(_with_groups(demo_raw(), groups)), traced_nodes["llama"])
    message = str(error.value)
    assert "matches no node" in message and "\n" not in message
    assert "LlamaMLP[mlp]/Linear[up_proj]/ModuleDict[lora_A]" in message.split("closest node names:")[1]


def test_a_group_module_without_an_adapter_names_the_adapted_modules(tiny_llama_factory):
    raw = _with_groups(demo_raw(), [["q_proj", "k_proj", "v_proj"], ["gate_proj"], ["down_proj"]])  # gate: no LoRA target
    with pytest.raises(ShearsError) as error:
        build_supernet(tiny_llama_factory(), parse_config(raw))
    assert str(error.value) == ("config: group module 'gate_proj' carries no adapter in the decoder layers of this model; "
                                "the adapted modules (shears.lora.target_modules) are: down_proj, k_proj, q_proj, up_proj, "
                                "v_proj")


def test_target_module_the_model_lacks_is_an_error(tiny_llama_factory):
    raw = demo_raw()
    raw["shears"]["lora"]["target_modules"].append("Wqkv")
    with pytest.raises(ShearsError, match="'Wqkv' is not a linear layer of this llama model; its linear layers are: .*q_proj"):
        build_supernet(tiny_llama_factory(), parse_config(raw))


def _cli_train(config_path, model_dir, tmp_path):
    return main(["train", "--config", str(config_path), "--model", str(model_dir), "--output", str(tmp_path / "out")])


def test_cli_train_with_an_unknown_key_exits_2_before_training(tmp_path, tiny_llama_dir, capsys):
    raw = demo_raw()
    raw["bootstrapNAS"]["training"]["warmup"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    assert _cli_train(tmp_path / "bad.json", tiny_llama_dir, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'warmup' was unexpected" in err
    assert not (tmp_path / "out").exists()


def test_cli_train_with_a_bad_rank_list_or_target_exits_2(tmp_path, tiny_llama_dir, capsys):
    raw = demo_raw()
    raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups_widths"][0] = [8, 12, 16]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    assert _cli_train(tmp_path / "bad.json", tiny_llama_dir, tmp_path) == 2
    raw = demo_raw()
    raw["shears"]["lora"]["target_modules"] = ["q_proj", "gate"]
    (tmp_path / "bad2.json").write_text(json.dumps(raw))
    assert _cli_train(tmp_path / "bad2.json", tiny_llama_dir, tmp_path) == 2
    err = capsys.readouterr().err
    assert "strictly descending" in err and "'gate' is not a linear layer" in err
    assert not (tmp_path / "out").exists()


SCHEMA = Path(__file__).resolve().parents[1] / "shears_nncf" / "schema" / "nncf_config.schema.json"
SCHEMA_TYPES = {"int": "integer", "float": "number", "bool": "boolean"}


def test_the_schemas_training_section_is_the_settings_fields():
    """The schema (a JSON file, for editors) spells each training setting again: these are the fields, with the
    same description, default and type, and the stage's keys are those of the BootstrapNAS stage."""
    schema = json.loads(SCHEMA.read_text())["properties"]
    training = schema["shears"]["properties"]["training"]["properties"]
    stage = (schema["bootstrapNAS"]["properties"]["training"]["properties"]["schedule"]["properties"]
             ["list_stage_descriptions"]["items"])
    in_stage = [f for f in fields(TrainingSettings) if "stage_key" in f.metadata]
    in_file = [f for f in fields(TrainingSettings) if "stage_key" not in f.metadata]
    assert set(training) == {f.name for f in in_file}
    assert {f.metadata["stage_key"] for f in in_stage} <= set(stage["required"])
    for f in in_file:
        written = training[f.name]
        assert written.get("description") == f.metadata.get("description"), f.name
        assert written.get("default", MISSING) == f.default, f.name
        assert written.get("type") == SCHEMA_TYPES.get(f.type), f.name  # a name (str) is an enum
        if "choices" in f.metadata:  # the other enums: tests/test_choices.py
            assert written["enum"] == list(f.metadata["choices"]), f.name
    for f in in_stage:
        written = stage["properties"][f.metadata["stage_key"]]
        assert written.get("description") == f.metadata.get("description") and f.default is MISSING, f.name
        assert written["type"] == SCHEMA_TYPES[f.type], f.name


def _changed(setting, value):
    """A value of the setting other than `value`, as a flag writes it."""
    if setting.type == "bool":
        assert value is False, "a switch can only turn a setting on"
        return True, []
    if setting.type == "str":
        other = next(c for c in reversed(setting.metadata["choices"]) if c != value)
        return other, [other]
    other = value + 1 if setting.type == "int" else value * 2
    return other, [str(other)]


def test_every_training_flag_overrides_its_setting_in_the_config_that_is_saved(tiny_llama_dir, monkeypatch):
    """`shears train --<setting>` for every overridable field, through argparse and train_command: each reaches
    the settings, and the config saved with the adapter (config.raw) reads back to the same settings."""
    demo = load_config(DEMO).training
    argv, expected = ["train", "--config", str(DEMO), "--model", str(tiny_llama_dir), "--dry-run"], {}
    for name, setting in TRAINING_OVERRIDES.items():
        expected[name], words = _changed(setting, getattr(demo, name))
        argv += ["--" + name.replace("_", "-"), *words]
    seen = []
    monkeypatch.setattr("shears_nncf.nls.cli._dry_run", lambda args, config, dtype: seen.append(config))
    assert main(argv) == 0
    assert {name: getattr(seen[0].training, name) for name in expected} == expected
    assert parse_config(seen[0].raw).training == seen[0].training
    assert set(TRAINING_OVERRIDES) >= {"epochs", "lr", "batch_size", "grad_accum", "max_length", "precision",
                                       "gradient_checkpointing"}  # the flags users have
