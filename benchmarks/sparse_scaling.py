"""Where OpenVINO's sparse INT8 kernels pay: model size x sparsity x format, against the memory-bandwidth limit.

LLaMA-architecture models with random weights, built from a config at real models' dimensions (the
embedded tokenizer's 49,152-token vocabulary for all; TinyLlama's own is 32,000), pruned row-wise by the
project's magnitude pruning (`sparsity.masks.magnitude_`) at 0, 50 and 70%, and exported by `shears
export`'s own code as INT8 weight-only, W8A8, W8A8 run with CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE set to
the lowest decoder layer's sparsity, and INT4 weight-only. Random weights are enough: speed does not depend on what the weights
say, only on their count, format and zeros. Every row is measured at each batch size in its own process
(`shears_nncf.bench.throughput`): prefill and decode tokens/s, peak memory, the kernels that ran.

Decode is bound by memory bandwidth: a step reads every weight once, so decode tokens/s cannot exceed
batch x bandwidth / bytes of weights read per step. Bytes come from the IR's own weight constants
(scales and zero points left out, a few %); where a sparse kernel ran, an INT8 layer at sparsity s is
counted at (1 - s) + 1/8 of its dense bytes (the non-zeros plus a one-bit-per-weight bitmap). Bandwidth
is measured in the same run by a plain numpy copy on all cores (read + write bytes / s, best of 5).
On a CPU without AMX the sparse kernels cannot run: those rows are skipped and the rest still measured.

    python benchmarks/sparse_scaling.py [--sizes 135m,360m,1.1b] [--rows '135m/*'] [--results FILE]

Resumable: each finished row is written (atomically) to the results file, and rows already there are not
measured again. Models and IRs live in --workdir and are removed once their rows are done (--keep keeps them).
The exports take most of the time and need no quiet machine: `--prepare` builds the IRs only, beside other
work; the run without it then measures them.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shears_nncf.artifacts import read_json, write_json
from shears_nncf.bench import cpu_isa, throughput
from shears_nncf.export.openvino import OpenVINOModel, export_openvino
from shears_nncf.models import EMBEDDED_MODEL, cache_dir, load_tokenizer
from shears_nncf.sparsity.masks import magnitude_
from shears_nncf.tables import text_table

SIZES = {  # the dimensions of real models; "7b-4l" is LLaMA-7B's width with 4 of its 32 layers
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, tie_word_embeddings=True),  # SmolLM2-135M
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5, tie_word_embeddings=True),  # SmolLM2-360M
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, tie_word_embeddings=False),  # TinyLlama-1.1B
    "7b-4l": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=4, num_attention_heads=32,
                  num_key_value_heads=32, tie_word_embeddings=False),  # LLaMA-7B width
}
SPARSITIES = (0.0, 0.5, 0.7)
FORMATS = ("int8", "w8a8", "w8a8-sparse", "int4")  # w8a8-sparse: the W8A8 IR run with the sparse rate set
BITS = {"f32": 32, "f16": 16, "bf16": 16, "i8": 8, "u8": 8, "i4": 4, "u4": 4}


def row_ids(sizes: list[str]) -> list[str]:
    return [f"{size}/s{round(s * 100)}/{fmt}" for size in sizes for s in SPARSITIES for fmt in FORMATS
            if not (fmt == "w8a8-sparse" and s == 0)]


def copy_bandwidth(mib: int = 512, threads: int | None = None, repeats: int = 5) -> float:
    """Bytes per second a plain numpy copy moves (read + write), split over `threads` at once; the best of `repeats`."""
    threads = threads or os.cpu_count()
    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)
    chunks = [slice(i * len(src) // threads, (i + 1) * len(src) // threads) for i in range(threads)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # numpy releases the GIL while it copies
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda c: np.copyto(dst[c], src[c]), chunks))
            best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def make_model(size: str, sparsity: float, folder: Path, tokenizer) -> None:
    """The same random model every time (seed 0), pruned row-wise by magnitude, saved with the tokenizer."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         max_position_embeddings=2048, **SIZES[size])
    model = LlamaForCausalLM(config).eval()
    if sparsity:
        magnitude_(model, sparsity)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def weight_bytes(ir: OpenVINOModel, sparse_fc: int) -> tuple[int, int]:
    """(bytes read per decode step, parameters) from the IR's MatMul weight constants.

    `sparse_fc` FullyConnected layers ran a sparse kernel: that share of the decoder linears is counted at
    (1 - s) + 1/8 of its INT8 bytes."""
    layers = [layer for layer in ir.layers if not layer["adapter"]]
    dense = sum(int(np.prod(layer["shape"])) * BITS[layer["dtype"]] // 8 for layer in layers)
    params = sum(int(np.prod(layer["shape"])) for layer in layers)
    decoder = [layer for layer in layers if layer["layer"] != "lm_head"]
    if not sparse_fc or not decoder:
        return dense, params
    share = min(1.0, sparse_fc / len(decoder))
    decoder_bytes = sum(int(np.prod(layer["shape"])) * BITS[layer["dtype"]] // 8 for layer in decoder)
    s = ir.sparsity["base_sparsity"]
    return int(dense - share * decoder_bytes * (1 - ((1 - s) + 1 / 8))), params


def sparse_rate(ir: OpenVINOModel) -> float:
    """The rate that lets every pruned decoder linear take the sparse kernel: OpenVINO uses it on layers at
    least this sparse, and int(0.7 * 576) / 576 is just under 0.7, so the lowest layer's sparsity, rounded down."""
    decoder = [layer["sparsity"] for layer in ir.layers if not layer["adapter"] and layer["layer"] != "lm_head"]
    return math.floor(100 * min(decoder)) / 100


def prepared_ir(row_id: str, work: Path, tokenizer, args) -> Path:
    """The row's IR folder, built (with its pruned model, if that is gone too) unless it exists."""
    size, sparsity_tag, fmt = row_id.split("/")
    weights = "w8a8" if fmt == "w8a8-sparse" else fmt
    ir = work / f"{size}_{sparsity_tag}_{weights}"
    if not ir.exists():
        model_dir = work / f"{size}_{sparsity_tag}"
        if not (model_dir / "config.json").is_file():
            make_model(size, int(sparsity_tag[1:]) / 100, model_dir, tokenizer)
        export_openvino(model_dir, ir, weights=weights, nsamples=args.calibration_samples, seqlen=64)
    return ir


def measure_row(row_id: str, work: Path, tokenizer, args, bandwidth: float, amx: bool) -> dict:
    size, sparsity_tag, fmt = row_id.split("/")
    sparsity = int(sparsity_tag[1:]) / 100
    row = {"row": row_id, "size": size, "sparsity": sparsity, "format": fmt, "bandwidth_gbs": bandwidth / 1e9}
    if fmt == "w8a8-sparse" and not amx:
        return dict(row, status="skipped: no AMX on this CPU (the sparse INT8 kernels need it)")
    ir = prepared_ir(row_id, work, tokenizer, args)
    exported = OpenVINOModel.read(ir)
    rate = sparse_rate(exported) if fmt == "w8a8-sparse" else None
    row.update(ir_mb=exported.ir_bytes / 2**20, ir_sparsity=exported.sparsity["base_sparsity"], sparse_rate=rate,
               batches={})
    for batch in args.batches:
        result = throughput(ir, batch, args.prompt_tokens, args.max_new_tokens, sparse_rate=rate, threads=args.threads)
        kernels = result.get("fc_kernels", {}).get("decode", {})
        sparse_fc = sum(n for k, n in kernels.items() if "sparse" in k)
        read, params = weight_bytes(exported, sparse_fc)
        limit = batch * bandwidth / read
        result.update(weight_bytes_per_step=read, limit_decode_tokens_per_s=limit, sparse_fc=sparse_fc,
                      fc_total=sum(kernels.values()),
                      fraction_of_limit=result["decode_tokens_per_s"] / limit if result["status"] == "ok" else None)
        row.update(params=params)
        row["batches"][str(batch)] = result
    row["status"] = "ok" if all(r["status"] == "ok" for r in row["batches"].values()) else "failed"
    return row


def crossover(rows: dict, batches: list[int], amx: bool) -> list[str]:
    """From what size and sparsity the sparse path's decode beats dense W8A8 of the same size, per batch."""
    lines = []
    measured = sorted({r["size"]: r.get("params", 0) for r in rows.values() if r["status"] == "ok"}.items(),
                      key=lambda kv: kv[1])
    for batch in map(str, batches):
        found, compared = None, False
        for size, params in measured:
            dense = rows.get(f"{size}/s0/w8a8")
            for pct in (50, 70):
                sparse = rows.get(f"{size}/s{pct}/w8a8-sparse")
                if not (dense and sparse and dense["status"] == sparse["status"] == "ok"
                        and batch in dense["batches"] and batch in sparse["batches"]):
                    continue
                compared = True
                speedup = sparse["batches"][batch]["decode_tokens_per_s"] / dense["batches"][batch]["decode_tokens_per_s"]
                if speedup > 1 and found is None:
                    found = f"from {size} ({params / 1e9:.2f}B linear params) at {pct}% ({speedup:.2f}x dense W8A8)"
        if not compared:
            why = "a sparse W8A8 row beside its dense W8A8 is needed" if amx else "no AMX on this CPU"
            lines.append(f"crossover, decode batch {batch}: not measured ({why})")
        elif found:
            lines.append(f"crossover, decode batch {batch}: the sparse path beats dense W8A8 {found}")
        else:
            lines.append(f"crossover, decode batch {batch}: none up to {measured[-1][1] / 1e9:.2f}B linear params ({measured[-1][0]})")
    return lines


def format_ratios(rows: dict, sizes: list[str], batches: list[int]) -> str:
    """Decode tokens/s of each format over dense INT8 of the same size and batch. INT8 at 50 and 70% runs the
    same dense kernel on the same number of weights as at 0%, so its column shows the measurement's noise."""
    columns = [("s50", "int8"), ("s70", "int8"), ("s0", "w8a8"), ("s50", "w8a8-sparse"), ("s70", "w8a8-sparse"),
               ("s0", "int4")]
    header = ["decode vs dense INT8", *(f"{fmt} {tag[1:]}%" for tag, fmt in columns)]
    lines = []
    for size in sizes:
        for batch in map(str, batches):
            base = rows.get(f"{size}/s0/int8", {}).get("batches", {}).get(batch, {})
            if base.get("status") != "ok":
                continue
            cells = []
            for tag, fmt in columns:
                r = rows.get(f"{size}/{tag}/{fmt}", {}).get("batches", {}).get(batch, {})
                ok = r.get("status") == "ok"
                cells.append(f"{r['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x" if ok else "-")
            lines.append([f"{size}, batch {batch}", *cells])
    return "\n".join(text_table(header, lines))


def format_rows(rows: dict, order: list[str]) -> str:
    header = ["row", "linear params", "IR MB", "IR sparsity", "batch", "prefill tok/s", "decode tok/s",
              "limit tok/s", "of limit", "GB/s", "peak MB", "FC kernels (decode)", "status"]
    lines = []
    for row_id in order:
        row = rows.get(row_id)
        if row is None:
            continue
        if "batches" not in row:
            lines.append([row_id, "-", "-", f"{row['sparsity']:.0%}", "-", "-", "-", "-", "-", "-", "-", "-", row["status"]])
            continue
        for batch, r in row["batches"].items():
            ok = r["status"] == "ok"
            lines.append([
                row_id, f"{row.get('params', 0) / 1e6:.0f}M", f"{row['ir_mb']:.0f}", f"{row['ir_sparsity']:.0%}", batch,
                f"{r['prefill_tokens_per_s']:.1f}" if ok else "-", f"{r['decode_tokens_per_s']:.1f}" if ok else "-",
                f"{r['limit_decode_tokens_per_s']:.1f}", f"{r['fraction_of_limit']:.0%}" if ok else "-",
                f"{row['bandwidth_gbs']:.1f}", f"{r['peak_rss_mb']:.0f}" if ok else "-",
                ", ".join(f"{k}x{n}" for k, n in sorted(r["fc_kernels"].get("decode", {}).items())) or "-", r["status"],
            ])
    return "\n".join(text_table(header, lines, rule=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="135m,360m,1.1b", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--rows", default="*", help="comma-separated patterns of row ids SIZE/sS/FORMAT, e.g. '1.1b/*/w8a8*'")
    parser.add_argument("--results", default="sparse_scaling.json", help="results JSON, read to resume and rewritten after each row")
    parser.add_argument("--workdir", default=str(cache_dir() / "sparse_scaling"), help="models and IRs while they are needed")
    parser.add_argument("--keep", action="store_true", help="keep the models and IRs after their rows are measured")
    parser.add_argument("--prepare", action="store_true",
                        help="only build the IRs of the rows still to measure (into --workdir, kept), measuring nothing: "
                             "the slow exports can run beside other work, the measurement later on a quiet machine")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="decode steps measured per batch")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: OpenVINO's choice)")
    parser.add_argument("--calibration-samples", type=int, default=8, help="W8A8 calibration samples (64 tokens each)")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.max_new_tokens < 1 or args.prompt_tokens < 1 or min(args.batches) < 1:
        parser.error("--max-new-tokens, --prompt-tokens and every batch must be at least 1")
    patterns = [p.strip() for p in args.rows.split(",") if p.strip()]
    order = [r for r in row_ids(sizes) if any(fnmatch.fnmatch(r, p) for p in patterns)]

    cpu = cpu_isa()
    results_path = Path(args.results)
    results = read_json(results_path, what="results file") if results_path.exists() else {"rows": {}}
    work = Path(args.workdir)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    todo = [r for r in order if results["rows"].get(r, {}).get("status") != "ok"]  # skipped rows: retried (another CPU?)
    if args.prepare:
        prepare(todo, work, tokenizer, args, cpu["amx"])
        return
    bandwidth = copy_bandwidth(threads=args.threads)
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores), AMX: {'yes' if cpu['amx'] else 'NO: the sparse rows are skipped'}; "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for row_id in todo:
        print(f"measuring {row_id} ...", flush=True)
        results["rows"][row_id] = measure_row(row_id, work, tokenizer, args, bandwidth, cpu["amx"])
        results["cpu"] = cpu
        write_json(results_path, results)
        if not args.keep:
            _remove_unneeded(work, row_id, todo)

    print(format_rows(results["rows"], order))
    print(format_ratios(results["rows"], sizes, args.batches))
    for line in crossover({r: results["rows"][r] for r in order if r in results["rows"]}, args.batches, cpu["amx"]):
        print(line)
    print(f"JSON: {results_path}")


def prepare(todo: list[str], work: Path, tokenizer, args, amx: bool) -> None:
    """Build every IR the rows in `todo` will measure; a pruned model is deleted once its IRs exist."""
    measured = [r for r in todo if amx or not r.endswith("w8a8-sparse")]
    for i, row_id in enumerate(measured):
        print(f"preparing {row_id} ...", flush=True)
        prepared_ir(row_id, work, tokenizer, args)
        size, sparsity_tag, _ = row_id.split("/")
        if not any(r.startswith(f"{size}/{sparsity_tag}/") for r in measured[i + 1:]):
            shutil.rmtree(work / f"{size}_{sparsity_tag}", ignore_errors=True)
    print(f"IRs of {len(measured)} rows ready in {work}; measure them on a quiet machine without --prepare")


def _remove_unneeded(work: Path, done: str, todo: list[str]) -> None:
    """Delete the model and IR folders no remaining row uses (they are rebuilt identically if needed again)."""
    remaining = todo[todo.index(done) + 1:]
    size, sparsity_tag, _ = done.split("/")
    prefix = f"{size}/{sparsity_tag}/"
    needed_irs = {("w8a8" if r.endswith("w8a8-sparse") else r.split("/")[2]) for r in remaining if r.startswith(prefix)}
    for weights in {"int8", "w8a8", "int4"} - needed_irs:
        shutil.rmtree(work / f"{size}_{sparsity_tag}_{weights}", ignore_errors=True)
    if not needed_irs:
        shutil.rmtree(work / f"{size}_{sparsity_tag}", ignore_errors=True)


if __name__ == "__main__":
    main()
