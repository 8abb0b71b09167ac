"""NLS training overhead over plain PEFT LoRA on the 50%-sparse embedded SmolLM2.

Both models train on the same batch, their optimizer steps interleaved in one process so that
machine noise hits both alike. Prints seconds per optimizer step (plain LoRA; NLS with a random
sub-adapter per step and at the maximal one, run as `shears train` runs them, outside NNCF's per-op
tracing; NLS through NNCF's traced forward, the stock way; NLS mask-aware, `shears.lora.sparse_adapter`,
its update masked by the base's zeros), their ratio to LoRA, the supernet build time and the peak
resident memory. The base is sparsified by weight magnitude here (row-wise, like
Wanda's comparison group): only the sparsity pattern's density matters for timing.

    python benchmarks/nls_overhead.py [--steps 12] [--batch 8] [--tokens 96]
"""

import argparse
import copy
import dataclasses
import resource
import statistics
import time

import torch

from shears_nncf.config import bundled_config, load_config
from shears_nncf.models import EMBEDDED_MODEL, load_model
from shears_nncf.sparsity.masks import magnitude_


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    torch.manual_seed(0)

    base = load_model(EMBEDDED_MODEL)
    magnitude_(base, 0.5)
    from shears_nncf.nls.supernet import build_supernet

    config = load_config(bundled_config("demo/smollm2_commonsense"))
    lora = build_supernet(copy.deepcopy(base), config, elastic=False)
    aware = build_supernet(copy.deepcopy(base), dataclasses.replace(
        config, lora=dataclasses.replace(config.lora, sparse_adapter=True)))
    aware.start_schedule(None, steps_per_epoch=1)
    t0 = time.perf_counter()
    nls = build_supernet(base, config)
    build = time.perf_counter() - t0
    nls.start_schedule(None, steps_per_epoch=1)

    batch = torch.randint(0, 49152, (args.batch, args.tokens))
    opts = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
            for name, m in (("lora", lora.peft_model), ("nls", nls.peft_model), ("aware", aware.peft_model))}
    times = {"lora": [], "nls_random": [], "nls_max": [], "nls_traced": [], "aware_random": []}
    activate = []

    def step(name, model):
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for m in (lora.peft_model, nls.peft_model, aware.peft_model):
        m.train()
    step("lora", lora.peft_model), step("nls", nls.peft_model), step("aware", aware.peft_model)  # warm-up
    for _ in range(args.steps):
        times["lora"].append(step("lora", lora.peft_model))
        t = time.perf_counter()
        nls.activate_random()
        activate.append(time.perf_counter() - t)
        with nls.untraced() as model:
            times["nls_random"].append(step("nls", model) + activate[-1])
            nls.activate_maximal()
            times["nls_max"].append(step("nls", model))
        nls.activate_random()
        times["nls_traced"].append(step("nls", nls.peft_model))
        aware.activate_random()
        with aware.untraced() as model:
            times["aware_random"].append(step("aware", model))

    median = {k: statistics.median(v) for k, v in times.items()}
    # each step's ratio to the LoRA step of its own round, so that slow drifts of the machine cancel
    ratio = {k: statistics.median(t / l for t, l in zip(v, times["lora"])) for k, v in times.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"SmolLM2-135M, 50% magnitude-sparse, {len(nls.group_names)} groups, batch {args.batch} x {args.tokens} tokens, "
          f"{args.steps} interleaved steps (median), torch threads {torch.get_num_threads()}")
    print(f"{'variant':<28}{'s/step':>10}{'vs LoRA':>10}   (median of per-round ratios)")
    print(f"{'plain PEFT LoRA':<28}{median['lora']:>10.3f}{1.0:>10.2f}")
    print(f"{'NLS, random sub-adapter':<28}{median['nls_random']:>10.3f}{ratio['nls_random']:>10.2f}")
    print(f"{'NLS, maximal sub-adapter':<28}{median['nls_max']:>10.3f}{ratio['nls_max']:>10.2f}")
    print(f"{'NLS, random, NNCF-traced':<28}{median['nls_traced']:>10.3f}{ratio['nls_traced']:>10.2f}")
    print(f"{'NLS mask-aware, random':<28}{median['aware_random']:>10.3f}{ratio['aware_random']:>10.2f}")
    print(f"activate a random sub-adapter: {statistics.median(activate):.4f} s")
    print(f"supernet build: {build:.1f} s; peak RSS: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
