"""The worker: one folder, one configuration, in its own process (`run` starts it through `main`).

It imports the runtime it measures and nothing heavier, so that its peak resident memory is that run's alone.
Its protocol with `run`: the spec as JSON in argv[1]; on stderr, a `stage:` line as it enters each stage and a
`kernels:` line with the kernels read so far, so that a crash still says where it happened and what ran; the
result as JSON on the last line of stdout.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

from ..export import IR_XML, TOKENIZER_XML
from ..nls.folder import ADAPTER_CONFIG

STAGE, KERNELS = "stage:", "kernels:"  # the prefixes of the stderr lines `run` reads back


def read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def _stage(name: str) -> None:
    print(f"{STAGE} {name}", file=sys.stderr, flush=True)


def _kernels(kernels: dict) -> None:
    print(f"{KERNELS} {json.dumps(kernels)}", file=sys.stderr, flush=True)


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
    for line in read_lines("/proc/self/status"):
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
    _kernels(kernels)
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
    _kernels(kernels)  # kept even if decode crashes
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
    from ..export.adapted import load_adapted

    return load_adapted(None, folder) if is_adapter(folder) else load_adapted(folder)


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

    from ..evaluation.openvino_backend import GenAIModel

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


def main() -> None:
    """The worker process's entry point: the spec from argv[1], the result printed as the last line of stdout."""
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
