"""The Alpaca-style prompt template of LLM-Adapters and Shears, and tokenization for training.

Training sees the whole text with the prompt part of the labels masked (-100), so the loss is
the response's; evaluation sees the same text without the response and generates it.
"""

from __future__ import annotations

IGNORE_INDEX = -100

_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_PREAMBLE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)


def format_prompt(record: dict, with_response: bool) -> str:
    """The record as one prompt; without the response it ends with "### Response:\\n", ready to generate."""
    if record.get("input"):
        text = f"{_PREAMBLE_WITH_INPUT}\n\n### Instruction:\n{record['instruction']}\n\n### Input:\n{record['input']}\n\n### Response:\n"
    else:
        text = f"{_PREAMBLE}\n\n### Instruction:\n{record['instruction']}\n\n### Response:\n"
    return text + record["output"] if with_response else text


def tokenize_for_training(records, tokenizer, max_length: int, train_on_inputs: bool = False) -> tuple[list[dict], int]:
    """Tokenize records for causal-LM training: EOS appended, cut at `max_length`, prompt labels masked.

    Returns the examples ({"input_ids", "attention_mask", "labels"}, lists of ints) and how many
    were truncated, so a caller can say how much of its data did not fit.
    """
    examples, truncated = [], 0
    for record in records:
        full = tokenizer(format_prompt(record, with_response=True))["input_ids"] + [tokenizer.eos_token_id]
        if len(full) > max_length:
            truncated += 1
            full = full[:max_length]
        labels = list(full)
        if not train_on_inputs:
            n_prompt = min(len(tokenizer(format_prompt(record, with_response=False))["input_ids"]), len(full))
            labels[:n_prompt] = [IGNORE_INDEX] * n_prompt
        examples.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": labels})
    return examples, truncated
