"""Pruning a model's decoder linears; the methods are declared here so that the CLI reads them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import Choice, Choices


@dataclass(frozen=True)
class Method(Choice):
    calibrated: bool = False  # scores weights by the inputs of calibration samples


METHODS = Choices(
    "sparsity method",
    Method("wanda", "|W| times the norm of its input over the calibration samples (Wanda)", calibrated=True),
    Method("magnitude", "|W| alone, without calibration"),
)
