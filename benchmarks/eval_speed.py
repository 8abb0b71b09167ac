"""Evaluation throughput: generated tokens per second by batch size, and examples/s of log-likelihood
scoring vs generation.

Runs the same prompts (embedded BoolQ validation questions in the evaluation template) through
`TorchGenerator` with the embedded SmolLM2 at each batch size, side by side in one process, and
prints tokens/s and the speed-up over batch size 1. Only real generated tokens count (up to and
including EOS); padding after a sequence ends does not.

Then it scores the first `--examples` embedded validation documents of each of `--tasks` both ways at
the largest batch size: generation as `shears evaluate` does it (the task's max_new_tokens) and
log-likelihood through lm-evaluation-harness (`--scoring loglik`, lm-eval's templates; its per-task
set-up counts, as it does for a user), and prints examples/s and the ratio.

    python benchmarks/eval_speed.py [--prompts 32] [--max-new-tokens 32] [--batch-sizes 1,8,32] [--device auto]
                                    [--tasks boolq,piqa,arc_easy] [--examples 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from shears_nncf.data.lm_eval_documents import task_folder
from shears_nncf.data.prompts import format_prompt
from shears_nncf.data.sources import load_records
from shears_nncf.evaluation.generation import TorchGenerator
from shears_nncf.evaluation.harness import evaluate
from shears_nncf.evaluation.loglik import LoglikScorer, source_documents, torch_lm
from shears_nncf.models import EMBEDDED_MODEL, load_model, load_tokenizer, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", default="boolq,piqa,arc_easy", help="tasks of the loglik-vs-generation row")
    parser.add_argument("--examples", type=int, default=32, help="documents per task in the loglik-vs-generation row")
    args = parser.parse_args()

    device = resolve_device(args.device)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=device)
    records = load_records("default", ["boolq"], split="validation", limit=args.prompts)["boolq"]
    prompts = [format_prompt(r, with_response=False) for r in records]

    TorchGenerator(model, tokenizer, batch_size=1, device=device, progress=False).generate(prompts[:1], 4)  # warm-up
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        generator = TorchGenerator(model, tokenizer, batch_size=batch_size, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        texts = generator.generate(prompts, args.max_new_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        # Re-tokenizing the decoded text counts its tokens; +1 for the EOS of answers that stopped early.
        tokens = sum(min(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1, args.max_new_tokens) for t in texts)
        rows.append((batch_size, tokens, seconds, tokens / seconds))

    base = rows[0][3]
    print(f"{EMBEDDED_MODEL if args.model == EMBEDDED_MODEL else args.model} on {device}, {len(prompts)} prompts, "
          f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")
    print(f"{'batch':>5}  {'tokens':>6}  {'seconds':>7}  {'tokens/s':>8}  {'vs batch ' + str(rows[0][0]):>10}")
    for batch_size, tokens, seconds, rate in rows:
        print(f"{batch_size:>5}  {tokens:>6}  {seconds:>7.1f}  {rate:>8.1f}  {rate / base:>9.2f}x")

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    batch_size = rows[-1][0]
    scorings = [("generate", _generation_seconds(model, tokenizer, device, tasks, args.examples, batch_size)),
                ("loglik", _loglik_seconds(model, tokenizer, tasks, args.examples, batch_size))]
    print(f"\n{', '.join(tasks)}: {args.examples} documents each, batch size {batch_size}")
    print(f"{'scoring':<8}  {'examples':>8}  {'seconds':>7}  {'examples/s':>10}  {'vs generate':>11}")
    generate_rate = scorings[0][1][0] / scorings[0][1][1]
    for name, (examples, seconds) in scorings:
        rate = examples / seconds
        print(f"{name:<8}  {examples:>8}  {seconds:>7.1f}  {rate:>10.2f}  {rate / generate_rate:>10.2f}x")


def _generation_seconds(model, tokenizer, device, tasks, examples, batch_size) -> tuple[int, float]:
    """Generation scoring as `shears evaluate` does it: each task's prompts, its max_new_tokens, its extractor."""
    records = load_records("default", tasks, split="validation", limit=examples)
    generator = TorchGenerator(model, tokenizer, batch_size=batch_size, device=device, progress=False)
    start = time.perf_counter()
    evaluate(generator, records)
    return sum(len(r) for r in records.values()), time.perf_counter() - start


def _loglik_seconds(model, tokenizer, tasks, examples, batch_size) -> tuple[int, float]:
    """Log-likelihood scoring as `shears evaluate --scoring loglik` does it (documents converted beforehand)."""
    scorer = LoglikScorer(torch_lm(model, tokenizer, batch_size), task_folder(source_documents("default", tasks, "lm-eval"), "lm-eval"))
    scorer.score(tasks[0], limit=1)  # warm-up: lm-eval's first-call imports and caches
    start = time.perf_counter()
    n = sum(scorer.score(task, limit=examples)["n"] for task in tasks)
    return n, time.perf_counter() - start


if __name__ == "__main__":
    main()
