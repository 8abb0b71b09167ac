"""What a `shears run` did, as `RunSummary`: the one reader and writer of the run's summary.json.

It holds each stage's figures, the scores (by log-likelihood, dense, sparse and adapted rows on the same documents
with their paired differences), the deployed forms as `shears bench` measured them, and the `shears generate` line
to try the IR; render.py turns it into summary.md for a newcomer.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from ..artifacts import read_json, write_json
from ..bench import sparse_path
from ..evaluation.harness import headline, headline_metric
from ..stages import STAGES
from ..steps import Step

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Sparsity:
    """The sparse base, as sparsify counted it."""

    total_parameters: int
    nonzero_parameters: int
    decoder_sparsity: float
    method: str


@dataclass(frozen=True)
class Training:
    """The super-adapter's training."""

    optimizer_steps: int
    examples: int
    first_loss: float
    last_loss: float


@dataclass(frozen=True)
class SubAdapterChoice:
    """The sub-adapter the search chose: one rank per adapter group, and its cost."""

    strategy: str
    ranks: list[int]
    cost: float
    cost_name: str


@dataclass(frozen=True)
class ExportedIR:
    """The OpenVINO IR: its weight format, the zeros counted in it (`base_sparsity`, `base_zeros`, `base_params` of
    the base linears) and the bytes of its weights."""

    weights: str
    ir_sparsity: dict
    ir_bytes: int
    adapter_merged: bool = False  # folded into the weights (mask-aware or quantization-aware), else beside them


@dataclass(frozen=True, kw_only=True)
class Scored:
    """What one evaluate step scored: its model (`dense`, `sparse`, `pytorch` or `openvino`), in words (`what`), as
    a short label, and where its results are; a PyTorch model also its dtype and device (the IR runs on the CPU)."""

    model: str
    scoring: str
    results: str
    dtype: str | None = None
    device: str | None = None
    label: str
    what: str

    def as_json(self) -> dict:
        """Without the dtype and device the IR has none of."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("dtype", "device")}


@dataclass(frozen=True)
class ComparisonRow:
    """One model's log-likelihood scores: per task, their average over tasks in % and its standard error."""

    model: str
    step: str
    label: str
    tasks: dict[str, float]
    average: float
    se: float


@dataclass(frozen=True)
class Difference:
    """first minus second, in points, with its bootstrap standard error and 95% interval (evaluation/compare.py)."""

    first: str
    second: str
    measures: str
    diff: float
    se: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """The log-likelihood rows, all on the same documents (`documents`: how many per task), and their differences."""

    tasks: list[str]
    metrics: dict[str, str]
    documents: dict[str, int]
    rows: list[ComparisonRow]
    differences: list[Difference]

    @classmethod
    def from_json(cls, data: dict) -> Comparison:
        return cls(**(data | {"rows": [ComparisonRow(**row) for row in data["rows"]],
                              "differences": [Difference(**d) for d in data["differences"]]}))


@dataclass(frozen=True)
class DeployedForm:
    """One row of `shears bench`: a deployed form's figures beside its non-zero parameters and whether OpenVINO's
    sparse-weights kernels ran (`bench.sparse_path`)."""

    folder: str
    route: str | None
    backend: str
    sparse_rate: float | None
    weights: str | None
    nonzero_parameters: int
    size_mb: float | None
    decode_tokens_per_s: float | None
    tokens_per_s: float | None
    ttft_ms: float | None
    tpot_ms: float | None
    peak_rss_mb: float | None
    status: str | None
    sparse_path: str


@dataclass(frozen=True)
class RunSummary:
    """The content of summary.json, field for key in the file's order (`try_command` is its "try").

    `accuracy` holds the first evaluation's headline per task and their average, `also_scored` the same of each other
    evaluation by its step name less "evaluate-"; `comparison` is there when the run scored by log-likelihood,
    `openvino`, `cpu` and `try_command` when it exported the IR."""

    demonstration_size: bool
    scaled_down_by: list[str]
    settings: dict
    sparsity: Sparsity
    training: Training
    sub_adapter: SubAdapterChoice
    openvino: ExportedIR | None
    scored: dict[str, Scored]
    accuracy: dict[str, float]
    scoring: str
    also_scored: dict[str, dict[str, float]]
    comparison: Comparison | None
    bench: list[DeployedForm]
    cpu: dict | None
    try_command: str | None
    stage_seconds: dict[str, float | None]

    def write(self, folder: str | os.PathLike) -> None:
        data = asdict(self) | {"scored": {name: s.as_json() for name, s in self.scored.items()}}
        write_json(Path(folder) / SUMMARY_FILE, {("try" if k == "try_command" else k): v for k, v in data.items()})

    @classmethod
    def read(cls, folder: str | os.PathLike) -> RunSummary:
        data = read_json(Path(folder) / SUMMARY_FILE, what="run summary")
        fields = {("try_command" if k == "try" else k): v for k, v in data.items()}
        return cls(**(fields | {
            "sparsity": Sparsity(**data["sparsity"]),
            "training": Training(**data["training"]),
            "sub_adapter": SubAdapterChoice(**data["sub_adapter"]),
            "openvino": ExportedIR(**data["openvino"]) if data["openvino"] else None,
            "scored": {name: Scored(**s) for name, s in data["scored"].items()},
            "comparison": Comparison.from_json(data["comparison"]) if data["comparison"] else None,
            "bench": [DeployedForm(**row) for row in data["bench"]],
        }))


def summarize(settings: dict, records: dict[str, dict], steps: list[Step]) -> RunSummary:
    """The headline figures of every stage, read back from their outputs, and what each evaluation scored."""
    from ..evaluation.harness import read_results
    from ..export.openvino import OpenVINOModel
    from ..nls.folder import SuperAdapter
    from ..search.run import read_search
    from ..sparsity.api import SparseModel

    products = {step.name: step.product for step in steps}
    sparse = SparseModel.read(products["sparsify"])
    trained = SuperAdapter.read(products["train"], quantization_aware=True)  # its summary and protocol only
    train = trained.summary
    search = read_search(products["search"])
    evaluations = [step for step in steps if step.stage == "evaluate"]
    results = {step.name: read_results(step.product) for step in evaluations}
    first = results[evaluations[0].name]
    exported = "export" in products
    export = OpenVINOModel.read(products["export"]) if exported else None
    bench = read_json(products["bench"], what="benchmark results") if exported else {"rows": [], "cpu": None}
    scaled_down = [f"{stage}.{dest}" for stage, dest in (("train", "max_steps"), ("train", "limit"), ("evaluate", "limit"))
                   if settings.get(stage, {}).get(dest) is not None]
    names = {"strategy": search["strategy"], "sparse": products["sparsify"], "method": sparse.method,
             "sparsity": sparse.sparsity["decoder_sparsity"], "weights": export.weights if export else None,
             "merged": "merged" if export and export.merged else "unmerged"}
    scored = {step.name: _scored(step, names) for step in evaluations}
    return RunSummary(
        demonstration_size=bool(scaled_down),
        scaled_down_by=scaled_down,
        settings=settings,
        sparsity=Sparsity(**{k: sparse.sparsity[k] for k in ("total_parameters", "nonzero_parameters",
                                                             "decoder_sparsity")}, method=sparse.method),
        training=Training(**{k: train[k] for k in ("optimizer_steps", "examples", "first_loss", "last_loss")}),
        sub_adapter=SubAdapterChoice(strategy=search["strategy"], ranks=search["chosen"]["ranks"],
                                     cost=search["chosen"]["cost"], cost_name=search["cost"]),
        openvino=ExportedIR(weights=export.weights, ir_sparsity=export.sparsity, ir_bytes=export.ir_bytes,
                            adapter_merged=export.merged)
                 if export else None,
        scored=scored,
        accuracy=_headlines(first),
        scoring=first.get("scoring", "generate"),
        also_scored={step.name.removeprefix("evaluate-"): _headlines(results[step.name]) for step in evaluations[1:]},
        comparison=_comparison(scored, results),
        # Non-zero parameters of a deployed form: the sparse base's, counted in sparse/ (the IR's own count of its base
        # zeros is in "openvino"), plus those of the adapter the row runs.
        bench=[DeployedForm(folder=row["folder"], route=row.get("route"), backend=row["backend"],
                            sparse_rate=row["sparse_rate"], weights=row.get("weights"),
                            nonzero_parameters=sparse.sparsity["nonzero_parameters"] + (row.get("adapter_parameters") or 0),
                            size_mb=row.get("size_mb"), decode_tokens_per_s=row.get("decode_tokens_per_s"),
                            tokens_per_s=row.get("tokens_per_s"), ttft_ms=row.get("ttft_ms"), tpot_ms=row.get("tpot_ms"),
                            peak_rss_mb=row.get("peak_rss_mb"), status=row.get("status"),
                            sparse_path=sparse_path(row, bench["cpu"]["amx"])) for row in bench["rows"]],
        cpu=bench["cpu"],
        try_command=_try_command(products["export"], trained.protocol.name) if export else None,
        stage_seconds={name: record.get("seconds") for name, record in records.items()},
    )


def _scored(step: Step, names: dict) -> Scored:
    """What an evaluate step scored (a model of planning.py's `_EVALUATED`), in words, as a short label and as settings:
    the dense or the sparse base alone or with the sub-adapter in PyTorch, or the exported IR."""
    from ..models import dtype_name, resolve_device, resolve_dtype

    args = step.args
    scoring = args.scoring
    adapted = f"sparse + {names['strategy']} sub-adapter"
    if args.openvino:
        return Scored(model="openvino", scoring=scoring, results=str(step.product),
                      label=f"{adapted}, OpenVINO IR ({names['weights']})",
                      what=f"the OpenVINO IR ({Path(args.openvino).name}/, adapter {names['merged']}) on the CPU")
    device = resolve_device(args.device)
    dtype = dtype_name(resolve_dtype(args.dtype, device))
    on = {"scoring": scoring, "results": str(step.product), "dtype": dtype, "device": str(device)}
    if args.adapter:
        return Scored(model="pytorch", **on, label=adapted,
                      what=f"PyTorch, {dtype} on {device}: the sparse base ({Path(args.model).name}/) with the "
                           f"{names['strategy']} sub-adapter ({Path(args.adapter).name}/, the super-adapter's "
                           "sub-network), unmerged")
    if Path(args.model) == names["sparse"]:
        return Scored(model="sparse", **on, label=f"sparse ({names['method']} {names['sparsity']:.0%})",
                      what=f"PyTorch, {dtype} on {device}: the sparse base ({Path(args.model).name}/) alone")
    return Scored(model="dense", **on, label=f"dense ({Path(args.model).name})",
                  what=f"PyTorch, {dtype} on {device}: the dense base model ({args.model}) the run pruned")


# The comparison's rows, in the order each model was made from the one before: the dense base, the sparse one, it
# with the sub-adapter in PyTorch, its IR.
_ROWS = ("dense", "sparse", "pytorch", "openvino")
# The paired differences the summary reports, first minus second, where the run scored both, and what each measures.
_DIFFERENCES = (
    ("pytorch", "sparse", "what the sub-adapter changed on the sparse base"),
    ("sparse", "dense", "what pruning changed (negative: what it cost)"),
    ("openvino", "pytorch", "what the export changed (the IR's weight format, OpenVINO's arithmetic)"),
)
# Without a PyTorch row (a quantization-aware run scores its sub-adapter only as the INT4 IR it was trained for):
# the deployed model against the sparse base it was trained on.
_DEPLOYED_DIFFERENCE = ("openvino", "sparse", "what the sub-adapter, deployed in the IR's weight format, changed on the "
                        "sparse base")


def _comparison(scored: dict[str, Scored], results: dict) -> Comparison | None:
    """The log-likelihood scores, all on the same documents: each model's average over tasks with its standard error,
    and the `_DIFFERENCES` it allows with their 95% paired bootstrap intervals (evaluation/compare.py)."""
    from ..evaluation.compare import average, paired_difference, standard_error

    step = {s.model: name for name, s in scored.items() if s.scoring == "loglik"}
    if not step:
        return None
    models = [model for model in _ROWS if model in step]
    tasks = list(results[step[models[0]]]["tasks"])
    differences = _DIFFERENCES if "pytorch" in step else (*_DIFFERENCES, _DEPLOYED_DIFFERENCE)
    return Comparison(
        tasks=tasks,
        metrics={task: headline_metric(results[step[models[0]]]["tasks"][task]) for task in tasks},
        documents={task: results[step[models[0]]]["tasks"][task]["n"] for task in tasks},
        rows=[ComparisonRow(model=model, step=step[model], label=scored[step[model]].label,
                            tasks={task: headline(results[step[model]]["tasks"][task]) for task in tasks},
                            average=average(results[step[model]], tasks), se=standard_error(results[step[model]], tasks))
              for model in models],
        differences=[Difference(first=first, second=second, measures=measures,
                                **paired_difference(results[step[first]], results[step[second]], tasks))
                     for first, second, measures in differences if first in step and second in step],
    )


# What the summary's `shears generate` line asks: a question worded as the commonsense training data words BoolQ's.
TRY_PROMPT = ("Please answer the following question with true or false, question: is the pacific ocean the largest "
              "ocean on earth? Answer format: true/false")


def _try_command(ir: Path, template: str) -> str:
    """The `shears generate` command line that talks to the exported IR in `template`, the name of the protocol the
    adapter was trained under; built from the stage's declaration, so it is what the CLI parses."""
    generate = STAGES["generate"]
    args = generate.namespace(openvino=ir, prompt=TRY_PROMPT, max_new_tokens=32, template=template)
    return shlex.join(["shears", *generate.argv(args)])


def _headlines(results: dict) -> dict:
    return {name: headline(t) for name, t in results["tasks"].items()} | {"average": results["average"]}
