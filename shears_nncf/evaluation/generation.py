"""Batched generation with a PyTorch causal LM (plain or PEFT-wrapped), on CPU or CUDA, decoding as the
protocol says: greedy under `shears`, the reference's beam search (4 beams) under `reference`.

A generator is anything with `generate(prompts, max_new_tokens) -> list[str]` returning only the
new text; `openvino_backend.OpenVINOGenerator` is the other one, so the harness scores both alike.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..models import resolve_device
from ..protocol import SHEARS_PROTOCOL, Protocol


class TorchGenerator:
    def __init__(self, model, tokenizer, batch_size: int = 8, device: str | torch.device = "auto", progress: bool = True,
                 protocol: Protocol = SHEARS_PROTOCOL):
        self.decoding = protocol.generate_kwargs
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Every prompt's new text, in input order, on every process. Under several processes process r
        generates batches r, r + W, ... of the one-process batching: whole batches, so each prompt is padded
        and decoded alongside the same prompts as in a one-process run and its text is the same."""
        # Batching prompts of similar length wastes less compute on padding; answers go back in input order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        batches = [order[start:start + self.batch_size] for start in range(0, len(prompts), self.batch_size)]
        mine = batches[distributed.rank()::distributed.world_size()]
        texts: dict[int, str] = {}
        quiet = not self.progress or len(mine) < 2 or not distributed.is_main()
        for indices in tqdm(mine, desc="generating", unit="batch", disable=quiet):
            # Left padding: every prompt then ends where generation begins.
            batch = self.tokenizer([prompts[i] for i in indices], return_tensors="pt", padding=True, padding_side="left")
            batch = batch.to(self.device)
            tokens = self.model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens, pad_token_id=self.pad_token_id, **self.decoding,
            )
            new = tokens[:, batch["input_ids"].shape[1]:]
            texts.update(zip(indices, self.tokenizer.batch_decode(new, skip_special_tokens=True)))
        gathered = {i: text for part in distributed.all_gather(texts) for i, text in part.items()}
        return [gathered[i] for i in range(len(prompts))]
