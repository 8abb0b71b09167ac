"""What Wanda costs on the embedded SmolLM2, and what it buys over magnitude pruning.

Prints (1) the time of Wanda next to one plain forward pass of the model over the same
calibration samples (one sample per call in both), their ratio and the peak memory of each,
and (2) perplexity on held-out BoolQ validation passages for dense / magnitude / Wanda at
several sparsities. Wanda runs every block twice (norms, then the pruned block's outputs)
plus one sort per row, so its floor is about 2x the blocks' share of a plain pass.

    python benchmarks/wanda_cost.py [--nsamples 32] [--seqlen 512] [--eval-windows 16]

With `--random`, instead: the same ratio on random models of the same size built from transformers' config classes,
a dense LLaMA beside a mixture-of-experts Mixtral (top-2 of 8 experts), side by side in one run: what Wanda costs when
each expert's inputs are the tokens routed to it (`sparsity/routing.py`).

    python benchmarks/wanda_cost.py --random --nsamples 16 --seqlen 256
"""

from __future__ import annotations

import argparse
import copy
import threading
import time

import psutil
import torch

from shears_nncf.data.calibration import calibration_samples, heldout_text
from shears_nncf.evaluation.perplexity import perplexity
from shears_nncf.models import EMBEDDED_MODEL, load_model, load_tokenizer, resolve_device
from shears_nncf.sparsity.api import sparsify


def measure(fn, device):
    """(seconds, peak memory in MiB above the start) of fn(); CPU: sampled process RSS, CUDA: allocator peak."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start, (torch.cuda.max_memory_allocated() - base) / 2**20
    process = psutil.Process()
    base = peak = process.memory_info().rss
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, process.memory_info().rss)

    watcher = threading.Thread(target=sample)
    watcher.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    return seconds, (max(peak, process.memory_info().rss) - base) / 2**20


@torch.no_grad()
def plain_pass(model, samples, logits_to_keep: int = 0):
    """One forward per sample; `logits_to_keep=1` leaves out the output layer's cost over all but the last token (a
    random model's 49k-token head would otherwise dominate the blocks that Wanda works on)."""
    for ids in samples:
        model(input_ids=ids.to(model.device), use_cache=False, logits_to_keep=logits_to_keep)


def random_models(args, device) -> None:
    """Wanda's time over one plain pass, on a random dense LLaMA and a random Mixtral of the same width and depth."""
    import transformers

    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    samples = calibration_samples("default", tokenizer, args.nsamples, args.seqlen, seed=0)
    size = dict(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048)
    configs = {"llama": transformers.LlamaConfig(**size),
               "mixtral (8 experts, top 2)": transformers.MixtralConfig(**size, num_local_experts=8, num_experts_per_tok=2)}
    print(f"\nrandom models (hidden 256, 4 layers, intermediate 512), {args.nsamples} x {args.seqlen} calibration tokens, "
          f"device {device}, {torch.get_num_threads()} threads; plain = one forward in the model's own experts "
          "implementation, head on the last token only")
    print(f"{'model':<28}{'plain s':>10}{'wanda s':>10}{'ratio':>8}")
    for name, config in configs.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).to(device).eval()
        plain_pass(model, samples[:1], logits_to_keep=1)
        plain_s, _ = measure(lambda: plain_pass(model, samples, logits_to_keep=1), device)
        wanda_s, _ = measure(lambda: sparsify(model, samples, 0.5, "wanda"), device)
        print(f"{name:<28}{plain_s:>10.2f}{wanda_s:>10.2f}{wanda_s / plain_s:>7.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=16, help="held-out windows of --seqlen tokens for perplexity")
    parser.add_argument("--ratios", default="0.4,0.5,0.6")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random", action="store_true", help="random dense LLaMA against random Mixtral, no perplexity")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.random:
        return random_models(args, device)

    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    dense = load_model(EMBEDDED_MODEL, device=device)
    samples = calibration_samples("default", tokenizer, args.nsamples, args.seqlen, seed=0)
    text = heldout_text()

    plain_pass(dense, samples[:1])  # warm-up, so neither timing pays for first-call set-up
    plain_s, plain_mb = measure(lambda: plain_pass(dense, samples), device)
    model = copy.deepcopy(dense)
    wanda_s, wanda_mb = measure(lambda: sparsify(model, samples, 0.5, "wanda"), device)
    del model
    print(f"\nSmolLM2-135M, {args.nsamples} x {args.seqlen} calibration tokens of BoolQ train passages, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'':<28}{'seconds':>10}{'peak MiB':>10}")
    print(f"{'plain forward pass':<28}{plain_s:>10.1f}{plain_mb:>10.0f}")
    print(f"{'wanda 50% (unstructured)':<28}{wanda_s:>10.1f}{wanda_mb:>10.0f}")
    print(f"wanda / plain pass: {wanda_s / plain_s:.2f}x")

    ppl = lambda m: perplexity(m, tokenizer, text, seqlen=args.seqlen, nsamples=args.eval_windows, device=device)
    print(f"\nperplexity on {args.eval_windows} x {args.seqlen} tokens of held-out BoolQ validation passages")
    print(f"{'sparsity':<10}{'dense':>10}{'magnitude':>12}{'wanda':>10}")
    dense_ppl = ppl(dense)
    print(f"{'0%':<10}{dense_ppl:>10.1f}{'':>12}{'':>10}", flush=True)
    for ratio in map(float, args.ratios.split(",")):
        row = {}
        for method in ("magnitude", "wanda"):
            model = copy.deepcopy(dense)
            sparsify(model, samples, ratio, method)
            row[method] = ppl(model)
            del model
        print(f"{ratio:<10.0%}{'':>10}{row['magnitude']:>12.1f}{row['wanda']:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
