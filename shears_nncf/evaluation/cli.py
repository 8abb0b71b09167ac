"""`shears evaluate` (task accuracy or perplexity) and `shears score` (predictions from any runtime)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..artifacts import read_text
from ..choices import Choice, Choices
from ..errors import ShearsError
from ..protocol import PROTOCOLS, SHEARS, SHEARS_PROTOCOL, Protocol
from . import PROMPT_STYLES


def evaluate_command(args) -> None:
    """Under torchrun or `accelerate launch` each process scores its share of every task and the main one
    writes the results and prints the table (see `harness.run_tasks`)."""
    if args.perplexity:
        return _perplexity(args)
    return SCORINGS[args.scoring].function(args)


def _generate(args) -> None:
    """Generated answers read by each task's extractor."""
    from ..data.sources import load_records
    from .harness import evaluate, format_results_table

    # Bad tasks or data fail here, before any model is loaded.
    records = load_records(args.data, args.tasks, split="test", limit=args.limit)
    protocol = _protocol(args)
    generator = _generator(args, protocol)
    metadata = {"model": args.model, "adapter": args.adapter, "openvino": args.openvino, "data": args.data, "limit": args.limit,
                "super_adapter": args.super_adapter, "subnet": args.subnet if args.super_adapter else None,
                "protocol": protocol.name, "dtype": None if args.openvino else args.dtype}
    results = evaluate(generator, records, output_path=args.output, metadata=metadata, protocol=protocol)
    if results is None:  # not the main process
        return
    print(format_results_table(results))
    if args.output:
        print(f"every example written to {args.output}")


def _loglik(args) -> None:
    """Ranked-choice scoring of the commonsense tasks through lm-evaluation-harness (see loglik.py)."""
    from .. import distributed
    from ..data.lm_eval_documents import task_folder
    from . import loglik
    from .harness import format_results_table, run_tasks

    # Bad tasks, data, wording or IR folder fail here, before any model is loaded and anything is written.
    style = PROMPT_STYLES[args.prompt_style].name
    tasks = loglik.loglik_tasks(args.tasks) if args.tasks is not None else None
    protocol = _protocol(args)
    documents = loglik.source_documents(args.data, tasks, style, protocol)
    if args.openvino:
        from .openvino_backend import openvino_lm

        distributed.join("cpu")
        lm = openvino_lm(args.openvino, args.batch_size, adapter=args.adapter)
    else:
        model, tokenizer, _ = _load(args)
        lm = loglik.torch_lm(model, tokenizer, args.batch_size)
    with distributed.main_first():  # one process writes the cached task folder, the others then read it
        folder = task_folder(documents, style)
    scorer = loglik.LoglikScorer(lm, folder)
    metadata = {"model": args.model, "adapter": args.adapter, "openvino": args.openvino, "data": args.data, "limit": args.limit,
                "super_adapter": args.super_adapter, "subnet": args.subnet if args.super_adapter else None,
                "scoring": "loglik", "prompt_style": style, "protocol": protocol.name if style == "llm-adapters" else None,
                "dtype": None if args.openvino else args.dtype}
    start = time.perf_counter()
    results = run_tasks(list(documents), lambda task: scorer.score(task, args.limit), args.output, metadata)
    if results is None:  # not the main process
        return
    print(format_results_table(results))
    print(f"wall time {time.perf_counter() - start:.1f} s" + (f"; results written to {args.output}" if args.output else ""))


SCORINGS = Choices(
    "scoring",
    Choice("generate", "greedy answers read by the task's extractor (the paper's protocol)", _generate),
    Choice("loglik", "rank the answer choices by likelihood through lm-evaluation-harness (commonsense tasks)", _loglik),
)


def _protocol(args) -> Protocol:
    """The protocol the command scores under, resolved once: --protocol, else the one the super-adapter was trained
    under, else shears; in the prompt templates of the model scored (under `reference` MPT has run_gsm8k.py's own)."""
    from ..data.prompts import protocol_for_model
    from ..nls.folder import SuperAdapter

    trained = SuperAdapter.read(args.super_adapter) if args.super_adapter else None
    protocol = PROTOCOLS[args.protocol] if args.protocol else trained.protocol if trained else SHEARS_PROTOCOL
    return protocol_for_model(protocol, args.openvino or args.model or (trained.base_model if trained else None))


def _generator(args, protocol: Protocol):
    if args.openvino:
        from .. import distributed
        from .openvino_backend import openvino_generator

        distributed.join("cpu")
        return openvino_generator(args.openvino, args.adapter, batch_size=args.batch_size, protocol=protocol)
    from .generation import TorchGenerator

    model, tokenizer, device = _load(args)
    return TorchGenerator(model, tokenizer, batch_size=args.batch_size, device=device, protocol=protocol)


def _load(args):
    """The model to score: a base, a base with a PEFT adapter, or a super-adapter's sub-network (`load_adapted`)."""
    from .. import distributed
    from ..export.adapted import load_adapted
    from ..models import resolve_device, resolve_dtype

    if not (args.model or args.adapter or args.super_adapter):
        raise ShearsError("give --model (an HF folder, hub id or 'smollm2-135m'), --super-adapter DIR or --openvino DIR")
    device = distributed.join(resolve_device(args.device))  # under several processes, this one's GPU
    adapted = load_adapted(args.model, args.adapter, super_adapter=args.super_adapter, subnet=args.subnet,
                           dtype=resolve_dtype(args.dtype, device), device=device)
    if args.adapter or args.super_adapter:
        print(adapted.description)
    return adapted.model, adapted.tokenizer, device


def _perplexity(args) -> None:
    from .perplexity import perplexity

    path = Path(args.perplexity)
    if not path.is_file():
        raise ShearsError(f"text file {path} does not exist; --perplexity takes a plain-text file")
    text = read_text(path, "text file")  # not UTF-8: fails before the model is loaded
    model, tokenizer, device = _load(args)
    value = perplexity(model, tokenizer, text, args.seqlen, args.nsamples, device)
    print(f"perplexity: {value:.4f} ({path.name}, seqlen {args.seqlen})")
    if args.output:
        from ..artifacts import write_json

        write_json(args.output, {"perplexity": value, "text": str(path), "seqlen": args.seqlen,
                                 "nsamples": args.nsamples, "model": args.model, "adapter": args.adapter})


def score_command(args) -> None:
    """Score {"prediction", "answer"} lines with the task's extractor; --json prints only the summary,
    --output writes every line's verdict ({"line", "extracted", "correct"}, JSONL)."""
    from .answers import score_prediction
    from ..data.tasks import get_task

    task = get_task(args.task)
    protocol = PROTOCOLS[args.protocol or SHEARS]
    path = Path(args.predictions)
    if not path.is_file():
        raise ShearsError(f"predictions file {path} does not exist")
    correct = count = 0
    verdicts = []
    for number, line in enumerate(read_text(path, "predictions file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ShearsError(f"{path} line {number} is not JSON; expected JSONL lines {{\"prediction\": str, \"answer\": str}}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prediction"), str) or "answer" not in row:
            raise ShearsError(f"{path} line {number} lacks \"prediction\" (a string) or \"answer\"; "
                              "expected {\"prediction\": str, \"answer\": str}")
        extracted, right = score_prediction(task, row["prediction"], str(row["answer"]), protocol)
        verdicts.append({"line": number, "extracted": extracted, "correct": right})
        correct += right
        count += 1
    if count == 0:
        raise ShearsError(f"{path} has no predictions; expected JSONL lines {{\"prediction\": str, \"answer\": str}}")
    accuracy = correct / count
    if args.output:
        from ..artifacts import write_text

        write_text(args.output, "".join(json.dumps(v) + "\n" for v in verdicts))
    if args.json:
        print(json.dumps({"task": task.name, "accuracy": accuracy, "count": count}))
    else:
        print(f"{task.name}: accuracy {100 * accuracy:.1f}% ({correct}/{count})")
