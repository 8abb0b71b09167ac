"""`shears evaluate` (task accuracy or perplexity) and `shears score` (predictions from any runtime)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ShearsError


def evaluate_command(args) -> None:
    """Under torchrun or `accelerate launch` each process scores its share of every task and the main one
    writes the results and prints the table (see `harness.run_tasks`)."""
    if args.perplexity:
        return _perplexity(args)
    if args.scoring == "loglik":
        return _loglik(args)

    from ..data.sources import load_records
    from .harness import evaluate, format_results_table

    # Bad tasks or data fail here, before any model is loaded.
    records = load_records(args.data, args.tasks, split="test", limit=args.limit)
    protocol = _protocol(args)
    generator = _generator(args, protocol)
    metadata = {"model": args.model, "adapter": args.adapter, "openvino": args.openvino, "data": args.data, "limit": args.limit,
                "super_adapter": args.super_adapter, "subnet": args.subnet if args.super_adapter else None,
                "protocol": protocol, "dtype": None if args.openvino else args.dtype}
    results = evaluate(generator, records, output_path=args.output, metadata=metadata, protocol=protocol)
    if results is None:  # not the main process
        return
    print(format_results_table(results))
    if args.output:
        print(f"every example written to {args.output}")


def _loglik(args) -> None:
    """Ranked-choice scoring of the commonsense tasks through lm-evaluation-harness (see loglik.py)."""
    from .. import distributed
    from . import loglik
    from .harness import format_results_table, run_tasks

    # Bad tasks, data, wording or IR folder fail here, before any model is loaded and anything is written.
    style = loglik.check_prompt_style(args.prompt_style)
    tasks = loglik.loglik_tasks(args.tasks) if args.tasks is not None else None
    protocol = _protocol(args)
    documents = loglik.source_documents(args.data, tasks, style, protocol)
    if args.openvino:
        from .openvino_backend import openvino_lm

        distributed.join("cpu")
        lm = openvino_lm(args.openvino, args.batch_size)
    else:
        model, tokenizer, _ = _load(args)
        lm = loglik.torch_lm(model, tokenizer, args.batch_size)
    with distributed.main_first():  # one process writes the cached task folder, the others then read it
        folder = loglik.task_folder(documents, style)
    scorer = loglik.LoglikScorer(lm, folder)
    metadata = {"model": args.model, "adapter": args.adapter, "openvino": args.openvino, "data": args.data, "limit": args.limit,
                "super_adapter": args.super_adapter, "subnet": args.subnet if args.super_adapter else None,
                "scoring": "loglik", "prompt_style": style, "protocol": protocol if style == "llm-adapters" else None,
                "dtype": None if args.openvino else args.dtype}
    start = time.perf_counter()
    results = run_tasks(list(documents), lambda task: scorer.score(task, args.limit), args.output, metadata)
    if results is None:  # not the main process
        return
    print(format_results_table(results))
    print(f"wall time {time.perf_counter() - start:.1f} s" + (f"; results written to {args.output}" if args.output else ""))


def _protocol(args) -> str:
    """--protocol, else the one the super-adapter was trained under, else shears."""
    if args.protocol or not args.super_adapter:
        return args.protocol or "shears"
    from ..artifacts import read_manifest

    return read_manifest(args.super_adapter, stage="train").get("protocol") or "shears"


def _generator(args, protocol: str):
    if args.openvino:
        from .. import distributed
        from .openvino_backend import OpenVINOGenerator

        distributed.join("cpu")
        return OpenVINOGenerator(args.openvino, batch_size=args.batch_size, protocol=protocol)
    from .generation import TorchGenerator

    model, tokenizer, device = _load(args)
    return TorchGenerator(model, tokenizer, batch_size=args.batch_size, device=device, protocol=protocol)


def _load(args):
    from .. import distributed
    from ..models import load_model, load_tokenizer, resolve_device, resolve_dtype

    if args.super_adapter:
        return _load_sub_adapter(args)
    if not args.model:
        raise ShearsError("give --model (an HF folder, hub id or 'smollm2-135m'), --super-adapter DIR or --openvino DIR")
    device = distributed.join(resolve_device(args.device))  # under several processes, this one's GPU
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype=resolve_dtype(args.dtype, device))
    if args.adapter:
        from peft import PeftModel

        from ..nls.folder import sub_adapter_mask_aware
        from ..nls.mpt import prepare_for_adapters
        from ..nls.sparse_adapter import apply_sparse_adapter

        prepare_for_adapters(model)  # MPT: the adapter names attn.q_proj/k_proj/v_proj

        if not Path(args.adapter, "adapter_config.json").is_file():
            raise ShearsError(f"adapter folder {args.adapter} has no adapter_config.json; give a PEFT adapter folder")
        model = PeftModel.from_pretrained(model, args.adapter)
        if sub_adapter_mask_aware(args.adapter):  # trained with shears.lora.sparse_adapter: score the trained model
            apply_sparse_adapter(model)
            print(f"adapter {args.adapter}: update masked by the base's zeros, as it was trained")
    return model.to(device).eval(), tokenizer, device


def _load_sub_adapter(args):
    """The trained supernet with one sub-adapter active: evaluated without extracting it first."""
    from .. import distributed
    from ..nls.folder import super_adapter_groups
    from ..models import resolve_device, resolve_dtype
    from ..nls.space import SearchSpace
    from ..search.subnet import resolve_subnet

    if args.adapter:
        raise ShearsError("give either --adapter or --super-adapter, not both")
    names, widths, _, _ = super_adapter_groups(args.super_adapter)
    ranks, how = resolve_subnet(SearchSpace.of(widths, names), args.subnet)  # a bad --subnet fails before loading
    device = distributed.join(resolve_device(args.device))  # under several processes, this one's GPU

    from ..nls.supernet import open_super_adapter

    supernet, tokenizer = open_super_adapter(args.super_adapter, args.model, resolve_dtype(args.dtype, device))
    supernet.activate(list(ranks))
    masked = ", update masked by the base's zeros (trained with shears.lora.sparse_adapter)" if supernet.config.lora.sparse_adapter else ""
    print(f"sub-adapter {how}: ranks {list(ranks)}{masked}")
    return supernet.peft_model.to(device).eval(), tokenizer, device


def _perplexity(args) -> None:
    from .perplexity import perplexity

    path = Path(args.perplexity)
    if not path.is_file():
        raise ShearsError(f"text file {path} does not exist; --perplexity takes a plain-text file")
    model, tokenizer, device = _load(args)
    value = perplexity(model, tokenizer, path.read_text(), args.seqlen, args.nsamples, device)
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
    path = Path(args.predictions)
    if not path.is_file():
        raise ShearsError(f"predictions file {path} does not exist")
    correct = count = 0
    verdicts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ShearsError(f"{path} line {number} is not JSON; expected JSONL lines {{\"prediction\": str, \"answer\": str}}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prediction"), str) or "answer" not in row:
            raise ShearsError(f"{path} line {number} lacks \"prediction\" (a string) or \"answer\"; "
                              "expected {\"prediction\": str, \"answer\": str}")
        extracted, right = score_prediction(task, row["prediction"], str(row["answer"]), args.protocol)
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
