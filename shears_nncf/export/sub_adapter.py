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
import tempfile
from pathlib import Path
from typing import Sequence

from ..artifacts import atomic_output_dir, write_manifest
from ..errors import ShearsError
from ..nls.folder import ADAPTER_WEIGHTS, super_adapter_groups, trained_mask_aware

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


def extract(super_adapter: str | os.PathLike, subnet: str, output: str | os.PathLike, model: str | None = None,
            merge: bool = False) -> dict:
    """`shears extract`: resolve `subnet` (heuristic|maximal|minimal|FILE.json) and write the PEFT folder.

    With `merge`, write instead an HF model folder: the sub-adapter folded into the sparse base `model`
    (default: the super-adapter's), keeping every zero of the base (`merge.py`). Both manifests say whether the
    super-adapter was trained mask-aware (`sparse_adapter`): such an adapter is the trained model only with its
    update masked, which the merge does and plain PEFT does not."""
    from ..nls.space import SearchSpace
    from ..search.subnet import resolve_subnet

    names, widths, modules, manifest = super_adapter_groups(super_adapter)
    space = SearchSpace.of(widths, names)
    ranks, how = resolve_subnet(space, subnet)
    base = model or manifest.get("base_model")
    record = {
        "super_adapter": str(Path(super_adapter).resolve()),
        "base_model": base,
        "chosen_by": how,
        "ranks": list(ranks),
        "ranks_by_group": dict(zip(names, ranks)),
        "sparse_adapter": trained_mask_aware(manifest),
    }
    result = {"ranks": list(ranks), "chosen_by": how, "sparse_adapter": record["sparse_adapter"]}
    if not merge:
        write_sub_adapter(super_adapter, modules, ranks, output, record)
        return result
    if not base:
        raise ShearsError(f"{super_adapter} names no base model; give the sparse base to merge into with --model")
    from .merge import merge_to_folder

    with tempfile.TemporaryDirectory(prefix="shears-sub-adapter-") as tmp:
        write_sub_adapter(super_adapter, modules, ranks, Path(tmp) / "sub_adapter", record)
        merged = merge_to_folder(base, Path(tmp) / "sub_adapter", output, record)
    return {**result, "update_dropped_by_mask": merged["update_dropped_by_mask"]}


def extract_command(args) -> None:
    result = extract(args.super_adapter, args.subnet, args.output, model=args.model, merge=args.merge)
    ranks = sorted(set(result["ranks"]), reverse=True)
    dropped = result.get("update_dropped_by_mask")
    if args.merge and result["sparse_adapter"]:
        print(f"merged the {result['chosen_by']} sub-adapter (ranks {ranks}) into the sparse base, keeping its zeros, "
              f"to {args.output}; exact: it was trained with the base's mask (shears.lora.sparse_adapter), so the "
              f"{dropped:.1%} of B A (L2) on pruned positions never reached the trained model")
    elif args.merge:
        print(f"merged the {result['chosen_by']} sub-adapter (ranks {ranks}) into the sparse base, keeping its zeros, "
              f"to {args.output}; the mask dropped {dropped:.1%} of the update (L2)")
    else:
        print(f"extracted the {result['chosen_by']} sub-adapter (ranks {ranks}) to {args.output}")
    if not args.merge and result["sparse_adapter"]:
        print("note: this super-adapter was trained mask-aware (shears.lora.sparse_adapter): the trained model adds the "
              "update on the base's non-zeros only, which plain PEFT and an OpenVINO export of this folder do not do; "
              "deploy it with `shears extract --merge`, which is exact for it")
