"""Config files: the shipped setups validate, patterns expand per layer, and every bad config fails early in one line."""

import json

import pytest

from shears_nncf.cli import main
from shears_nncf.config import bundled_config, load_config, parse_config
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


def test_pattern_matching_no_node_names_the_closest_nodes(tiny_llama_factory):
    raw = demo_raw()
    groups = raw["bootstrapNAS"]["training"]["elasticity"]["width"]["overwrite_groups"]
    groups[1] = [groups[1][0].replace("Linear[up_proj]", "Linear[upproj]")]
    with pytest.raises(ShearsError) as error:
        build_supernet(tiny_llama_factory(), parse_config(raw))
    message = str(error.value)
    assert "matches no node" in message and "\n" not in message
    assert "LlamaMLP[mlp]/Linear[up_proj]/ModuleDict[lora_A]" in message.split("closest node names:")[1]


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
