"""Perplexity on a text: non-overlapping windows of `seqlen` tokens, exp of the mean token NLL.

The same protocol as Wanda's `eval_ppl`: a trailing partial window is dropped, so every window
has the same number of predicted tokens and the mean of window losses is the mean token loss.
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
    windows = len(ids) // seqlen if nsamples is None else min(nsamples, len(ids) // seqlen)
    if windows < 1:
        raise ShearsError(f"the text has {len(ids)} tokens, fewer than one window of {seqlen}; give more text or a smaller --seqlen")
    losses = []
    for i in tqdm(range(windows), desc="perplexity", unit="window", leave=False):
        window = ids[i * seqlen : (i + 1) * seqlen].unsqueeze(0).to(device)
        losses.append(model(input_ids=window, labels=window, use_cache=False).loss.float().item())
    return math.exp(sum(losses) / len(losses))
