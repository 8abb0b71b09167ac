"""Wanda (Sun, Liu, Bair & Kolter, 2023): prune by weight magnitude times input activation norm.

Section 2.1 of Shears, step by step:
  1. run the calibration samples up to the first decoder block and keep what it receives;
  2. for each block in order: measure ||X_j||_2 of every input channel j of its linears,
     score each weight as |W_ij| * ||X_j||_2, zero the lowest scores of each output row;
  3. run the pruned block to produce the next block's inputs, so that every block is
     calibrated on what the already-pruned model feeds it.
Only one block's activations are held at a time; embeddings and lm_head stay dense. A model too
large for the GPU stays on the CPU and each block visits the GPU in turn (`block_device`).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import architecture, block_linears, decoder_blocks
from .masks import parse_pattern, prune_lowest_

# What a decoder block was called with: (positional args, keyword args). The hidden states are
# args[0]; the rest (position_embeddings, attention_mask, position_ids, ...) is whatever the
# model passes in this transformers version, captured rather than rebuilt.
BlockCall = tuple[tuple, dict]


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the first block is needed."""


@torch.no_grad()
def capture_block_inputs(model: nn.Module, samples: Iterable[torch.Tensor]) -> list[BlockCall]:
    """Run each sample (a (1, L) tensor of token ids) up to the first decoder block; record its call."""
    first_block = decoder_blocks(model)[0]
    device = model.get_input_embeddings().weight.device
    calls: list[BlockCall] = []

    def record(module, args, kwargs):
        calls.append((args, kwargs))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for ids in samples:
            try:
                model(input_ids=ids.to(device), use_cache=False)  # no KV cache: each call stands alone
            except _StopForward:
                pass
    finally:
        handle.remove()
    return calls


@torch.no_grad()
def wanda_(model: nn.Module, samples: Iterable[torch.Tensor], ratio: float, pattern: str = "unstructured",
           block_device: torch.device | None = None) -> None:
    """Prune the decoder linears of `model` in place with Wanda, calibrated on `samples`.

    With `block_device`, the calibration activations live there and each block is moved there for its
    turn and back afterwards: the model itself never has to fit on that device."""
    nm = parse_pattern(pattern, ratio)
    arch = architecture(model)
    calls = capture_block_inputs(model, samples)
    if block_device is not None:
        calls = [_to(call, block_device) for call in calls]
    for block in tqdm(decoder_blocks(model), desc="wanda", unit="block"):
        home = next(block.parameters()).device
        block.to(block_device or home)
        linears = block_linears(block, arch)
        sq_norms = _input_sq_norms(block, linears, calls)
        for name, linear in linears.items():
            # float32 score: a channel norm over many tokens can overflow fp16.
            score = linear.weight.abs().float() * sq_norms[name].sqrt().float()
            prune_lowest_(linear.weight, score, ratio, nm)
        for i, (args, kwargs) in enumerate(calls):  # overwrite in place: one block's activations at a time
            calls[i] = ((_hidden_states(block(*args, **kwargs)),) + args[1:], kwargs)
        block.to(home)


def _to(value, device: torch.device):
    """A captured block call (nested tuples, dicts, tensors, caches) with its tensors on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _input_sq_norms(block: nn.Module, linears: dict[str, nn.Linear], calls: list[BlockCall]) -> dict[str, torch.Tensor]:
    """Per-input-channel sum of squares of each linear's input over all calibration tokens.

    Each call's sum (one sample's tokens) is taken in float32, which costs ~3% of the linear itself
    where a float64 copy of the activations costs ~15%; the running total over samples is float64.
    """
    sq_norms = {name: torch.zeros(l.in_features, dtype=torch.float64, device=l.weight.device) for name, l in linears.items()}

    def accumulate(name):
        def hook(module, args, output):
            x = args[0].reshape(-1, args[0].shape[-1])
            sq_norms[name] += x.float().square().sum(dim=0)

        return hook

    handles = [linear.register_forward_hook(accumulate(name)) for name, linear in linears.items()]
    try:
        for args, kwargs in calls:
            block(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return sq_norms


def _hidden_states(output) -> torch.Tensor:
    """transformers 5 LLaMA-style blocks return a tensor; others (MPT) still return a tuple."""
    return output[0] if isinstance(output, tuple) else output
