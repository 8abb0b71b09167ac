"""A rehearsal of a paper-scale run before renting the GPU for it: LLaMA-7B's shape with random weights through
every stage of `nncf_configs/llama7b_math_50.json`, each stage's peak memory beside `shears train --dry-run`'s
estimate, and the paper's full training time projected from the measured seconds per optimizer step.

The model is built from LLaMA-7B's config (yahma/llama-7b-hf: hidden 4096, intermediate 11008, 32 heads,
32 layers, vocabulary 32000) with random weights: the cost of every stage depends on the shapes, not on the
weights or the text. On CUDA it has all 32 layers in fp16, as the paper trains it; on the CPU 2 layers in fp32
(or --dtype bf16), and every figure that scales with depth is scaled by 32 / layers. The stages, with the
project's own code:

1. Wanda, block by block (`sparsity.api.sparsify`), 50% unstructured, on nsamples x seqlen random token ids
   (the paper: 128 x 2048 C4 tokens; the CPU default is smaller, and says so);
2. NLS training (`nls.training.train`: HF Trainer, NNCF BootstrapNAS, a random sub-adapter per micro-batch) at
   the paper's batch, 4 x accumulation 4 of cutoff 256 tokens, every example a full 256 tokens (an upper bound);
3. heuristic extraction (`shears extract --subnet heuristic`);
4. the evaluation step as the reference scores (its decoding: 4 beams; its prompt), the sparse model with its
   heuristic sub-adapter in PyTorch, on a few GSM8K test prompts.

Prompts are tokenized by a byte-level BPE trained on the shipped GSM8K questions with at most LLaMA's 32,000 ids
(LLaMA's own tokenizer is not on this machine; a random model reads no meaning either way). Peak memory is CUDA's
allocator peak on the GPU and the process's resident memory, sampled every 10 ms, on the CPU (the runtime's own
share is printed as the "before" row).

    python benchmarks/paper_scale_rehearsal.py                 # CUDA: 32 layers, fp16; CPU: 2 layers, fp32
    python benchmarks/paper_scale_rehearsal.py --layers 2 --nsamples 2 --seqlen 512 --steps 1 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shears_nncf.config import bundled_config, load_config
from shears_nncf.data.sources import read_records, shipped_folder
from shears_nncf.evaluation.generation import TorchGenerator
from shears_nncf.evaluation.harness import evaluate
from shears_nncf.models import DTYPES, dtype_name, resolve_device
from shears_nncf.nls.dry_run import GIB, estimate_training_memory
from shears_nncf.sparsity.api import sparsify
from shears_nncf.stages import STAGES

CONFIG = "llama7b_math_50"
# yahma/llama-7b-hf's config.json, the base model of the paper's LLaMA-7B rows.
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
PAPER = {"nsamples": 128, "seqlen": 2048, "max_new_tokens": 256}
CPU_DEFAULTS = {"layers": 2, "dtype": "fp32", "nsamples": 2, "seqlen": 512, "steps": 1, "max_new_tokens": 8}
CUDA_DEFAULTS = {"layers": 32, "dtype": "fp16", "nsamples": 128, "seqlen": 2048, "steps": 3, "max_new_tokens": 256}


class Peak:
    """The peak memory while the block runs: CUDA's allocator peak, or the process's sampled resident memory."""

    def __init__(self, device: torch.device):
        self.device, self.bytes, self.seconds = device, 0, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            process, self._done = psutil.Process(), threading.Event()
            self.bytes = process.memory_info().rss

            def sample():
                while not self._done.wait(0.01):
                    self.bytes = max(self.bytes, process.memory_info().rss)

            self._watcher = threading.Thread(target=sample, daemon=True)
            self._watcher.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        else:
            self._done.set()
            self._watcher.join()
            self.bytes = max(self.bytes, psutil.Process().memory_info().rss)
        self.seconds = time.perf_counter() - self._start


class CappedGenerator:
    """A generator that stops at `cap` new tokens whatever the task asks (GSM8K: 256), for a short CPU rehearsal."""

    def __init__(self, generator, cap: int):
        self.generator, self.cap = generator, cap

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        return self.generator.generate(prompts, min(max_new_tokens, self.cap))


def stand_in_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE trained on `texts`, with at most `vocab_size` ids; pad is id 0, as the reference sets it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layers", type=int, help="decoder layers (CUDA: 32, LLaMA-7B's; CPU: 2)")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="CUDA: fp16, the paper's; CPU: fp32")
    parser.add_argument("--nsamples", type=int, help="Wanda calibration samples (paper 128; CPU default 2)")
    parser.add_argument("--seqlen", type=int, help="tokens per calibration sample (paper 2048; CPU default 512)")
    parser.add_argument("--steps", type=int, help="NLS optimizer steps at 4 x 4 x 256 tokens (CUDA 3, CPU 1)")
    parser.add_argument("--prompts", type=int, default=2, help="GSM8K test prompts the evaluation step generates for")
    parser.add_argument("--max-new-tokens", type=int, help="per prompt (paper 256; CPU default 8)")
    parser.add_argument("--records", type=int, default=10_000,
                        help="training records the projection counts (math_10k: about 10,000; give your file's count)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    dtype = DTYPES[args.dtype]
    config = load_config(bundled_config(CONFIG), precision=args.dtype)  # fp16 needs a GPU; on the CPU train as loaded
    t = config.training
    torch.manual_seed(0)

    rows = []
    before = Peak(device)
    with before:
        pass
    llama = LlamaConfig(**{**LLAMA_7B, "num_hidden_layers": args.layers})
    estimate = estimate_training_memory(llama, config, dtype)
    questions = [r["instruction"] for r in read_records(shipped_folder() / "gsm8k" / "test.json")]
    tokenizer = stand_in_tokenizer(questions, LLAMA_7B["vocab_size"])

    with Peak(device) as build:
        with torch.device(device):
            model = LlamaForCausalLM._from_config(llama, dtype=dtype).eval()
    rows.append(("build (random weights)", build, estimate.weights_bytes, "base weights"))

    samples = [torch.randint(3, llama.vocab_size, (1, args.seqlen)) for _ in range(args.nsamples)]
    with Peak(device) as wanda:
        sparsify(model, samples, 0.5, "wanda")
    rows.append((f"wanda 50%, {args.nsamples} x {args.seqlen} tokens", wanda, None, ""))

    from shears_nncf.nls.folder import TrainingInputs
    from shears_nncf.nls.training import train

    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(args.steps * t.batch_size * t.grad_accum):
        ids = torch.randint(3, llama.vocab_size, (t.max_length,), generator=g).tolist()
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids})  # train_on_inputs
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        with Peak(device) as training:
            result = train(model, tokenizer, config, examples, work / "super_adapter", max_steps=args.steps,
                           device=str(device), save_steps=10**9, inputs=TrainingInputs(base_model=f"random {llama.model_type}"))
        step_seconds = training.seconds / result.steps
        rows.append((f"NLS train, {result.steps} x {t.batch_size}x{t.grad_accum}x{t.max_length} tokens", training,
                     estimate.peak_bytes, "dry-run peak"))

        extract = STAGES["extract"]
        with Peak(device) as extraction:
            extract.run(extract.namespace(super_adapter=work / "super_adapter", subnet="heuristic",
                                          output=work / "sub_adapter"))
        rows.append(("extract heuristic sub-adapter", extraction, None, ""))

        supernet = result.supernet
        ranks = supernet.activate_heuristic()
        records = {"gsm8k": read_records(shipped_folder() / "gsm8k" / "test.json")[:args.prompts]}
        generator = CappedGenerator(TorchGenerator(supernet.peft_model, tokenizer, batch_size=args.prompts, device=device,
                                                   progress=False, protocol=config.protocol), args.max_new_tokens)
        with Peak(device) as scoring, supernet.untraced():
            evaluate(generator, records, protocol=config.protocol)
        rows.append((f"evaluate, {args.prompts} GSM8K prompts x {args.max_new_tokens} tokens, 4 beams", scoring, None, ""))
    del generator

    scale = LLAMA_7B["num_hidden_layers"] / args.layers
    print(f"\nLLaMA-7B shape, {args.layers} of 32 layers, random weights, {dtype_name(dtype)} on {device} "
          f"({torch.get_num_threads()} threads); config {CONFIG}; heuristic ranks {sorted(set(ranks))}")
    if device.type == "cpu":
        print(f"CPU run: Wanda on {args.nsamples} x {args.seqlen} tokens (the paper: {PAPER['nsamples']} x "
              f"{PAPER['seqlen']}), {args.steps} optimizer step(s), {args.max_new_tokens} new tokens per prompt "
              f"(the paper: {PAPER['max_new_tokens']}); depth-dependent figures scaled by 32 / {args.layers}")
    print(f"{'stage':<58}{'seconds':>9}{'peak GiB':>10}{'dry-run GiB':>13}")
    print(f"{'before (runtime, tokenizer)':<58}{'':>9}{before.bytes / GIB:>10.2f}{'':>13}")
    for name, peak, estimated, what in rows:
        beside = f"{estimated / GIB:>13.2f}  {what}" if estimated else ""
        print(f"{name:<58}{peak.seconds:>9.1f}{peak.bytes / GIB:>10.2f}{beside}")
    epochs = config.training.epochs
    global_batch = t.batch_size * t.grad_accum
    projected = args.records * epochs / global_batch * step_seconds * scale
    print(f"seconds per optimizer step ({global_batch} x {t.max_length} tokens): {step_seconds:.1f}"
          + (f"; x {scale:.0f} for 32 layers: {step_seconds * scale:.1f}" if scale != 1 else ""))
    print(f"projected training, {args.records:,} records x {epochs:g} epochs / {global_batch} per step x "
          f"{step_seconds * scale:.1f} s: {projected / 3600:.1f} h"
          + (" (scaled by layers: the embedding and lm_head are counted 16 times, an over-estimate)" if scale != 1 else ""))
    full = estimate_training_memory(LlamaConfig(**LLAMA_7B), config, torch.float16)
    print(f"dry-run estimate of the paper's run (32 layers, fp16): {full.peak_bytes / GIB:.1f} GiB")


if __name__ == "__main__":
    main()
