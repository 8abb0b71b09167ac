"""The benchmark's orchestration: the rows to run, one worker process per row and round, each row's median.

`shears bench` (`bench_command`) and the scaling study (`throughput`) start here; `workers` runs inside each
process, `report` turns the rows into tables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from statistics import median

from ..artifacts import write_json
from ..errors import ShearsError
from ..export import IR_BIN, IR_XML, TOKENIZER_XML
from . import workers
from .report import accuracy_results, format_choice, format_table

DEFAULT_PROMPTS = [
    "Question: Do penguins live at the North Pole? Answer:",
    "The three primary colors are",
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue in one sentence:",
]
_WEIGHT_FILES = (IR_XML, IR_BIN, "*.safetensors", "pytorch_model*.bin")


def benchmark(
    folders: list[str | os.PathLike],
    prompts: list[str] | None = None,
    max_new_tokens: int = 64,
    sparse_rate: float | None = None,
    json_out: str | os.PathLike | None = None,
    threads: int | None = None,
    rounds: int = 3,
) -> dict:
    """Run every folder on the same prompts; IR folders also with the sparse rate set when one is given, IR
    folders with run-time adapters also with each adapter. Each row runs once per round, the rows in turn.

    `threads` pins both back ends to the same number of inference threads (default: each its own choice).
    """
    if sparse_rate is not None and not 0.0 <= sparse_rate <= 1.0:
        raise ShearsError(f"--sparse-rate {sparse_rate} is outside [0, 1]; give e.g. 0.5")
    if max_new_tokens < 1:
        raise ShearsError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if threads is not None and threads < 1:
        raise ShearsError(f"--threads must be at least 1, got {threads}")
    if rounds < 1:
        raise ShearsError(f"--rounds must be at least 1, got {rounds}")
    prompts = prompts or DEFAULT_PROMPTS
    backends = {str(folder): folder_backend(folder) for folder in folders}
    exported = {f: _exported(f) for f, backend in backends.items() if backend == "openvino"}
    adapters = {f: ir.runtime_adapters if ir else {} for f, ir in exported.items()}
    ir_backend = "genai" if any(adapters.values()) else "openvino"  # the one runtime that applies them, for all IRs
    runs = []
    for folder, backend in backends.items():
        backend = ir_backend if backend == "openvino" else backend
        rates = [None] if backend == "pytorch" or sparse_rate is None else [None, sparse_rate]
        names = [None, *adapters[folder]] if backend == "genai" else [None]
        runs += [dict(folder=folder, backend=backend, sparse_rate=rate, threads=threads, adapter=name,
                      adapter_file=adapters[folder][name]["path"] if name else None,
                      alpha=adapters[folder][name]["alpha"] if name else None)
                 for rate in rates for name in names]
    load_average = " ".join(f"{x:.1f}" for x in os.getloadavg())  # other work on the machine skews every row
    measured = [[] for _ in runs]
    for _ in range(rounds):
        for run, results in zip(runs, measured):
            results.append(_spawn(dict(run, prompts=prompts, max_new_tokens=max_new_tokens)))
    rows = [dict(run, **_describe(run, exported.get(run["folder"])), **_median(results))
            for run, results in zip(runs, measured)]
    report = {"cpu": cpu_isa(), "load_average": load_average, "prompts": prompts, "max_new_tokens": max_new_tokens,
              "rounds": rounds, "rows": rows}
    if json_out is not None:
        write_json(json_out, report)
    return report


def folder_backend(folder: str | os.PathLike) -> str:
    """'openvino' for an exported IR folder, 'pytorch' for an HF model or PEFT adapter folder."""
    folder = Path(folder)
    if (folder / IR_XML).is_file():
        if not (folder / TOKENIZER_XML).is_file():
            raise ShearsError(f"{folder} has an IR but no {TOKENIZER_XML}; export it with `shears export`")
        return "openvino"
    if workers.is_adapter(folder) or (folder / "config.json").is_file() and _weight_bytes(folder):
        return "pytorch"
    raise ShearsError(
        f"{folder} is not an OpenVINO IR folder ({IR_XML}) nor a PyTorch model or PEFT adapter folder; "
        f"give the output of `shears export` (or an HF model folder for the eager baseline)"
    )


def cpu_isa() -> dict:
    """What this CPU offers the sparse path: AMX (Sapphire Rapids or newer) is required for it."""
    lines = workers.read_lines("/proc/cpuinfo")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    model_name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return {
        "model": model_name,
        "cores": os.cpu_count(),
        "amx": {"amx_tile", "amx_int8"} <= flags,
        "flags": sorted(f for f in flags if f.startswith(("amx", "avx512", "avx2", "avx_vnni"))),
    }


_TIMES = ("ttft_ms", "tpot_ms", "tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s")


def _median(results: list[dict]) -> dict:
    """One row from its rounds: the median of every time, the highest peak memory; a failed round, as it failed."""
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        return dict(failed[0], rounds_ok=len(results) - len(failed))
    row = dict(results[-1], peak_rss_mb=max(r["peak_rss_mb"] for r in results))
    for key in _TIMES:
        values = [r[key] for r in results if r.get(key) is not None]
        row[key] = median(values) if values else None
    row["rounds_decode_tokens_per_s"] = [r.get("decode_tokens_per_s") for r in results]
    return row


def _exported(folder: str):
    """The IR folder as `shears export` wrote it, or None for an IR that shears did not export."""
    from ..export.openvino import OpenVINOModel

    try:
        return OpenVINOModel.read(folder)
    except ShearsError:
        return None


def _describe(run: dict, exported) -> dict:
    """What a row deploys: its route (baked, runtime, merged, base; eager for PyTorch), the adapter's ranks and
    parameters (from the IR's own layers, or the run-time adapter's entry), its weights and size on disk."""
    folder = Path(run["folder"])
    weights = "torch fp32" if run["backend"] == "pytorch" else exported.weights if exported else "?"
    row = {"size_mb": _folder_size_mb(folder), "weights": weights, "adapter_ranks": None,
           "adapter_parameters": None}
    if run["backend"] == "pytorch":
        return dict(row, route="eager")
    if exported is None:
        return dict(row, route="?")
    if run["adapter"]:
        entry = exported.runtime_adapter(run["adapter"])
        return dict(row, route="runtime", adapter_ranks=entry["ranks"], adapter_parameters=entry["parameters"],
                    size_mb=row["size_mb"] + entry["bytes"] / 2**20)
    if exported.merged:
        return dict(row, route="merged")
    lora = [layer for layer in exported.layers if layer["adapter"]]
    if not lora:
        return dict(row, route="base")
    ranks = sorted({layer["shape"][0] for layer in lora if ".lora_A" in layer["layer"]}, reverse=True)
    return dict(row, route="baked", adapter_ranks=ranks,
                adapter_parameters=sum(layer["shape"][0] * layer["shape"][1] for layer in lora))


def throughput(folder: str | os.PathLike, batch: int, prompt_tokens: int, new_tokens: int,
               sparse_rate: float | None = None, threads: int | None = None) -> dict:
    """Prefill and decode tokens/s of an IR folder at one batch size, on synthetic token ids, in its own process.

    The scaling study's measurement: no tokenizer, every sequence of the batch `prompt_tokens` long, then
    `new_tokens` greedy steps. Returns tokens/s, peak memory and the FullyConnected kernels that ran."""
    return _spawn(dict(folder=str(folder), backend="openvino", mode="throughput", batch=batch,
                       prompt_tokens=prompt_tokens, new_tokens=new_tokens, sparse_rate=sparse_rate, threads=threads))


def _spawn(spec: dict) -> dict:
    """Run one worker in a fresh process: its result with status "ok", or the stage it crashed in.

    The worker starts with `-c`, not `-m`: this package imports `workers`, so `-m` would run a second copy of it
    as __main__, and runpy would warn of it on stderr, the channel of the worker's protocol."""
    proc = subprocess.run(
        [sys.executable, "-c", f"from {workers.__name__} import main; main()", json.dumps(spec)],
        capture_output=True, text=True, env=_worker_env(),
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return dict(json.loads(lines[-1]), status="ok")
    stages = [line for line in proc.stderr.splitlines() if line.startswith(workers.STAGE)]
    cause = f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
    kernels = [line for line in proc.stderr.splitlines() if line.startswith(workers.KERNELS)]
    return {
        "status": f"crashed ({cause}) during {stages[-1][len(workers.STAGE):].strip() if stages else 'start-up'}",
        "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "",
        "fc_kernels": json.loads(kernels[-1][len(workers.KERNELS):]) if kernels else {},
    }


def _worker_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for pattern in _WEIGHT_FILES for f in folder.glob(pattern))


def _folder_size_mb(folder: Path) -> float:
    """Bytes of the model files; an adapter folder adds its base model's."""
    size = _weight_bytes(folder)
    if workers.is_adapter(folder):
        from ..export.sub_adapter import SubAdapter  # imports torch, which a worker of an IR must not carry (its RSS)

        base = SubAdapter.read(folder).base_model
        if base and Path(base).is_dir():
            size += _weight_bytes(Path(base))
    return size / 2**20


def bench_command(args) -> None:
    """`shears bench`: the prompts file read, every folder benchmarked, the table printed."""
    from ..generate import read_prompts

    prompts = read_prompts(args.prompts) if args.prompts else None
    accuracy = dict(accuracy_results(spec, args.folders) for spec in args.accuracy or [])
    report = benchmark(args.folders, prompts=prompts, max_new_tokens=args.max_new_tokens,
                       sparse_rate=args.sparse_rate, json_out=args.json_out, threads=args.threads, rounds=args.rounds)
    print(format_table(report))
    if accuracy:
        print(format_choice(report, accuracy))
