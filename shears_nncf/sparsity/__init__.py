"""Pruning a model's decoder weights; the methods and allocations are declared here so that the CLI reads them without
importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import Choice, Choices
from ..errors import ShearsError


@dataclass(frozen=True)
class Pruning(Choice):
    """A method or an allocation: whether it needs calibration samples, and the settings it reads (`SparsifyConfig`
    fields, `--flag` on the command line), which the manifest records with it."""

    calibrated: bool = False
    settings: tuple[str, ...] = ()


METHODS = Choices(
    "sparsity method",
    Pruning("wanda", "|W| times the norm of its input over the calibration samples (Wanda)", calibrated=True),
    Pruning("sparsegpt", "zero the weights whose removal changes the layer's output least and update the rest to "
                         "compensate, with the Hessian of the calibration inputs (SparseGPT; --damping, --block-size)",
            calibrated=True, settings=("damping", "block_size")),
    Pruning("magnitude", "|W| alone, without calibration"),
)

ALLOCATIONS = Choices(
    "sparsity allocation",
    Pruning("uniform", "every decoder block at --ratio"),
    Pruning("owl", "a ratio per decoder block, lower where the block's Wanda scores have more outliers, averaging to "
                   "--ratio over the decoder (OWL; --outlier-threshold, --owl-lambda; needs calibration, also with "
                   "magnitude; not with N:M)", calibrated=True, settings=("outlier_threshold", "owl_lambda")),
)


@dataclass(frozen=True)
class SparsifyConfig:
    """How `sparsify` prunes, declared once: `shears sparsify`'s flags (`--block-size` for `block_size`, with these
    defaults and help) and the keys of a config's `shears.pipeline.sparsify`. A method or an allocation reads only the
    settings its table entry names. Made, it has passed every check its fields must pass together."""

    ratio: float = field(metadata={"help": "fraction of the decoder weights to zero, in (0, 1): in every block "
                                           "(uniform), on average over the decoder (owl)"})
    method: str = field(default="wanda", metadata={"help": METHODS.help()})
    pattern: str = field(default="unstructured", metadata={"help": "unstructured, 2:4 or 4:8 (N:M needs ratio N/M)"})
    allocation: str = field(default="uniform", metadata={"help": ALLOCATIONS.help()})
    damping: float = field(default=0.01, metadata={
        "help": "sparsegpt: added to the Hessian's diagonal, as a fraction of its mean, so that it is invertible"})
    block_size: int = field(default=128, metadata={
        "help": "sparsegpt: columns whose mask is chosen, and whose update is applied, together"})
    outlier_threshold: float = field(default=5.0, metadata={
        "help": "owl: a Wanda score above this many times its block's mean is an outlier (OWL's M)"})
    owl_lambda: float = field(default=0.08, metadata={
        "help": "owl: the block ratios span about ratio +- lambda; below both the ratio and 1 - ratio"})

    def __post_init__(self):
        from .masks import parse_pattern  # torch: only when a model is pruned, not for `shears --help`

        METHODS[self.method], ALLOCATIONS[self.allocation]  # an unknown name is one line listing the known ones
        nm = parse_pattern(self.pattern, self.ratio)
        if self.allocation == "owl":
            if nm:
                raise ShearsError(f"--allocation owl cannot take pattern {self.pattern}: N:M fixes every block's ratio "
                                  f"at {nm[0]}/{nm[1]}; use --pattern unstructured")
            if self.owl_lambda >= min(self.ratio, 1 - self.ratio):
                raise ShearsError(f"--owl-lambda {self.owl_lambda} must be below {min(self.ratio, 1 - self.ratio):g}: "
                                  f"OWL's block ratios span about {self.ratio} +- lambda, which must stay in (0, 1)")
        if self.method == "sparsegpt" and nm and self.block_size % nm[1]:
            raise ShearsError(f"--block-size {self.block_size} is not a multiple of {nm[1]}, which SparseGPT's "
                              f"{self.pattern} pattern needs")

    @property
    def calibrated(self) -> bool:
        """Whether it needs calibration samples: for the method's scores, or for OWL's outlier shares."""
        return METHODS[self.method].calibrated or ALLOCATIONS[self.allocation].calibrated

    def settings(self, table: Choices, name: str) -> dict:
        """The settings a method (table METHODS) or an allocation (ALLOCATIONS) reads, with their values."""
        return {key: getattr(self, key) for key in table[name].settings}
