"""Wanda on the embedded SmolLM2-135M: it must beat magnitude pruning on held-out text."""

import copy

import pytest

from shears_nncf.data.calibration import calibration_samples, heldout_text
from shears_nncf.evaluation.perplexity import perplexity
from shears_nncf.sparsity.api import sparsify


@pytest.mark.slow
def test_wanda_50_percent_has_lower_heldout_perplexity_than_magnitude_on_smollm2(smollm2):
    dense, tokenizer = smollm2
    samples = calibration_samples("default", tokenizer, nsamples=16, seqlen=256, seed=0)  # BoolQ train passages
    text = heldout_text()[:40_000]  # BoolQ validation passages: ~9k tokens, enough for 4 windows
    ppl = lambda model: perplexity(model, tokenizer, text, seqlen=256, nsamples=4, device="cpu")
    wanda, magnitude = copy.deepcopy(dense), copy.deepcopy(dense)  # the fixture's model is used by other tests too
    sparsify(wanda, samples, 0.5, "wanda")
    sparsify(magnitude, None, 0.5, "magnitude")
    dense_ppl, wanda_ppl, magnitude_ppl = ppl(dense), ppl(wanda), ppl(magnitude)
    print(f"held-out perplexity: dense {dense_ppl:.1f}, wanda-50% {wanda_ppl:.1f}, magnitude-50% {magnitude_ppl:.1f}")
    assert dense_ppl < wanda_ppl < magnitude_ppl
