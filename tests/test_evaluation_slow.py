"""Zero-shot evaluation of the embedded SmolLM2 on a few embedded BoolQ examples (end to end, CPU)."""

import pytest

from shears_nncf.data.sources import load_records
from shears_nncf.evaluation.generation import TorchGenerator
from shears_nncf.evaluation.harness import evaluate, format_results_table


@pytest.mark.slow
def test_smollm2_zero_shot_answers_in_the_asked_format_and_is_scored(smollm2, tmp_path):
    model, tokenizer = smollm2
    records = load_records("default", ["boolq"], limit=8)
    results = evaluate(TorchGenerator(model, tokenizer, batch_size=8, device="cpu", progress=False), records,
                       output_path=tmp_path / "results.json")
    examples = results["examples"]["boolq"]
    assert len(examples) == 8 and all(e["generation"].strip() for e in examples)
    # The instruct model follows "Answer format: true/false" on most questions (a broken prompt or padding does not).
    assert sum(e["extracted"] is not None for e in examples) >= 6
    assert results["tasks"]["boolq"]["accuracy"] == sum(e["correct"] for e in examples) / 8
    assert "boolq" in format_results_table(results)
