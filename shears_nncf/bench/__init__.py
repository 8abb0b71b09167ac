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

`run` orchestrates (the rows, the worker processes, the medians), `workers` is what runs inside each
process, `report` renders the tables.
"""

from .report import format_choice, format_table, sparse_path
from .run import DEFAULT_PROMPTS, bench_command, benchmark, cpu_isa, throughput
from .workers import eager_model

__all__ = ["DEFAULT_PROMPTS", "bench_command", "benchmark", "cpu_isa", "eager_model", "format_choice", "format_table",
           "sparse_path", "throughput"]
