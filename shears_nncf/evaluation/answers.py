"""Answer extraction and scoring, the way LLM-Adapters scores generated answers.

Under the `reference` protocol the reference's own regular expressions are used, exactly
(`reference_extract`: see `shears_nncf.protocol`). Under `shears`, stricter ones:
Math: the last number in the text (thousands separators, negatives, decimals and a/b fractions
understood), correct when within 1e-3 of the gold number. AQuA: the option letter A-E.
Commonsense: the first word of the task's answer vocabulary that appears in the text
(case-insensitive; LLM-Adapters is case-sensitive, which only matters for "True"/"False").
"""

from __future__ import annotations

import re

from ..data.tasks import MATH, OPTION_LETTER, Task, get_task
from ..protocol import (REFERENCE_CHOICES, REFERENCE_LETTER, REFERENCE_NUMBER, REFERENCE_TOLERANCE, RESPONSE_MARKER,
                        SHEARS_PROTOCOL, Protocol)

MATH_TOLERANCE = 1e-3

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A minus sign counts only when it does not follow a word or a number ("2018-19" is not "-19").
_NUMBER = re.compile(r"(?:(?<![\w.])-)?\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")
_LETTER_AFTER_ANSWER = re.compile(r"(?i:answer\s*(?:is)?)\s*:?\s*\(?([A-E])\)?(?![A-Za-z])")
_LETTER_IN_PARENS = re.compile(r"\(([A-E])\)")
_LONE_LETTER = re.compile(r"(?<![A-Za-z])([A-E])(?![A-Za-z])")


def parse_number(text: str) -> float | None:
    """The value of one number as `_NUMBER` matches it ("1,234", "-3.5", "3/4"); None when undefined."""
    numerator, _, denominator = _THOUSANDS.sub("", text.strip()).partition("/")
    try:
        value = float(numerator)
        return value / float(denominator) if denominator else value
    except (ValueError, ZeroDivisionError):
        return None


def extract_number(text: str) -> float | None:
    numbers = _NUMBER.findall(_THOUSANDS.sub("", text))
    return parse_number(numbers[-1]) if numbers else None


def extract_letter(text: str) -> str | None:
    """"The answer is (C)" first; else the last parenthesised letter; else the first lone capital A-E."""
    for pattern, pick in ((_LETTER_AFTER_ANSWER, 0), (_LETTER_IN_PARENS, -1), (_LONE_LETTER, 0)):
        found = pattern.findall(text)
        if found:
            return found[pick]
    return None


def extract_choice(text: str, vocabulary: tuple[str, ...]) -> str | None:
    # Longest words first, so that "answer10" would never be read as "answer1".
    alternatives = "|".join(re.escape(w) for w in sorted(vocabulary, key=len, reverse=True))
    found = re.search(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", text, re.IGNORECASE)
    return found.group(1).lower() if found else None


def reference_extract(task: Task, text: str) -> float | str | None:
    """The reference's extraction (run_math.py, run_commonsense.py), with None where it returns inf or ""."""
    if task.kind == MATH:
        numbers = re.findall(REFERENCE_NUMBER, text.replace(",", ""))
        return float(numbers[-1]) if numbers else None
    found = re.findall(REFERENCE_LETTER if task.kind == OPTION_LETTER else REFERENCE_CHOICES[task.name], text.strip())
    return found[0] if found else None


def response_text(generation: str, prompt: str = RESPONSE_MARKER, protocol: Protocol = SHEARS_PROTOCOL) -> str:
    """What the protocol reads the answer from: under `reference` the decoded prompt + generation split as the
    reference splits it, `.split("### Response:")[1].strip()`; under `shears` the generation itself.

    Without the prompt, any prompt that ends in the marker (as every template's does) gives the same text."""
    if not protocol.answer_split:
        return generation
    return (prompt + generation).split(RESPONSE_MARKER)[1].strip()


def extract_answer(task: str | Task, text: str, protocol: Protocol = SHEARS_PROTOCOL) -> float | str | None:
    """The answer a generated text gives for `task`; None when it gives none."""
    task = get_task(task) if isinstance(task, str) else task
    if protocol.extraction == "llm-adapters":
        return reference_extract(task, text)
    if task.kind == MATH:
        return extract_number(text)
    if task.kind == OPTION_LETTER:
        return extract_letter(text)
    return extract_choice(text, task.vocabulary)


def answer_matches(task: str | Task, extracted: float | str | None, answer: str,
                   protocol: Protocol = SHEARS_PROTOCOL) -> bool:
    """Whether an extracted answer equals the gold `answer` (a number within 1e-3 for math)."""
    task = get_task(task) if isinstance(task, str) else task
    if extracted is None:
        return False
    if protocol.extraction == "llm-adapters":
        if task.kind != MATH:
            return extracted == answer  # the reference compares the strings as they are
        try:
            return abs(float(answer) - extracted) <= REFERENCE_TOLERANCE
        except ValueError:
            return False
    if task.kind == MATH:
        gold = parse_number(str(answer))
        return gold is not None and abs(extracted - gold) <= MATH_TOLERANCE
    return str(extracted).lower() == str(answer).strip().lower()


def score_prediction(task: str | Task, prediction: str, answer: str,
                     protocol: Protocol = SHEARS_PROTOCOL) -> tuple[float | str | None, bool]:
    """The answer a generated text (the new tokens only) gives, as the protocol reads it, and whether it is right."""
    extracted = extract_answer(task, response_text(prediction, protocol=protocol), protocol)
    return extracted, answer_matches(task, extracted, answer, protocol)


def is_correct(task: str | Task, prediction: str, answer: str, protocol: Protocol = SHEARS_PROTOCOL) -> bool:
    """Score one generated text against the gold answer."""
    return score_prediction(task, prediction, answer, protocol)[1]
