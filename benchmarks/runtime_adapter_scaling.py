"""Where a run-time adapter's cost falls below 10%: `shears bench`'s four routes at growing model sizes.

At each size of `sparse_scaling.py` (random-weight LLaMAs at real models' dimensions, pruned row-wise by
magnitude at 50%), one random LoRA (the paper's rank 32, alpha 64, on Q, K, V, Up, Down; B drawn non-zero:
speed does not depend on what the weights say) is deployed four ways by the project's own code, all with
INT8 weights: baked into the IR's graph (`shears export --adapter`), applied at run time by OpenVINO GenAI
on the base IR (`--runtime-adapter`), merged into the sparse base (`shears extract --merge`'s masked merge),
and the base alone. `shears bench` measures them in one run, interleaved rounds, every IR through GenAI.
The adapter's decode cost is 1 - decode tokens/s of a route / the base alone's; the last lines say, per
size, whether the run-time and the baked adapter cost less than 10%.

    python benchmarks/runtime_adapter_scaling.py [--sizes 135m,360m] [--rounds 3] [--max-new-tokens 32]

Models and IRs live in --workdir (kept with --keep, and then reused).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

from shears_nncf.bench import DEFAULT_PROMPTS, benchmark, format_table
from shears_nncf.export.merge import merge_to_folder
from shears_nncf.export.openvino import export_openvino
from shears_nncf.models import EMBEDDED_MODEL, cache_dir, load_tokenizer
from shears_nncf.nls.folder import ADAPTER_CONFIG
from sparse_scaling import SIZES, make_model

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
COST_LIMIT = 0.10


def make_adapter(model_dir: Path, folder: Path, rank: int) -> None:
    """A PEFT LoRA on the sparse model, alpha = 2 r as the paper's, B drawn non-zero (PEFT starts it at zero)."""
    model = get_peft_model(LlamaForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(folder)


def prepare(size: str, work: Path, tokenizer, rank: int, weights: str) -> tuple[dict[str, Path], list[Path]]:
    """The three IR folders of one size (each built unless it exists), and every folder made for them."""
    model_dir, adapter, merged = work / f"{size}_s50", work / f"{size}_s50_lora{rank}", work / f"{size}_s50_merged"
    irs = {"baked": work / f"{size}_baked_{weights}", "runtime": work / f"{size}_runtime_{weights}",
           "merged": work / f"{size}_merged_{weights}"}
    if not (model_dir / "config.json").is_file():
        make_model(size, 0.5, model_dir, tokenizer)
    if not (adapter / ADAPTER_CONFIG).is_file():
        make_adapter(model_dir, adapter, rank)
    if not irs["baked"].exists():
        export_openvino(model_dir, irs["baked"], adapter=adapter, weights=weights)
    if not irs["runtime"].exists():
        export_openvino(model_dir, irs["runtime"], runtime_adapters=[adapter], weights=weights)
    if not irs["merged"].exists():
        merge_to_folder(model_dir, adapter, merged)
        export_openvino(merged, irs["merged"], weights=weights)
        shutil.rmtree(merged)
    return irs, [model_dir, adapter, *irs.values()]


def adapter_costs(report: dict) -> dict[str, float]:
    """1 - decode tokens/s of each route / the base alone's (rows of one size)."""
    rows = [row for row in report["rows"] if row.get("status") == "ok"]
    base = next(row["decode_tokens_per_s"] for row in rows if row["route"] == "base")
    return {row["route"]: 1 - row["decode_tokens_per_s"] / base for row in rows if row["route"] != "base"}


def _route(row: dict) -> str:
    return "runtime" if row.get("adapter") else row["route"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="135m,360m", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--weights", default="int8", choices=["as-is", "int8", "int4"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2, help="how many of `shears bench`'s default prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", default=str(cache_dir() / "runtime_adapter_scaling"))
    parser.add_argument("--keep", action="store_true", help="keep the models and IRs (a rerun then reuses them)")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    verdicts = []
    for size in sizes:
        print(f"preparing {size} ...", flush=True)
        irs, made = prepare(size, work, tokenizer, args.rank, args.weights)
        print(f"measuring {size} (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}) ...", flush=True)
        report = benchmark([str(irs[r]) for r in ("baked", "runtime", "merged")], prompts=DEFAULT_PROMPTS[:args.prompts],
                           max_new_tokens=args.max_new_tokens, threads=args.threads, rounds=args.rounds)
        print(f"{size}: rank-{args.rank} LoRA on {', '.join(TARGETS)}, {args.weights} weights, 50% sparse")
        print(format_table(report))
        print("decode tokens/s per round: " + "; ".join(
            f"{_route(row)} {', '.join(f'{x:.1f}' for x in row.get('rounds_decode_tokens_per_s') or [])}"
            for row in report["rows"]))
        costs = adapter_costs(report)
        verdicts.append(f"{size}: decode cost vs the base alone: " + ", ".join(
            f"{route} {100 * cost:+.1f}%{' (< 10%)' if cost < COST_LIMIT else ''}" for route, cost in costs.items()))
        if not args.keep:
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
