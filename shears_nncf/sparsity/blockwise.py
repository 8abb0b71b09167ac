"""The sequential calibration every calibrated pruner shares (Wanda's and SparseGPT's reference loops alike).

Section 2.1 of Shears, step by step:
  1. run the calibration samples through the model with the decoder blocks standing in as the identity,
     and keep what each block receives (the hidden states of the first; masks, positions, rotary
     embeddings of each, as the model passes them to that block);
  2. for each block in order: feed one accumulator per pruned matrix with that matrix's inputs (every
     nn.Linear of the block, as Wanda's `find_layers` takes them, through a forward hook; each expert's
     matrix of a mixture-of-experts block over the tokens routed to that expert, through `routing.py`),
     then prune the block's matrices from their accumulators;
  3. run the pruned block to produce the next block's inputs, so that every block is
     calibrated on what the already-pruned model feeds it.
A pruner is the two things that differ: its statistic (Wanda: the squared norm of each input channel;
SparseGPT: the Hessian X X^T) and its step (score and zero; or zero and update the rest). Only one
block's activations are held at a time; embeddings, lm_head and routers stay dense. A model too large for
the GPU stays on the CPU and each block visits the GPU in turn (`block_device`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import architecture, block_experts, block_linears, decoder_blocks
from .masks import pruned_matrices
from .routing import RoutedInputs, eager_experts


class Statistic(Protocol):
    """What a pruner accumulates over one matrix's inputs; `tokens` counts the rows it was fed."""

    tokens: int

    def add(self, x: torch.Tensor) -> None: ...


# A statistic for a matrix with `in_features` inputs, from the (out, in) or 3-D expert weight it serves
# (its device; its dtype, where the statistic's precision follows it).
NewStatistic = Callable[[int, torch.Tensor], Statistic]
# Prune decoder block `index`, given (name, (out, in) matrix, its statistic) for every matrix it prunes.
Step = Callable[[int, list[tuple[str, torch.Tensor, Statistic]]], None]


@dataclass
class SampleInputs:
    """What one calibration sample feeds the decoder blocks: the hidden states entering the current block, and each
    block's other inputs (positional args after the hidden states; keyword args: position_embeddings,
    attention_mask, position_ids, ...) as the model passed them in this transformers version, captured rather
    than rebuilt. Blocks of one model may get different ones: Gemma-2 gives its sliding-window layers their own
    mask, Gemma-3 its local layers their own rotary embedding."""

    hidden: torch.Tensor
    calls: list[tuple[tuple, dict]]  # one per block

    def run(self, block: nn.Module, index: int):
        args, kwargs = self.calls[index]
        return block(self.hidden, *args, **kwargs)


class _StopForward(Exception):
    """Raised by the last block's stand-in: nothing after the decoder blocks is needed."""


@torch.no_grad()
def capture_block_inputs(model: nn.Module, samples: Iterable[torch.Tensor]) -> list[SampleInputs]:
    """Run each sample (a (1, L) tensor of token ids) through the model with every decoder block standing in as the
    identity: the model prepares each block's inputs as it always does, and nothing of a block is computed."""
    blocks = decoder_blocks(model)
    device = model.get_input_embeddings().weight.device
    captured: list[SampleInputs] = []

    def stand_in(index: int):
        def forward(*args, **kwargs):
            if not args:  # a model that passes the hidden states by name
                args = (kwargs.pop("hidden_states"),)
            if index == 0:
                captured.append(SampleInputs(args[0], []))
            captured[-1].calls.append((args[1:], kwargs))
            if index == len(blocks) - 1:
                raise _StopForward
            return args[0]

        return forward

    own_forwards = [vars(block).get("forward") for block in blocks]  # e.g. accelerate's hooks; put back afterwards
    try:
        for index, block in enumerate(blocks):
            block.forward = stand_in(index)
        for ids in samples:
            try:
                model(input_ids=ids.to(device), use_cache=False)  # no KV cache: each call stands alone
            except _StopForward:
                pass
    finally:
        for block, own in zip(blocks, own_forwards):
            if own is None:
                del block.forward
            else:
                block.forward = own
    return captured


@torch.no_grad()
def calibrate_blockwise(model: nn.Module, samples: Iterable[torch.Tensor], new: NewStatistic, step: Step,
                        block_device: torch.device | None = None, desc: str = "calibrating") -> list[str]:
    """Steps 1-3 above with the pruner's statistic (`new` makes one per matrix) and its `step` (which may also
    only measure: OWL's first pass prunes nothing). Returns the names of the matrices no calibration token
    reached (an expert the router never chose), whose statistic `step` received empty.

    With `block_device`, the calibration activations live there and each block is moved there for its
    turn and back afterwards: the model itself never has to fit on that device."""
    arch = architecture(model)
    uncalibrated = []
    with eager_experts(model):
        inputs = capture_block_inputs(model, samples)
        if block_device is not None:
            inputs = [SampleInputs(*_to((s.hidden, s.calls), block_device, {})) for s in inputs]
        for index, block in enumerate(tqdm(decoder_blocks(model), desc=desc, unit="block")):
            home = next(block.parameters()).device
            block.to(block_device or home)
            statistics = block_statistics(block, index, arch, inputs, new)
            matrices = [(name, matrix, statistics[name]) for name, matrix in pruned_matrices(block, arch)]
            uncalibrated += [f"{arch.blocks}.{index}.{name}" for name, _, stat in matrices if not stat.tokens]
            step(index, matrices)
            for sample in inputs:  # overwrite in place: one block's activations at a time
                sample.hidden = _hidden_states(sample.run(block, index))
            block.to(home)
    return uncalibrated


def block_statistics(block: nn.Module, index: int, arch, inputs: list[SampleInputs], new: NewStatistic) -> dict:
    """One statistic per pruned matrix of the block, fed every calibration token that matrix multiplies, keyed as
    `masks.pruned_matrices` names the matrices (an expert's: `mlp.experts.down_proj[3]`, over its routed tokens)."""
    linears = block_linears(block, arch)
    statistics = {name: new(linear.in_features, linear.weight) for name, linear in linears.items()}
    handles = [linear.register_forward_hook(lambda module, args, output, stat=statistics[name]: stat.add(args[0]))
               for name, linear in linears.items()]
    routed = RoutedInputs(block_experts(block, arch), new)
    try:
        with routed:
            for sample in inputs:
                sample.run(block, index)
    finally:
        for handle in handles:
            handle.remove()
    return statistics | routed.by_matrix()


def _to(value, device: torch.device, moved: dict):
    """Captured inputs (nested tuples, dicts, tensors, caches) with their tensors on `device`; a tensor that several
    blocks share (one mask for every layer of a type) is moved once and stays shared (`moved`, keyed by id)."""
    if isinstance(value, torch.Tensor):
        if id(value) not in moved:
            moved[id(value)] = value.to(device)
        return moved[id(value)]
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device, moved) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device, moved) for k, v in value.items()}
    return value


def _hidden_states(output) -> torch.Tensor:
    """transformers 5 LLaMA-style blocks return a tensor; others (MPT) still return a tuple."""
    return output[0] if isinstance(output, tuple) else output
