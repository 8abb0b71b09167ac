"""Perplexity on a text: non-overlapping windows of `seqlen` tokens, exp of the mean token NLL.

The same protocol as Wanda's `eval_ppl`: a trailing partial window is dropped, so every window
has the same number of predicted tokens and the mean of window losses is the mean token loss. One difference:
each window begins as the tokenizer begins any text, with the tokens it adds in front (Gemma's <bos>), where Wanda
tokenizes the whole text once. A model trained with <bos> at every sequence's start is lost without it (Gemma-3-270M
on held-out text: 95.7 without, 27.2 with); for a tokenizer that adds nothing (SmolLM2's) the two are the same.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ShearsError
from ..models import resolve_device


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, text: str, seqlen: int = 512, nsamples: int | None = None, device: str | torch.device = "auto") -> float:
    """Perplexity of `model` on `text`, over at most `nsamples` windows (all whole windows by default)."""
    device = resolve_device(device) if isinstance(device, str) else device
    model.to(device)
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    prefix = torch.tensor(tokenizer("")["input_ids"], dtype=torch.long)  # what the tokenizer puts before any text
    step = seqlen - len(prefix)
    windows = len(ids) // step if nsamples is None else min(nsamples, len(ids) // step)
    if windows < 1:
        raise ShearsError(f"the text has {len(ids)} tokens, fewer than one window of {seqlen}; give more text or a smaller --seqlen")
    losses = []
    for i in tqdm(range(windows), desc="perplexity", unit="window", leave=False):
        window = torch.cat([prefix, ids[i * step : (i + 1) * step]]).unsqueeze(0).to(device)
        losses.append(model(input_ids=window, labels=window, use_cache=False).loss.float().item())
    return math.exp(sum(losses) / len(losses))
