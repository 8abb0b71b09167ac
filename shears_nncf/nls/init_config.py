"""`shears init-config`: a complete, valid config for the model at hand, read from its config alone.

The decoder linears are found from a weightless (meta-device) model of the config (`models.architecture`), with
MPT's Wqkv split as training splits it. Which of them are the paper's Q, K, V, Up and Down cannot be found from the
module tree: it is each family's naming convention, so that is the one hand table here (`PAPER_ROLES`), fused
projections included. Groups per layer follow the reference: [Q, K, V], [Up] (with Gate, [Up, Gate]), [Down],
every other target a group of its own. Everything else (protocol, training, pipeline) is the demo config's.
"""

from __future__ import annotations

import copy

from ..artifacts import read_json, write_json
from ..config import bundled_config, parse_config, strictly_descending
from ..errors import ShearsError
from ..models import architecture, load_model_config, meta_model, num_experts
from .mpt import prepare_for_adapters

DEMO = "demo/smollm2_commonsense"
PAPER_RANKS = (32, 24, 16)
# Each paper role, and the names transformers' decoder families give it, first match wins. A fused projection
# stands for the parts it computes: Phi-3's qkv_proj, GPT-NeoX's and Falcon's query_key_value are Q,K,V; Phi-3's
# gate_up_proj is Up with Gate. MPT's Wqkv needs no entry: it is split into q/k/v_proj before adapters (nls/mpt.py).
PAPER_ROLES = (
    ("Q,K,V", (("q_proj", "k_proj", "v_proj"), ("qkv_proj",), ("query_key_value",))),
    ("Up", (("up_proj",), ("gate_up_proj",), ("dense_h_to_4h",), ("fc1",), ("c_fc",))),
    ("Down", (("down_proj",), ("dense_4h_to_h",), ("fc2",), ("c_proj",))),
)
# A mixture-of-experts model's experts are 3-D tensors that get no adapter (see `init_config`); its adapters go on
# the attention, its output projection a group of its own, and on a dense or shared-expert MLP where it has one.
ATTENTION_OUTPUT = ("O", (("o_proj",), ("dense",), ("out_proj",)))
_QKV = {"q_proj", "k_proj", "v_proj"}  # with --targets, these share a group, as do Up and Gate
_UP_GATE = {"up_proj", "gate_proj"}


def adapter_linears(model_config) -> list[str]:
    """The names (last part) of the linears of the decoder blocks, as adapters see them (MPT: q/k/v_proj)."""
    model = prepare_for_adapters(meta_model(model_config))
    return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in architecture(model).linears))


def paper_groups(linears: list[str], model_type: str, moe: bool = False) -> list[list[str]]:
    """[Q,K,V], [Up], [Down] as this family names them; for a mixture-of-experts model [Q,K,V], [O], and [Up], [Down]
    only where a dense or shared-expert MLP has them."""
    groups = []
    for role, spellings in PAPER_ROLES + ((ATTENTION_OUTPUT,) if moe else ()):
        found = next((list(names) for names in spellings if set(names) <= set(linears)), None)
        if found is None and moe and role in ("Up", "Down"):
            continue
        if found is None:
            raise ShearsError(f"cannot tell which linear of this {model_type} model is the paper's {role}; its decoder "
                              f"linears are: {', '.join(linears)}; give --targets")
        groups.append(found)
    return groups


def target_groups(targets: list[str], linears: list[str], model_type: str) -> list[list[str]]:
    """The groups of explicit --targets: Q, K, V together, Up with Gate, every other one alone; each must exist."""
    for target in targets:
        if target not in linears:
            raise ShearsError(f"--targets {target!r} is not a linear of this {model_type} model's decoder blocks; "
                              f"its linears are: {', '.join(linears)}")
    groups = []
    for together in (_QKV, _UP_GATE):
        if group := [t for t in targets if t in together]:
            groups.append(group)
    return groups + [[t] for t in targets if t not in _QKV | _UP_GATE]


def parse_ranks(ranks: list[str] | None) -> list[int]:
    if not ranks:
        return list(PAPER_RANKS)
    try:
        values = [int(r) for r in ranks]
    except ValueError:
        raise ShearsError(f"--ranks {','.join(ranks)} is not a list of integers; give e.g. 32,24,16") from None
    if values[-1] < 1 or not strictly_descending(values):
        raise ShearsError(f"--ranks {','.join(ranks)} must be positive and strictly descending, e.g. 32,24,16")
    return values


def init_config(model: str, ranks: list[int], targets: list[str] | None = None) -> dict:
    """The config: the demo's, with this model's targets and groups, `ranks` for every group and alpha = 2 r."""
    model_config = load_model_config(model)
    model_type = model_config.model_type
    linears = adapter_linears(model_config)
    moe = num_experts(model_config) is not None
    groups = target_groups(targets, linears, model_type) if targets else paper_groups(linears, model_type, moe)
    raw = copy.deepcopy(read_json(bundled_config(DEMO), what="config"))
    r = ranks[0]
    chosen = [name for group in groups for name in group]
    raw["shears"]["lora"].update(r=r, alpha=2 * r, target_modules=chosen)
    raw["shears"]["pipeline"]["model"] = str(model)
    nas = raw["bootstrapNAS"]["training"]
    nas["schedule"]["list_stage_descriptions"][0]["width_indicator"] = len(ranks)
    nas["elasticity"]["width"] = {"overwrite_groups": groups, "overwrite_groups_widths": [list(ranks)] * len(groups)}
    which = "the given --targets" if targets else "the paper's Q,K,V / Up / Down as this family names them"
    if moe and not targets:
        experts = ", ".join(architecture(meta_model(model_config)).experts)
        which = ("a mixture-of-experts model: its experts (" + experts + ") get no adapter, since NNCF's elastic width "
                 "slices an adapter's lora_A linear as it runs and PEFT adapts a 3-D expert tensor (target_parameters) "
                 "by a weight parametrisation that calls no linear; so the attention's Q,K,V and O, and any dense or "
                 "shared-expert MLP's Up and Down")
    raw["comment"] = (
        f"Written by `shears init-config --model {model}` for its {model_type} architecture "
        f"({model_config.get_text_config().num_hidden_layers} decoder layers; linears {', '.join(linears)}). "
        f"LoRA on {', '.join(chosen)} ({which}), grouped per layer as "
        f"{' '.join('[' + ', '.join(g) + ']' for g in groups)}; rank space {list(ranks)}, alpha {2 * r} = 2 r "
        f"(the paper's 64 for r 32); every other setting as nncf_configs/{DEMO}.json"
    )
    parse_config(raw, source="the written config")  # what is written is a config `shears train` accepts
    return raw


def init_config_command(args) -> None:
    """`shears init-config`."""
    raw = init_config(args.model, parse_ranks(args.ranks), args.targets)
    write_json(args.output, raw)
    width = raw["bootstrapNAS"]["training"]["elasticity"]["width"]
    print(f"wrote {args.output}: LoRA on {', '.join(raw['shears']['lora']['target_modules'])}, groups "
          f"{width['overwrite_groups']}, ranks {width['overwrite_groups_widths'][0]}")
