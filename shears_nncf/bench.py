"""CPU inference benchmark of exported IRs (and a PyTorch eager baseline), honest about sparsity.

Every folder runs in its own subprocess, so peak resident memory is that run's alone and a runtime
crash becomes a row that says so. Both back ends run the same greedy loop (prefill, then one token
per step with the KV cache, a fixed number of new tokens, EOS ignored so every row makes the same
number), so their times compare. OpenVINO's `CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE` is a request, not
a guarantee: the kernels that really ran are read from the compiled model's runtime graph, and
the table says "no" wherever no FullyConnected layer ran a sparse kernel.

An IR folder with run-time adapters (`shears export --runtime-adapter`) adds a row per adapter and one of
the base alone. Only OpenVINO GenAI applies run-time adapters, so a run that has any times *every* IR
through GenAI's `LLMPipeline` (backend "genai", same greedy loop, EOS ignored): the baked, merged, run-time
and base-alone rows then differ by the deployment alone. Rows are measured in interleaved rounds (each
row once per round, in turn) and the table shows each row's median, so load that drifts during the run
weighs on every row alike.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import median

from .artifacts import read_json, write_json
from .errors import ShearsError
from .export import IR_XML
from .nls.folder import ADAPTER_CONFIG
from .tables import text_table

TOKENIZER_XML = "openvino_tokenizer.xml"
DEFAULT_PROMPTS = [
    "Question: Do penguins live at the North Pole? Answer:",
    "The three primary colors are",
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue in one sentence:",
]
_WEIGHT_FILES = ("openvino_model.xml", "openvino_model.bin", "*.safetensors", "pytorch_model*.bin")


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
    if _is_adapter(folder) or (folder / "config.json").is_file() and _weight_bytes(folder):
        return "pytorch"
    raise ShearsError(
        f"{folder} is not an OpenVINO IR folder ({IR_XML}) nor a PyTorch model or PEFT adapter folder; "
        f"give the output of `shears export` (or an HF model folder for the eager baseline)"
    )


def cpu_isa() -> dict:
    """What this CPU offers the sparse path: AMX (Sapphire Rapids or newer) is required for it."""
    lines = _read_lines("/proc/cpuinfo")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    model_name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return {
        "model": model_name,
        "cores": os.cpu_count(),
        "amx": {"amx_tile", "amx_int8"} <= flags,
        "flags": sorted(f for f in flags if f.startswith(("amx", "avx512", "avx2", "avx_vnni"))),
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


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
    from .export.openvino import OpenVINOModel

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
    """Run one worker in a fresh process: its result with status "ok", or the stage it crashed in."""
    proc = subprocess.run(
        [sys.executable, "-m", "shears_nncf.bench", json.dumps(spec)], capture_output=True, text=True, env=_worker_env()
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return dict(json.loads(lines[-1]), status="ok")
    stages = [line for line in proc.stderr.splitlines() if line.startswith("stage:")]
    cause = f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
    kernels = [line for line in proc.stderr.splitlines() if line.startswith("kernels:")]
    return {
        "status": f"crashed ({cause}) during {stages[-1][6:].strip() if stages else 'start-up'}",
        "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "",
        "fc_kernels": json.loads(kernels[-1][8:]) if kernels else {},
    }


def _worker_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def _weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for pattern in _WEIGHT_FILES for f in folder.glob(pattern))


def _folder_size_mb(folder: Path) -> float:
    """Bytes of the model files; an adapter folder adds its base model's."""
    size = _weight_bytes(folder)
    if _is_adapter(folder):
        from .export.sub_adapter import SubAdapter  # imports torch, which a worker of an IR must not carry (its RSS)

        base = SubAdapter.read(folder).base_model
        if base and Path(base).is_dir():
            size += _weight_bytes(Path(base))
    return size / 2**20


# ---- the worker: one folder, one configuration, in its own process --------------------------------------------


def _stage(name: str) -> None:
    print(f"stage: {name}", file=sys.stderr, flush=True)


def _measure(prefill, decode, prompt_ids: list, max_new_tokens: int) -> dict:
    """The shared greedy loop: `prefill(ids) -> token`, `decode(token, position) -> token`."""
    ttft, step_times, total_tokens, total_time = [], [], 0, 0.0
    for ids in prompt_ids:
        start = time.perf_counter()
        token = prefill(ids)
        first = time.perf_counter()
        ttft.append(first - start)
        for step in range(max_new_tokens - 1):
            t = time.perf_counter()
            token = decode(token, len(ids) + step)
            step_times.append(time.perf_counter() - t)
        total_time += time.perf_counter() - start
        total_tokens += max_new_tokens
    return _timings(1e3 * sum(ttft) / len(ttft), 1e3 * sum(step_times) / len(step_times) if step_times else None,
                    sum(len(ids) for ids in prompt_ids) / sum(ttft), total_tokens, total_time)


def _timings(ttft_ms: float, tpot_ms: float | None, prefill_tokens_per_s: float, new_tokens: int, seconds: float) -> dict:
    """What every worker reports: prefill (time to the first token, prompt tokens/s) and decode (per token) apart."""
    return {
        "ttft_ms": ttft_ms,
        "tpot_ms": tpot_ms,
        "prefill_tokens_per_s": prefill_tokens_per_s,
        "decode_tokens_per_s": 1e3 / tpot_ms if tpot_ms else None,
        "tokens_per_s": new_tokens / seconds,
        "new_tokens": new_tokens,
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec,
    so a worker would report its (large) parent's peak."""
    for line in _read_lines("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fc_kernels(compiled_model) -> dict[str, int]:
    """Kernel (primitiveType) of every FullyConnected node of the CPU plugin's executed graph."""
    kernels = Counter()
    for op in compiled_model.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "FullyConnected":
            kernels[info["primitiveType"].astype(str)] += 1
    return dict(kernels)


def _compile_ir(folder: Path, sparse_rate: float | None, threads: int | None):
    """(core, compiled IR) on the CPU, with the sparse-weights rate requested when one is given."""
    import openvino as ov

    core = ov.Core()
    config = {} if sparse_rate is None else {"CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": sparse_rate}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    _stage("compile")
    return core, core.compile_model(folder / IR_XML, "CPU", config)


def _throughput_worker(folder: Path, batch: int, prompt_tokens: int, new_tokens: int, sparse_rate: float | None,
                       threads: int | None) -> dict:
    import numpy as np
    import openvino as ov

    _, compiled = _compile_ir(folder, sparse_rate, threads)
    request = compiled.create_infer_request()
    prompt = np.random.default_rng(0).integers(100, 1000, size=(batch, prompt_tokens), dtype=np.int64)

    def infer(ids, start):
        length = ids.shape[1]
        request.infer({
            "input_ids": ids,
            "attention_mask": np.ones((batch, start + length), dtype=np.int64),
            "position_ids": np.broadcast_to(np.arange(start, start + length, dtype=np.int64), (batch, length)).copy(),
            "beam_idx": np.arange(batch, dtype=np.int32),
        })
        return request.get_tensor("logits").data[:, -1].argmax(-1)[:, None].astype(np.int64)

    def generate(steps):
        request.reset_state()
        start = time.perf_counter()
        token = infer(prompt, 0)
        prefilled = time.perf_counter()
        for step in range(steps):
            token = infer(token, prompt_tokens + step)
        return prefilled - start, time.perf_counter() - prefilled

    _stage("warm-up")
    generate(1)
    kernels = {"decode": _fc_kernels(compiled)}
    print(f"kernels: {json.dumps(kernels)}", file=sys.stderr, flush=True)
    _stage("generation")
    prefill_s, decode_s = generate(new_tokens)
    return {
        "batch": batch, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
        "prefill_tokens_per_s": batch * prompt_tokens / prefill_s,
        "decode_tokens_per_s": batch * new_tokens / decode_s if new_tokens else None,
        "peak_rss_mb": _peak_rss_mb(),
        "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
        "fc_kernels": kernels,
        "openvino": ov.get_version(),
    }


def _openvino_worker(folder: Path, prompts: list[str], max_new_tokens: int, sparse_rate: float | None,
                     threads: int | None) -> dict:
    import numpy as np
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer ops)

    core, compiled = _compile_ir(folder, sparse_rate, threads)
    tokenize = core.compile_model(folder / TOKENIZER_XML, "CPU")
    request = compiled.create_infer_request()
    prompt_ids = [tokenize([p])["input_ids"][0].astype(np.int64) for p in prompts]
    kernels = {}

    def infer(ids, positions):
        logits = request.infer({
            "input_ids": ids[None],
            "attention_mask": np.ones((1, positions[-1] + 1), dtype=np.int64),
            "position_ids": positions[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        })["logits"]
        return int(logits[0, -1].argmax())

    def prefill(ids):
        request.reset_state()
        return infer(ids, np.arange(len(ids), dtype=np.int64))

    def decode(token, position):
        return infer(np.array([token], dtype=np.int64), np.array([position], dtype=np.int64))

    _stage("prefill (warm-up)")
    prefill(prompt_ids[0])
    kernels["prefill"] = _fc_kernels(compiled)
    print(f"kernels: {json.dumps(kernels)}", file=sys.stderr, flush=True)  # kept even if decode crashes
    _stage("decode (warm-up)")
    decode(0, len(prompt_ids[0]))
    kernels["decode"] = _fc_kernels(compiled)
    _stage("generation")
    result = _measure(prefill, decode, prompt_ids, max_new_tokens)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    result["fc_kernels"] = kernels
    result["openvino"] = ov.get_version()
    return result


def eager_model(folder: Path):
    """What an eager row runs: an HF model folder, or a PEFT adapter folder on the base it names (`load_adapted`,
    as every stage loads one)."""
    from .export.adapted import load_adapted

    return load_adapted(None, folder) if _is_adapter(folder) else load_adapted(folder)


def _pytorch_worker(folder: Path, prompts: list[str], max_new_tokens: int, threads: int | None) -> dict:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    _stage("load")
    adapted = eager_model(folder)
    model, tokenizer = adapted.model, adapted.tokenizer
    prompt_ids = [tokenizer(p, return_tensors="pt")["input_ids"][0] for p in prompts]
    cache = {}

    def prefill(ids):
        out = model(input_ids=ids[None], use_cache=True)
        cache["past"] = out.past_key_values
        return int(out.logits[0, -1].argmax())

    def decode(token, position):
        out = model(input_ids=torch.tensor([[token]]), past_key_values=cache["past"], use_cache=True)
        cache["past"] = out.past_key_values
        return int(out.logits[0, -1].argmax())

    with torch.inference_mode():
        _stage("warm-up")
        decode(prefill(prompt_ids[0]), len(prompt_ids[0]))
        _stage("generation")
        result = _measure(prefill, decode, prompt_ids, max_new_tokens)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["precision"] = "f32"
    result["fc_kernels"] = {}
    result["torch"] = torch.__version__
    return result


def _genai_worker(folder: Path, prompts: list[str], max_new_tokens: int, sparse_rate: float | None,
                  threads: int | None, adapter: str | None, adapter_file: str | None, alpha: float | None) -> dict:
    """The same greedy loop through OpenVINO GenAI, with one run-time adapter active (or none); GenAI's own
    metrics give the time to the first token and per later token."""
    import openvino as ov
    import openvino_genai

    from .evaluation.openvino_backend import GenAIModel

    properties = {} if sparse_rate is None else {"CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": sparse_rate}
    if threads is not None:
        properties["INFERENCE_NUM_THREADS"] = threads
    _stage("load")
    model = GenAIModel(folder, {adapter: (adapter_file, alpha)} if adapter else {}, properties)
    _stage("warm-up")
    model.generate(prompts[0], adapter, 2, ignore_eos=True)
    _stage("generation")
    ttft, tpot, prompt_tokens, new_tokens, seconds = [], [], 0, 0, 0.0
    for prompt in prompts:
        start = time.perf_counter()
        metrics = model.generate(prompt, adapter, max_new_tokens, ignore_eos=True).perf_metrics
        seconds += time.perf_counter() - start
        ttft.append(metrics.get_ttft().mean)
        tpot.append(metrics.get_tpot().mean)
        prompt_tokens += metrics.get_num_input_tokens()
        new_tokens += metrics.get_num_generated_tokens()
    result = _timings(sum(ttft) / len(ttft), sum(tpot) / len(tpot) if max_new_tokens > 1 else None,
                      1e3 * prompt_tokens / sum(ttft), new_tokens, seconds)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["precision"] = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    result["fc_kernels"] = {}  # the pipeline's compiled model is not exposed
    result["openvino"] = ov.get_version()
    result["openvino_genai"] = openvino_genai.__version__
    return result


def _worker(spec: dict) -> dict:
    folder = Path(spec["folder"])
    if spec.get("mode") == "throughput":
        return _throughput_worker(folder, spec["batch"], spec["prompt_tokens"], spec["new_tokens"],
                                  spec["sparse_rate"], spec["threads"])
    if spec["backend"] == "openvino":
        return _openvino_worker(folder, spec["prompts"], spec["max_new_tokens"], spec["sparse_rate"], spec["threads"])
    if spec["backend"] == "genai":
        return _genai_worker(folder, spec["prompts"], spec["max_new_tokens"], spec["sparse_rate"], spec["threads"],
                             spec["adapter"], spec["adapter_file"], spec["alpha"])
    return _pytorch_worker(folder, spec["prompts"], spec["max_new_tokens"], spec["threads"])


# ---- reporting -------------------------------------------------------------------------------------------------


def sparse_path(row: dict, amx: bool) -> str:
    """Whether OpenVINO's sparse-weights kernels ran (per phase), and if not, the likely reason."""
    if row["backend"] == "pytorch":
        return "n/a (eager)"
    ran = {phase: (sum(n for k, n in kernels.items() if "sparse" in k), sum(kernels.values()))
           for phase, kernels in row.get("fc_kernels", {}).items()}
    if any(sparse for sparse, _ in ran.values()):
        return "yes: " + ", ".join(f"{phase} {sparse}/{total} FC" for phase, (sparse, total) in ran.items())
    if row.get("status") != "ok":
        return "unknown (run failed)"
    if row["sparse_rate"] is None:
        return "no (rate not set)"
    if not amx:
        return "no (no AMX on this CPU)"
    if row["backend"] == "genai":
        return "not read (GenAI hides its compiled model)"
    return "no (needs INT8 weights+activations)" if row["weights"] != "w8a8" else "no (layers below the rate)"


def _adapter_cell(row: dict) -> str:
    """The adapter a row applies: its ranks (highest first) and parameters; "-" for none (base, merged)."""
    if not row.get("adapter_ranks"):
        return "-"
    ranks = row["adapter_ranks"]
    rank = f"r {ranks[0]}" if len(ranks) == 1 else f"r {ranks[-1]}-{ranks[0]}"
    return f"{rank}, {row['adapter_parameters'] / 1e6:.2f}M params"


def _route_cell(row: dict) -> str:
    return f"runtime: {row['adapter']}" if row.get("adapter") else row.get("route", "-")


def format_table(report: dict) -> str:
    """One line per row: what it deploys (route, adapter ranks and size), prefill (TTFT, prompt tokens/s) and
    decode (TPOT, tokens/s; relative to the baked adapter at the same rate when the run has one) apart."""
    amx = report["cpu"]["amx"]
    header = ["model", "route", "adapter", "backend", "weights", "rate", "prec", "TTFT ms", "prefill tok/s",
              "TPOT ms", "decode tok/s", "vs baked", "tok/s", "peak RSS MB", "size MB", "FC kernels (decode)",
              "sparse path"]
    baked = {row["sparse_rate"]: row["decode_tokens_per_s"] for row in reversed(report["rows"])
             if row.get("route") == "baked" and row.get("status") == "ok" and row.get("decode_tokens_per_s")}
    lines = []
    for row in report["rows"]:
        ok = row.get("status") == "ok"
        kernels = ", ".join(f"{k}x{n}" for k, n in sorted(row.get("fc_kernels", {}).get("decode", {}).items()))
        decode = row.get("decode_tokens_per_s") if ok else None
        reference = baked.get(row["sparse_rate"])
        lines.append([
            Path(row["folder"]).name, _route_cell(row), _adapter_cell(row), row["backend"], row["weights"],
            "-" if row["sparse_rate"] is None else f"{row['sparse_rate']:g}",
            row.get("precision", "-").replace("<Type: '", "").replace("'>", ""),
            f"{row['ttft_ms']:.1f}" if ok else "-",
            f"{row['prefill_tokens_per_s']:.0f}" if ok and row.get("prefill_tokens_per_s") else "-",
            f"{row['tpot_ms']:.1f}" if ok and row["tpot_ms"] is not None else "-",
            f"{decode:.1f}" if decode else "-",
            f"{decode / reference:.2f}x" if decode and reference else "-",
            f"{row['tokens_per_s']:.1f}" if ok else row["status"],
            f"{row['peak_rss_mb']:.0f}" if ok else "-",
            f"{row['size_mb']:.0f}",
            kernels or "-", sparse_path(row, amx),
        ])
    cpu = report["cpu"]
    title = f"CPU: {cpu['model']} ({cpu['cores']} cores), AMX: {'yes' if amx else 'no'}; " \
            f"{len(report['prompts'])} prompts x {report['max_new_tokens']} new tokens, batch 1, greedy, " \
            f"threads: {report['rows'][0]['threads'] or 'default'}; median of {report.get('rounds', 1)} interleaved " \
            f"round(s); load average before: {report['load_average']}"
    return "\n".join([title, *text_table(header, lines, rule=True)])


def bench_command(args) -> None:
    """`shears bench`: the prompts file read, every folder benchmarked, the table printed."""
    from .generate import read_prompts

    prompts = read_prompts(args.prompts) if args.prompts else None
    accuracy = dict(_accuracy_results(spec, args.folders) for spec in args.accuracy or [])
    report = benchmark(args.folders, prompts=prompts, max_new_tokens=args.max_new_tokens,
                       sparse_rate=args.sparse_rate, json_out=args.json_out, threads=args.threads, rounds=args.rounds)
    print(format_table(report))
    if accuracy:
        print(format_choice(report, accuracy))


def _accuracy_results(spec: str, folders: list[str]) -> tuple[str, dict]:
    """`DIR=RESULTS.json` -> (DIR, the results of `shears evaluate --output`), checked before anything runs."""
    folder, sep, path = spec.partition("=")
    if not sep or folder not in folders:
        raise ShearsError(f"--accuracy {spec!r}: give DIR=RESULTS.json with DIR one of the benchmarked folders "
                          f"({', '.join(folders)})")
    results = read_json(path, what="accuracy results")
    if not isinstance(results, dict) or "average" not in results or not results.get("tasks"):
        raise ShearsError(f"--accuracy {path}: not a results file of `shears evaluate --output` (no tasks and average)")
    return folder, results


def format_choice(report: dict, accuracy: dict[str, dict]) -> str:
    """Which deployment is fastest at which accuracy: the rows with an accuracy, fastest first.

    `accuracy` maps a folder (as given) to its `shears evaluate` results ("average" over "tasks"). A row
    is marked where no other row is at least as accurate and faster: the ones worth choosing between."""
    rows = [r for r in report["rows"] if r.get("status") == "ok" and r["folder"] in accuracy]
    if not rows:
        return "no accuracy results for a benchmarked folder that ran"
    rows.sort(key=lambda r: -r["tokens_per_s"])
    lines = []
    for row in rows:
        acc = accuracy[row["folder"]]["average"]
        beaten = any(o["tokens_per_s"] > row["tokens_per_s"] and accuracy[o["folder"]]["average"] >= acc for o in rows)
        rate = "" if row["sparse_rate"] is None else f", rate {row['sparse_rate']:g}"
        lines.append((f"{Path(row['folder']).name} ({row['weights']}{rate})", f"{row['tokens_per_s']:.1f}",
                      f"{row['size_mb']:.0f}", f"{100 * acc:.1f}", "" if beaten else "yes"))
    tasks = sorted({t for r in rows for t in accuracy[r["folder"]]["tasks"]})
    header = ("deployment", "tok/s", "size MB", "accuracy (%)", "best trade-off")
    return "\n".join([f"Which deployment is fastest at which accuracy (average over {', '.join(tasks)}):",
                      *text_table(header, lines)])


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
