"""C4 calibration samples drawn exactly as Wanda draws them (locuslab/wanda `lib/data.py`, `get_c4`).

Wanda reads the first training shard of `allenai/c4` (`en/c4-train.00000-of-01024.json.gz`, 356,317
documents), seeds Python's `random` with the seed, and for each sample draws a random document until
one is longer than `seqlen` tokens (tokenized with the tokenizer's special tokens, as
`tokenizer(text)` does), then a random window of `seqlen` tokens in it. Here the shard is streamed
through `datasets` (one file read once, nothing else of the split downloaded, nothing written to the
datasets cache), keeping only documents that could be long enough: a document of n UTF-8 bytes has
at most n + 2 tokens, so shorter ones are remembered as "too short" without their text. The random
draws, and so the samples, are Wanda's.
"""

from __future__ import annotations

import random
from typing import Iterable

import torch

from ..errors import ShearsError

SOURCE = "c4"
DATASET, SHARD = "allenai/c4", "en/c4-train.00000-of-01024.json.gz"
NSAMPLES, SEQLEN, SEED = 128, 2048, 0  # Wanda's defaults (main.py; seqlen is LLaMA's context length)
_SPECIAL_TOKENS_SLACK = 2  # BOS and a sentencepiece prefix space: the most tokens beyond one per byte


def c4_samples(tokenizer, nsamples: int = NSAMPLES, seqlen: int = SEQLEN, seed: int = SEED,
               documents: Iterable[str] | None = None) -> list[torch.Tensor]:
    """`nsamples` (1, seqlen) windows of C4's first training shard, drawn as Wanda draws them.

    `documents` replaces the streamed shard (tests pass a small local stand-in)."""
    texts = _long_enough(documents if documents is not None else stream_shard(), seqlen)
    if not any(text is not None for text in texts):
        raise ShearsError(f"no C4 document has more than {seqlen} tokens; give a smaller --seqlen")
    rng = random.Random(seed)  # the same draws as Wanda's random.seed(seed) + random.randint
    samples = []
    for _ in range(nsamples):
        while True:
            text = texts[rng.randint(0, len(texts) - 1)]
            ids = tokenizer(text, return_tensors="pt").input_ids if text is not None else None
            if ids is not None and ids.shape[1] > seqlen:
                break
        start = rng.randint(0, ids.shape[1] - seqlen - 1)
        samples.append(ids[:, start:start + seqlen])
    return samples


def _long_enough(documents: Iterable[str], seqlen: int) -> list[str | None]:
    """Every document by its index: its text if it may exceed `seqlen` tokens, else None."""
    return [text if len(text.encode()) + _SPECIAL_TOKENS_SLACK > seqlen else None for text in documents]


def stream_shard() -> Iterable[str]:
    """The texts of Wanda's C4 shard, in order, streamed; offline or unreachable fails with one line."""
    import datasets

    try:
        stream = datasets.load_dataset(DATASET, data_files={"train": SHARD}, split="train", streaming=True)
        for row in stream:
            yield row["text"]
    except Exception as e:  # offline, DNS, HTTP errors: all mean the same to the user
        message = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ShearsError(
            f"C4 calibration streams {DATASET} ({SHARD}) from the Hugging Face hub, which cannot be reached here "
            f"({message}); give --calibration a .txt or .jsonl file, or 'default'"
        ) from None
