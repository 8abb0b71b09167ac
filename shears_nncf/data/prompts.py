"""The Alpaca-style prompt of LLM-Adapters and Shears, and tokenization for training.

The text of each prompt is the protocol's (`shears_nncf.protocol`): under `reference` the
reference's templates byte for byte, indentation and trailing spaces included, a training one and
an evaluation one per task family; under `shears` one clean template for both. Training sees the
whole text; the prompt part of the labels is masked (-100) unless the protocol or config trains on
inputs. Evaluation sees the evaluation prompt and generates the response.
"""

from __future__ import annotations

import os

from ..choices import Choice, Choices
from ..errors import ShearsError
from ..protocol import REFERENCE, SHEARS_PROTOCOL, Protocol, for_model_type
from .tasks import MULTIPLE_CHOICE, Task, get_task

IGNORE_INDEX = -100


def protocol_for_model(protocol: Protocol, model: str | os.PathLike | None) -> Protocol:
    """The protocol's templates for this base model (an HF folder, hub id or IR folder with its config.json): MPT has
    its own under `reference` (`protocol.for_model_type`). Only the reference protocol reads the model's config."""
    if model is None or protocol.name != REFERENCE:
        return protocol
    from ..models import load_model_config

    return for_model_type(protocol, getattr(load_model_config(model), "model_type", None))


def format_prompt(record: dict, with_response: bool, protocol: Protocol = SHEARS_PROTOCOL) -> str:
    """The record in the protocol's *training* template; without the response it is the prompt the loss masks.

    A prompt-completion record ({"prompt", "completion"}, as TRL names them) is already written out
    and is used as it is, e.g. the lm-eval-worded training records of `--data lm-eval` (`data.lm_eval_documents`)."""
    if "prompt" in record and "completion" in record:
        return record["prompt"] + (record["completion"] if with_response else "")
    template = protocol.training_template.pick(record)
    return template.format(instruction=record["instruction"], input=record.get("input", ""),
                           output=record["output"] if with_response else "")


def generation_prompt(record: dict, task: str | Task, protocol: Protocol = SHEARS_PROTOCOL) -> str:
    """The record in the protocol's *evaluation* template for the task's family (math or commonsense)."""
    task = get_task(task) if isinstance(task, str) else task
    family = "commonsense" if task.kind == MULTIPLE_CHOICE else "math"
    template = protocol.evaluation_templates[family].pick(record)
    return template.format(instruction=record["instruction"], input=record.get("input", ""), output="")


# What a training example longer than max_length loses (shears.training.truncation).
TRUNCATIONS = Choices(
    "truncation",
    Choice("prompt", "the start of its prompt; its response and EOS are kept"),
    Choice("end", "everything after its first max_length tokens, as the reference's tokenize (the response may be lost)"),
)


def tokenize_for_training(records, tokenizer, max_length: int, train_on_inputs: bool = False,
                          protocol: Protocol = SHEARS_PROTOCOL, truncation: str | None = None) -> tuple[list[dict], int]:
    """Tokenize records for causal-LM training: EOS appended, prompt labels masked unless `train_on_inputs`.

    `truncation` (default: the protocol's) says what an example longer than `max_length` loses. "prompt":
    the *start of its prompt* (the first token stays when it is the tokenizer's BOS), never its response;
    only a response longer than `max_length` on its own is cut, at its end. "end": the reference's
    `tokenize`, everything after the first `max_length` tokens, and EOS is appended only to an example
    shorter than that. Returns the examples ({"input_ids", "attention_mask", "labels"}, lists of ints)
    and how many were truncated, so a caller can say how much of its data did not fit.
    """
    truncation = TRUNCATIONS[truncation or protocol.truncation].name  # unknown: a ShearsError naming them
    if truncation == "end":
        return _tokenize_cut_at_end(records, tokenizer, max_length, train_on_inputs, protocol)
    examples, truncated = [], 0
    for record in records:
        full = tokenizer(format_prompt(record, True, protocol))["input_ids"] + [tokenizer.eos_token_id]
        # Split where the reference masks: after as many tokens as the prompt alone has.
        n_prompt = min(len(tokenizer(format_prompt(record, False, protocol))["input_ids"]), len(full) - 1)
        prompt, response = full[:n_prompt], full[n_prompt:]
        if len(full) > max_length:
            truncated += 1
            head = prompt[:1] if prompt and prompt[0] == tokenizer.bos_token_id else []
            room = max_length - len(head) - len(response)
            if room >= 0:
                prompt = head + (prompt[len(head):][-room:] if room else [])
            else:
                prompt, response = head, response[:max_length - len(head)]
        labels = (list(prompt) if train_on_inputs else [IGNORE_INDEX] * len(prompt)) + response
        input_ids = prompt + response
        examples.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels})
    return examples, truncated


def _tokenize_cut_at_end(records, tokenizer, max_length: int, train_on_inputs: bool,
                         protocol: Protocol) -> tuple[list[dict], int]:
    """run_math.py / run_commonsense.py / run_gsm8k.py `generate_and_tokenize_prompt`: `tokenizer(text,
    truncation=True, max_length=cutoff_len)`, EOS appended when the result is shorter than cutoff_len and does not
    end in it; without `train_on_inputs` the labels of as many tokens as the (also cut) prompt has are masked."""
    examples, truncated = [], 0
    for record in records:
        ids = tokenizer(format_prompt(record, True, protocol))["input_ids"]
        truncated += len(ids) > max_length
        ids = ids[:max_length]
        if ids[-1] != tokenizer.eos_token_id and len(ids) < max_length:
            ids.append(tokenizer.eos_token_id)
        labels = list(ids)
        if not train_on_inputs:
            n_prompt = len(tokenizer(format_prompt(record, False, protocol))["input_ids"][:max_length])
            labels = [IGNORE_INDEX] * n_prompt + labels[n_prompt:]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return examples, truncated


def require_supervised_tokens(examples: list[dict], source: str) -> int:
    """The number of supervised (unmasked) label tokens; none at all is an error, found before any step."""
    supervised = sum(label != IGNORE_INDEX for example in examples for label in example["labels"])
    if supervised == 0:
        raise ShearsError(f"training data {source} leaves no supervised token ({len(examples)} examples): "
                          "give records with an 'output' to learn (check --data, --tasks and --limit)")
    return supervised
