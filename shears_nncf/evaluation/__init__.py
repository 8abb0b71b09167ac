"""Scoring: prompts, generation, answer extraction, log-likelihood. The wordings of log-likelihood scoring are declared
here so that the CLI reads them without importing torch or lm-eval."""

from __future__ import annotations

from ..choices import Choice, Choices

PROMPT_STYLES = Choices(
    "prompt style",
    Choice("lm-eval", "lm-eval's task templates"),
    Choice("llm-adapters", "the paper's prompt, with its answer sentences as the choices"),
)
