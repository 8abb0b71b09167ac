"""The evaluate stage as one call: a model (HF folder, with a PEFT adapter or a super-adapter's sub-network, or an
OpenVINO IR) scored on tasks (generated answers or log-likelihood) or on a text's perplexity.

`evaluate_model(EvaluateConfig(...), output)` is what `shears evaluate` and `shears run` do; the handler in `cli.py`
only builds the `EvaluateConfig` from its flags.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..artifacts import read_text
from ..choices import Choice, Choices
from ..errors import ShearsError
from ..protocol import PROTOCOLS, SHEARS_PROTOCOL, Protocol
from . import PROMPT_STYLES


@dataclass(frozen=True)
class EvaluateConfig:
    """What `shears evaluate` scores and how: its flags, with their defaults. The model is `model` (with `adapter`, a
    PEFT folder), a `super_adapter`'s `subnet`, or an `openvino` IR folder; `perplexity` (a text file) scores that
    text instead of `tasks`."""

    model: str | None = None
    adapter: str | None = None
    super_adapter: str | None = None
    subnet: str = "heuristic"
    openvino: str | None = None
    tasks: list[str] | None = None
    data: str = "default"
    limit: int | None = None
    scoring: str = "generate"
    prompt_style: str = "lm-eval"
    batch_size: int = 8
    perplexity: str | None = None
    seqlen: int = 512
    nsamples: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    protocol: str | None = None

    def __post_init__(self):
        SCORINGS[self.scoring], PROMPT_STYLES[self.prompt_style]  # an unknown name: one line listing the known ones

    @classmethod
    def from_args(cls, args) -> "EvaluateConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def evaluate_model(config: EvaluateConfig, output: str | os.PathLike | None = None) -> dict | None:
    """Score the model and return the results (also written to `output`, after each task: a rerun with the same
    settings scores only the missing tasks). Under torchrun or `accelerate launch` each process scores its share of
    every task and the main one writes the results and returns them (the others None; see `harness.run_tasks`)."""
    if config.perplexity:
        return _perplexity(config, output)
    return SCORINGS[config.scoring].function(config, output)


def _generate(c: EvaluateConfig, output) -> dict | None:
    """Generated answers read by each task's extractor."""
    from ..data.sources import load_records
    from .harness import evaluate, format_results_table

    # Bad tasks or data fail here, before any model is loaded.
    records = load_records(c.data, c.tasks, split="test", limit=c.limit)
    protocol = _protocol(c)
    generator = _generator(c, protocol)
    metadata = {"model": c.model, "adapter": c.adapter, "openvino": c.openvino, "data": c.data, "limit": c.limit,
                "super_adapter": c.super_adapter, "subnet": c.subnet if c.super_adapter else None,
                "protocol": protocol.name, "dtype": None if c.openvino else c.dtype}
    results = evaluate(generator, records, output_path=output, metadata=metadata, protocol=protocol)
    if results is None:  # not the main process
        return None
    print(format_results_table(results))
    if output:
        print(f"every example written to {output}")
    return results


def _loglik(c: EvaluateConfig, output) -> dict | None:
    """Ranked-choice scoring of the commonsense tasks through lm-evaluation-harness (see loglik.py)."""
    from .. import distributed
    from ..data.lm_eval_documents import task_folder
    from . import loglik
    from .harness import format_results_table, run_tasks

    # Bad tasks, data, wording or IR folder fail here, before any model is loaded and anything is written.
    style = PROMPT_STYLES[c.prompt_style].name
    tasks = loglik.loglik_tasks(c.tasks) if c.tasks is not None else None
    protocol = _protocol(c)
    documents = loglik.source_documents(c.data, tasks, style, protocol)
    if c.openvino:
        from .openvino_backend import openvino_lm

        distributed.join("cpu")
        lm = openvino_lm(c.openvino, c.batch_size, adapter=c.adapter)
    else:
        model, tokenizer, _ = _load(c)
        lm = loglik.torch_lm(model, tokenizer, c.batch_size)
    with distributed.main_first():  # one process writes the cached task folder, the others then read it
        folder = task_folder(documents, style)
    scorer = loglik.LoglikScorer(lm, folder)
    metadata = {"model": c.model, "adapter": c.adapter, "openvino": c.openvino, "data": c.data, "limit": c.limit,
                "super_adapter": c.super_adapter, "subnet": c.subnet if c.super_adapter else None,
                "scoring": "loglik", "prompt_style": style, "protocol": protocol.name if style == "llm-adapters" else None,
                "dtype": None if c.openvino else c.dtype}
    start = time.perf_counter()
    results = run_tasks(list(documents), lambda task: scorer.score(task, c.limit), output, metadata)
    if results is None:  # not the main process
        return None
    print(format_results_table(results))
    print(f"wall time {time.perf_counter() - start:.1f} s" + (f"; results written to {output}" if output else ""))
    return results


SCORINGS = Choices(
    "scoring",
    Choice("generate", "greedy answers read by the task's extractor (the paper's protocol)", _generate),
    Choice("loglik", "rank the answer choices by likelihood through lm-evaluation-harness (commonsense tasks)", _loglik),
)


def _protocol(c: EvaluateConfig) -> Protocol:
    """The protocol the command scores under, resolved once: --protocol, else the one the super-adapter was trained
    under, else shears; in the prompt templates of the model scored (under `reference` MPT has run_gsm8k.py's own)."""
    from ..data.prompts import protocol_for_model
    from ..nls.folder import SuperAdapter

    trained = SuperAdapter.read(c.super_adapter) if c.super_adapter else None
    protocol = PROTOCOLS[c.protocol] if c.protocol else trained.protocol if trained else SHEARS_PROTOCOL
    return protocol_for_model(protocol, c.openvino or c.model or (trained.base_model if trained else None))


def _generator(c: EvaluateConfig, protocol: Protocol):
    if c.openvino:
        from .. import distributed
        from .openvino_backend import openvino_generator

        distributed.join("cpu")
        return openvino_generator(c.openvino, c.adapter, batch_size=c.batch_size, protocol=protocol)
    from .generation import TorchGenerator

    model, tokenizer, device = _load(c)
    return TorchGenerator(model, tokenizer, batch_size=c.batch_size, device=device, protocol=protocol)


def _load(c: EvaluateConfig):
    """The model to score: a base, a base with a PEFT adapter, or a super-adapter's sub-network (`load_adapted`)."""
    from .. import distributed
    from ..export.adapted import load_adapted
    from ..models import resolve_device, resolve_dtype

    if not (c.model or c.adapter or c.super_adapter):
        raise ShearsError("give --model (an HF folder, hub id or 'smollm2-135m'), --super-adapter DIR or --openvino DIR")
    device = distributed.join(resolve_device(c.device))  # under several processes, this one's GPU
    adapted = load_adapted(c.model, c.adapter, super_adapter=c.super_adapter, subnet=c.subnet,
                           dtype=resolve_dtype(c.dtype, device), device=device)
    if c.adapter or c.super_adapter:
        print(adapted.description)
    return adapted.model, adapted.tokenizer, device


def _perplexity(c: EvaluateConfig, output) -> dict | None:
    from .perplexity import perplexity

    path = Path(c.perplexity)
    if not path.is_file():
        raise ShearsError(f"text file {path} does not exist; --perplexity takes a plain-text file")
    text = read_text(path, "text file")  # not UTF-8: fails before the model is loaded
    model, tokenizer, device = _load(c)
    value = perplexity(model, tokenizer, text, c.seqlen, c.nsamples, device)
    print(f"perplexity: {value:.4f} ({path.name}, seqlen {c.seqlen})")
    result = {"perplexity": value, "text": str(path), "seqlen": c.seqlen, "nsamples": c.nsamples, "model": c.model,
              "adapter": c.adapter}
    if output:
        from ..artifacts import write_json

        write_json(output, result)
    return result
