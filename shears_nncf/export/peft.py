"""A sub-adapter of a trained super-adapter, written as a standard PEFT LoRA folder.

A sub-adapter is the nested prefix `lora_A[:r], lora_B[:, :r]` of every module of a group, scaled by
the super-adapter's `alpha / r_max` whatever r is. Vanilla PEFT scales a module by `alpha_i / r_i`, so
each module gets its own rank (`rank_pattern`) and `alpha_i = alpha * r_i / r_max` (`alpha_pattern`).
The pattern keys are the modules' full paths, regex-escaped: PEFT 0.21 matches a key `k` against a
module path `p` with `re.match(rf"(.*\\.)?({k})$", p)` (a regex suffix at a dot boundary, first key
that matches wins), so an escaped full path matches exactly one module. An unmodified
`PeftModel.from_pretrained` then loads the folder: no patched PEFT, no reshaping on load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ..artifacts import atomic_output_dir, read_json, read_manifest, write_manifest
from ..errors import ShearsError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_NODE_SCOPE = re.compile(r"\[([^\]]+)\]")


def module_path(node_name: str) -> str:
    """NNCF node name of a `lora_A` linear -> the PEFT state-dict prefix of its adapted module.

    `PeftModelForCausalLM/LoraModel[base_model]/.../LlamaDecoderLayer[0]/LlamaAttention[self_attn]/Linear[q_proj]/
    ModuleDict[lora_A]/NNCFLinear[default]/linear_0` -> `base_model.model.model.layers.0.self_attn.q_proj`
    (the attribute names in brackets, up to the adapted module)."""
    scope = node_name.split("/ModuleDict[lora_A]")[0]
    parts = _NODE_SCOPE.findall(scope)
    if "/ModuleDict[lora_A]" not in node_name or not parts:
        raise ShearsError(f"node {node_name!r} is not the lora_A linear of a PEFT LoRA module")
    return ".".join(parts)


def super_adapter_groups(folder: str | os.PathLike) -> tuple[list[str], list[list[int]], list[list[str]], dict]:
    """Group names, rank lists and adapted module paths per group of a `shears train` folder, and its manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder, stage="train")
    if manifest.get("lora_only"):
        raise ShearsError(f"{folder} is a plain LoRA (--lora-only): it has no sub-adapters to choose; use it as it is")
    # Read from the files alone: knowing the groups needs neither a model nor NNCF.
    width = read_json(folder / manifest.get("nncf_config", "nncf_config.json"), what="NNCF config")["bootstrapNAS"]["training"]["elasticity"]["width"]
    modules = [[module_path(node) for node in group] for group in width["overwrite_groups"]]
    return list(manifest["groups"]), [list(w) for w in width["overwrite_groups_widths"]], modules, manifest


def write_sub_adapter(
    adapter_dir: str | os.PathLike,
    group_modules: Sequence[Sequence[str]],
    ranks: Sequence[int],
    output: str | os.PathLike,
    manifest: dict,
) -> dict:
    """Slice the PEFT LoRA folder `adapter_dir` (r = r_max) to `ranks` (one per group of module paths) into `output`.

    Modules in no group keep the full rank. Returns the rank of every module (its PEFT path)."""
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    adapter_dir = Path(adapter_dir)
    config = LoraConfig.from_pretrained(str(adapter_dir))
    if config.use_rslora or config.use_dora or config.rank_pattern or config.alpha_pattern:
        raise ShearsError(f"{adapter_dir}: a super-adapter is a plain LoRA (no rslora, DoRA or rank/alpha patterns)")
    weights = load_file(adapter_dir / ADAPTER_WEIGHTS)
    r_max, alpha = config.r, config.lora_alpha
    rank_of = {key[: -len(".lora_A.weight")]: r_max for key in weights if key.endswith(".lora_A.weight")}
    if len(group_modules) != len(ranks):
        raise ShearsError(f"{len(ranks)} ranks for {len(group_modules)} groups; give one rank per group")
    for modules, r in zip(group_modules, ranks):
        if not 1 <= int(r) <= r_max:
            raise ShearsError(f"rank {r} is outside 1..{r_max} (the super-adapter's rank)")
        for path in modules:
            if path not in rank_of:
                raise ShearsError(f"{adapter_dir} has no adapter for module {path}; its modules are e.g. {sorted(rank_of)[:2]}")
            rank_of[path] = int(r)

    sliced = {}
    for key, tensor in weights.items():
        path, kind = key.rsplit(".lora_", 1)
        if kind == "A.weight":
            sliced[key] = tensor[: rank_of[path]].contiguous()
        elif kind == "B.weight":
            sliced[key] = tensor[:, : rank_of[path]].contiguous()
        else:
            raise ShearsError(f"{adapter_dir}: unexpected adapter weight {key!r} (only lora_A / lora_B are sliced)")

    def pattern_key(path: str) -> str:  # relative to the model PEFT wraps, as PEFT names modules when injecting
        return re.escape(path.removeprefix("base_model.model."))

    config.r = max(rank_of.values())
    config.lora_alpha = alpha * config.r / r_max
    config.rank_pattern = {pattern_key(p): r for p, r in rank_of.items()}
    config.alpha_pattern = {pattern_key(p): alpha * r / r_max for p, r in rank_of.items()}
    with atomic_output_dir(output) as tmp:
        save_file(sliced, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
        write_manifest(tmp, {
            "stage": "extract",
            **manifest,
            "super_adapter_rank": r_max,
            "scaling": alpha / r_max,
            "adapter_parameters": sum(t.numel() for t in sliced.values()),
            "super_adapter_parameters": sum(t.numel() for t in weights.values()),
        })
    return rank_of


def adapter_parameters(super_adapter: str | os.PathLike, group_modules: Sequence[Sequence[str]]) -> list[int]:
    """Adapter parameters per unit of rank of every group: sum over its modules of in + out features.

    The cost of a configuration is then `sum(r_g * per_rank[g])`, computed without touching the model."""
    from safetensors import safe_open

    with safe_open(str(Path(super_adapter) / ADAPTER_WEIGHTS), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    return [sum(shapes[f"{m}.lora_A.weight"][1] + shapes[f"{m}.lora_B.weight"][0] for m in modules) for modules in group_modules]


def extract(super_adapter: str | os.PathLike, subnet: str, output: str | os.PathLike, model: str | None = None) -> dict:
    """`shears extract`: resolve `subnet` (heuristic|maximal|minimal|FILE.json) and write the PEFT folder."""
    from ..search.space import SearchSpace

    names, widths, modules, manifest = super_adapter_groups(super_adapter)
    space = SearchSpace.of(widths, names)
    ranks, how = space.resolve(subnet)
    write_sub_adapter(super_adapter, modules, ranks, output, {
        "super_adapter": str(Path(super_adapter).resolve()),
        "base_model": model or manifest.get("base_model"),
        "chosen_by": how,
        "ranks": list(ranks),
        "ranks_by_group": dict(zip(names, ranks)),
    })
    return {"ranks": list(ranks), "chosen_by": how}


def extract_command(args) -> None:
    result = extract(args.super_adapter, args.subnet, args.output, model=args.model)
    print(f"extracted the {result['chosen_by']} sub-adapter (ranks {sorted(set(result['ranks']), reverse=True)}) to {args.output}")
