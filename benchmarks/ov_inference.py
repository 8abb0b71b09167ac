"""CPU inference of the embedded SmolLM2: dense vs 50%-sparse + unmerged sub-adapter, fp32 / INT8 / W8A8.

Rows: the dense original (fp32 IR), the 50%-sparse model with its sub-adapter (fp32 IR, INT8-weight
IR, W8A8 IR), the same sub-adapter merged into the sparse base keeping its zeros (`shears extract
--merge`'s `merge_to_folder`; INT8 and W8A8 IRs, no adapter matmuls), each with and without
CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE, and PyTorch eager on the same sparse model + adapter. The kernel column comes from OpenVINO's runtime graph, so a sparse
speed-up is only claimed where a sparse kernel ran. Prints the ratio of OpenVINO to PyTorch eager
tokens/s for the same sparse model.

    python benchmarks/ov_inference.py [--adapter DIR --sparse-model DIR] [--max-new-tokens 32]

Without --adapter the sub-adapter is a stand-in: a PEFT LoRA of rank 24 (the heuristic rank of
[32, 24, 16]) on q, k, v, up, down with random non-zero B. Its speed is that of a trained one of the
same rank; pass a real extracted sub-adapter (`shears extract`) with --adapter to replace it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from shears_nncf.export.merge import merged_manifest
from shears_nncf.nls.folder import ADAPTER_CONFIG
from shears_nncf.bench import benchmark, format_table
from shears_nncf.cli import main as shears
from shears_nncf.export.merge import merge_to_folder
from shears_nncf.export.openvino import export_openvino
from shears_nncf.models import EMBEDDED_MODEL, cache_dir, load_model, resolve_model

STAND_IN_RANK, STAND_IN_TARGETS = 24, ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def make_sparse_model(out: Path, ratio: float) -> str:
    """The embedded model pruned by `shears sparsify` (Wanda), as a user would."""
    code = shears(["sparsify", "--model", EMBEDDED_MODEL, "--ratio", str(ratio), "--output", str(out),
                   "--nsamples", "16", "--seqlen", "256"])
    if code != 0:
        raise SystemExit(f"shears sparsify failed with exit {code}")
    return "wanda (shears sparsify)"


def make_stand_in_adapter(sparse: Path, out: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(sparse), LoraConfig(
        r=STAND_IN_RANK, lora_alpha=64, target_modules=STAND_IN_TARGETS, task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(out)
    _point_adapter_at(out, sparse)


def _point_adapter_at(adapter: Path, base: Path) -> None:
    """The eager baseline loads the adapter's base from its config: make that the sparse folder."""
    config_file = adapter / ADAPTER_CONFIG
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base.resolve())
    config_file.write_text(json.dumps(config, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(cache_dir() / "bench_ov"), help="models and IRs (reused if present)")
    parser.add_argument("--sparse-model", help="a sparse HF folder (default: made here at --ratio)")
    parser.add_argument("--adapter", help="a real sub-adapter (PEFT folder) instead of the random rank-24 stand-in")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--sparse-rate", type=float, default=0.5, help="CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--json", default="ov_inference.json")
    parser.add_argument("--threads", type=int, default=None, help="same inference threads for OpenVINO and PyTorch")
    args = parser.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sparse = Path(args.sparse_model) if args.sparse_model else work / f"sparse{int(args.ratio * 100)}"
    if args.sparse_model:
        how = "given"
    elif sparse.exists():
        how = "reused from an earlier run"
    else:
        how = make_sparse_model(sparse, args.ratio)
    if args.adapter:
        adapter, adapter_note = work / "adapter_given", f"sub-adapter: {args.adapter}"
        shutil.copytree(args.adapter, adapter, dirs_exist_ok=True)
        _point_adapter_at(adapter, sparse)
    else:
        adapter = work / f"stand_in_adapter_r{STAND_IN_RANK}"
        adapter_note = (f"sub-adapter: STAND-IN (random LoRA r={STAND_IN_RANK} on {','.join(STAND_IN_TARGETS)}); "
                        f"pass --adapter DIR for a real extracted one")
        if not adapter.exists():
            make_stand_in_adapter(sparse, adapter)

    irs = {"dense_fp32": (resolve_model(EMBEDDED_MODEL), None, "as-is")}
    irs.update({f"sparse_lora_{w.replace('-', '')}": (sparse, adapter, w) for w in ("as-is", "int8", "w8a8")})
    merged = work / f"merged_{adapter.name}"
    if not merged.exists():
        merge_to_folder(sparse, adapter, merged)
    irs.update({f"merged_{w}": (merged, None, w) for w in ("int8", "w8a8")})
    for name, (model, adapter_dir, weights) in irs.items():
        if not (work / name).exists():
            export_openvino(model, work / name, adapter=adapter_dir, weights=weights)

    report = benchmark([work / name for name in irs] + [adapter], max_new_tokens=args.max_new_tokens,
                       sparse_rate=args.sparse_rate, json_out=args.json, threads=args.threads)
    print(f"sparse model: {sparse} ({how}); {adapter_note}")
    print(format_table(report))
    rows = {(Path(r["folder"]).name, r["sparse_rate"]): r for r in report["rows"]}
    eager = rows[(adapter.name, None)]
    if eager["status"] == "ok":
        for name in irs:
            if name.startswith("sparse"):
                for rate in (None, args.sparse_rate):
                    row = rows[(name, rate)]
                    if row["status"] == "ok":
                        print(f"OpenVINO {name} (rate {rate}) / PyTorch eager, same sparse model + adapter: "
                              f"{row['tokens_per_s'] / eager['tokens_per_s']:.2f}x tokens/s")
    dropped = merged_manifest(merged)["update_dropped_by_mask"]
    for w in ("int8", "w8a8"):
        for rate in (None, args.sparse_rate):
            one, other = rows[(f"merged_{w}", rate)], rows[(f"sparse_lora_{w}", rate)]
            if one["status"] == other["status"] == "ok":
                print(f"{w} (rate {rate}): merged-masked / unmerged adapter: {one['tokens_per_s'] / other['tokens_per_s']:.2f}x "
                      f"tokens/s (the mask dropped {dropped:.1%} of the update)")
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
