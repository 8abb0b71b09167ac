"""A fast tokenizer built from a GGUF file's own SentencePiece-BPE vocabulary (Gemma's).

transformers 5.5 turns a Gemma-3 GGUF's vocabulary into a Unigram model (`GGUFGemmaConverter`), but the file's scores
are BPE merge ranks (minus the rank), not log-probabilities, and "The capital of France is" comes out as 24
one-character tokens. The vocabulary is what SentencePiece trained: a byte-fallback BPE whose merges follow those
ranks. It is built here from the file with stock parts: transformers' `generate_merges` (what its SentencePiece
converters use) and `tokenizers`' BPE, with Gemma's whitespace handling (a space is "▁"), the file's user-defined
pieces ("\\n", HTML tags) matched whole, its control tokens special, and <bos> prepended when the file says so.
"""

from __future__ import annotations

import os

# SentencePiece piece types, as GGUF stores them (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def gguf_field(reader, key: str):
    """A GGUF metadata value: a string, a number, or a list of either."""
    field = reader.fields[key]
    values = [field.parts[i] for i in field.data]
    decoded = [bytes(v).decode("utf-8") if field.types[-1].name == "STRING" else v.tolist()[0] for v in values]
    return decoded if field.types[0].name == "ARRAY" else decoded[0]


def gguf_tokenizer(path: str | os.PathLike, model_max_length: int):
    """The tokenizer of the GGUF at `path` (a SentencePiece "llama"-type vocabulary with merge-rank scores)."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges

    reader = GGUFReader(str(path))
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    scores = gguf_field(reader, "tokenizer.ggml.scores")
    types = gguf_field(reader, "tokenizer.ggml.token_type")
    special = {name: tokens[gguf_field(reader, f"tokenizer.ggml.{name}_token_id")]
               for name in ("bos", "eos", "unknown", "padding")}
    vocab = {token: i for i, token in enumerate(tokens)}
    ranked = [(token, score) for token, score, kind in zip(tokens, scores, types) if kind == NORMAL]
    backend = Tokenizer(BPE(vocab, generate_merges(vocab, ranked), unk_token=special["unknown"], byte_fallback=True,
                            fuse_unk=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_tokens([AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
                                if k in (CONTROL, UNKNOWN)])
    if gguf_field(reader, "tokenizer.ggml.add_bos_token"):
        bos = special["bos"]
        backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                               special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=special["bos"], eos_token=special["eos"],
                                   unk_token=special["unknown"], pad_token=special["padding"],
                                   model_max_length=model_max_length)
