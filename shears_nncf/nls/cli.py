"""`shears train`: config -> records -> tokens -> model -> NLS (or plain LoRA) training -> super-adapter folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import TRAINING_OVERRIDES, check_target_modules, load_config
from ..errors import ShearsError
from ..data.prompts import protocol_for_model
from ..models import dtype_name, load_model, load_model_config, load_tokenizer, meta_model, resolve_device, resolve_dtype
from .mpt import prepare_for_adapters


def train_command(args) -> None:
    # Everything that can be wrong with the config or the data is found before the model is loaded or trained.
    overrides = {name: getattr(args, name) for name in TRAINING_OVERRIDES}  # None: the config's value
    config = load_config(args.config, protocol=args.protocol, **overrides)
    dtype = resolve_dtype(args.dtype, resolve_device("auto"))
    if args.dry_run:
        return _dry_run(args, config, dtype)
    if not args.output:
        raise ShearsError("give --output (the super-adapter folder), or --dry-run to only estimate memory")
    if config.quantization and args.lora_only:
        raise ShearsError(f"{args.config}: shears.quantization trains a quantization-aware super-adapter; --lora-only "
                          "trains a float LoRA: drop one of them")
    from .training import check_checkpoints, checkpoint_dir, train

    check_checkpoints(checkpoint_dir(args.output))  # before any model or data is read
    # The LoRA targets are checked on the model's shapes alone (meta device), before data or weights are read.
    model_shapes = prepare_for_adapters(meta_model(load_model_config(args.model)))
    check_target_modules(model_shapes, config.lora.target_modules, config.source)
    tokenizer = load_tokenizer(args.model)

    from ..data.prompts import require_supervised_tokens, tokenize_for_training
    from ..data.sources import carved_validation_records, load_training_records

    t = config.training
    records = load_training_records(args.data, args.tasks, args.limit, args.seed, t.val_set_size)
    protocol = protocol_for_model(config.protocol, args.model)  # MPT under the reference: run_gsm8k.py's template
    examples, n_truncated = tokenize_for_training(records, tokenizer, t.max_length, t.train_on_inputs, protocol,
                                                  t.truncation)
    require_supervised_tokens(examples, args.data)
    held_out = None
    if t.eval_steps:  # the records set aside, tokenized alike: their loss is logged every eval_steps
        held_out, _ = tokenize_for_training(carved_validation_records(args.data, args.tasks, t.val_set_size), tokenizer,
                                            t.max_length, t.train_on_inputs, protocol, t.truncation)
    if n_truncated and _main_process():
        cut = ("cut after the first tokens, without EOS (shears.training.truncation: end, the reference's)"
               if t.truncation == "end" else "their prompts were cut from the left, their responses kept")
        print(f"{n_truncated} of {len(examples)} training examples are longer than {t.max_length} tokens: {cut}")
    model = prepare_for_adapters(load_model(args.model, dtype=dtype))
    base_model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    run = dict(eval_examples=held_out, max_steps=args.max_steps, resume=args.resume, seed=args.seed,
               overwrite=args.overwrite, manifest={
                   "base_model": base_model, "config_file": str(args.config), "data": args.data, "tasks": args.tasks,
                   "limit": args.limit, "truncated_examples": n_truncated, "protocol": config.protocol.name,
                   "dtype": dtype_name(dtype),
               })
    if config.quantization:
        from .qa_training import train_qa

        result = train_qa(model, tokenizer, config, examples, args.output, **run)
        kind = f"quantization-aware super-adapter ({config.quantization.mode})"
    else:
        result = train(model, tokenizer, config, examples, args.output, lora_only=args.lora_only, **run)
        kind = "plain LoRA" if args.lora_only else f"super-adapter ({len(result.supernet.group_names)} groups)"
    first, last = (f"{result.losses[0]:.4f}", f"{result.losses[-1]:.4f}") if result.losses else ("-", "-")
    if _main_process():
            print(f"trained {kind} for {result.steps} steps on {len(examples)} examples: loss {first} -> {last}; saved {result.output}")


def _main_process() -> bool:
    """Under torchrun or accelerate every process runs this command; only the first one speaks."""
    return int(os.environ.get("RANK", "0")) == 0


def _dry_run(args, config, dtype) -> None:
    """Size the training from the model's config alone: no weights, no data, nothing written."""
    from .dry_run import estimate_training_memory

    estimate = estimate_training_memory(load_model_config(args.model), config, dtype)
    print(f"dry run: {args.config} on {args.model} ({estimate.model_type}, {estimate.layers} layers), "
          f"micro-batch {config.training.batch_size} x {config.training.max_length} tokens")
    print(estimate.describe())
