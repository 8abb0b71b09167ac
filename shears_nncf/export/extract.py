"""`shears extract`: a super-adapter's sub-adapter, chosen by name or by a search, as a PEFT folder or merged.

The sub-adapter's format is `sub_adapter.py`'s; the masked merge is `merge.py`'s.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ShearsError
from ..nls.folder import SuperAdapter
from .sub_adapter import write_qa_sub_adapter, write_sub_adapter


@dataclass(frozen=True)
class ExtractConfig:
    """Which sub-adapter `shears extract` writes, and how: `subnet` is heuristic, maximal, minimal, a search folder's
    search.json or a JSON list of ranks; `merge` writes an HF model folder with it folded into the sparse base."""

    subnet: str = "heuristic"
    merge: bool = False


@dataclass(frozen=True)
class Extracted:
    """What `extract` wrote: where, the ranks chosen and how; for a merge, the share of the update (L2) the base's
    zeros dropped; for a quantization-aware super-adapter, its mode."""

    path: Path
    ranks: list[int]
    chosen_by: str
    sparse_adapter: bool  # trained mask-aware (shears.lora.sparse_adapter)
    merged: bool = False
    update_dropped_by_mask: float | None = None
    quantization: str | None = None


def extract(super_adapter: str | os.PathLike, config: ExtractConfig, output: str | os.PathLike, *,
            model: str | None = None, overwrite: bool = False) -> Extracted:
    """`shears extract`: resolve `config.subnet` and write the PEFT folder.

    With `config.merge`, write instead an HF model folder: the sub-adapter folded into the sparse base `model`
    (default: the super-adapter's), keeping every zero of the base (`merge.py`). Both manifests say whether the
    super-adapter was trained mask-aware (`sparse_adapter`): such an adapter is the trained model only with its
    update masked, which the merge does and plain PEFT does not."""
    from ..search.subnet import resolve_subnet

    trained = SuperAdapter.read(super_adapter, quantization_aware=True)
    ranks, how = resolve_subnet(trained.space, config.subnet)
    merge = config.merge
    base = model or trained.base_model
    record = {
        "super_adapter": str(Path(super_adapter).resolve()),
        "base_model": base,
        "chosen_by": how,
        "ranks": list(ranks),
        "ranks_by_group": dict(zip(trained.group_names, ranks)),
        "sparse_adapter": trained.mask_aware,
    }
    result = Extracted(Path(output), list(ranks), how, trained.mask_aware, merged=merge)
    if trained.quantization:  # its ranks reach the weights only when the quantizers are stripped: in an IR
        if merge:
            raise ShearsError(f"{super_adapter} is quantization-aware: its sub-adapter merges into the integer "
                              f"weights of an IR; extract without --merge and run `shears export --model {base} "
                              f"--adapter {output}`")
        write_qa_sub_adapter(trained, ranks, output, {**record, "sparse_adapter": False}, overwrite=overwrite)
        return replace(result, quantization=trained.quantization["mode"])
    if not merge:
        write_sub_adapter(super_adapter, trained.group_modules, ranks, output, record, overwrite=overwrite)
        return result
    if not base:
        raise ShearsError(f"{super_adapter} names no base model; give the sparse base to merge into with --model")
    from .merge import merge_to_folder

    with tempfile.TemporaryDirectory(prefix="shears-sub-adapter-") as tmp:
        write_sub_adapter(super_adapter, trained.group_modules, ranks, Path(tmp) / "sub_adapter", record)
        merged = merge_to_folder(base, Path(tmp) / "sub_adapter", output, record, overwrite=overwrite)
    return replace(result, update_dropped_by_mask=merged["update_dropped_by_mask"])


def extract_command(args) -> None:
    result = extract(args.super_adapter, ExtractConfig(args.subnet, args.merge), args.output, model=args.model,
                     overwrite=args.overwrite)
    ranks, dropped = sorted(set(result.ranks), reverse=True), result.update_dropped_by_mask
    if args.merge and result.sparse_adapter:
        print(f"merged the {result.chosen_by} sub-adapter (ranks {ranks}) into the sparse base, keeping its zeros, "
              f"to {args.output}; exact: it was trained with the base's mask (shears.lora.sparse_adapter), so the "
              f"{dropped:.1%} of B A (L2) on pruned positions never reached the trained model")
    elif args.merge:
        print(f"merged the {result.chosen_by} sub-adapter (ranks {ranks}) into the sparse base, keeping its zeros, "
              f"to {args.output}; the mask dropped {dropped:.1%} of the update (L2)")
    else:
        print(f"extracted the {result.chosen_by} sub-adapter (ranks {ranks}) to {args.output}")
    if result.quantization:
        print(f"quantization-aware ({result.quantization}): deploy it as one IR with the sub-adapter folded into the "
              f"integer weights: shears export --model SPARSE_BASE --adapter {args.output} --output OPENVINO_DIR")
    if not args.merge and result.sparse_adapter:
        print("note: this super-adapter was trained mask-aware (shears.lora.sparse_adapter): the trained model adds the "
              "update on the base's non-zeros only, which plain PEFT does not do; `shears evaluate --adapter` applies "
              "the mask, and `shears export --adapter` (or `shears extract --merge`) merges it, which is exact for it")
