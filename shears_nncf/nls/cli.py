"""`shears train`: config -> model -> records -> NLS (or plain LoRA) training -> super-adapter folder."""

from __future__ import annotations

from pathlib import Path

from ..config import check_target_modules, load_config
from ..models import load_model, load_tokenizer


def train_command(args) -> None:
    # Everything that can be wrong with the config is found before the model is loaded or trained.
    config = load_config(
        args.config, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        grad_accum=args.grad_accum, max_length=args.max_length,
    )
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    check_target_modules(model, config.lora.target_modules, config.source)

    from ..data.prompts import tokenize_for_training
    from ..data.sources import load_training_records
    from .training import train

    records = load_training_records(args.data, args.tasks, args.limit, args.seed)
    examples, n_truncated = tokenize_for_training(
        records, tokenizer, config.training.max_length, train_on_inputs=config.training.train_on_inputs
    )
    base_model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    result = train(
        model, tokenizer, config, examples, args.output,
        lora_only=args.lora_only, max_steps=args.max_steps, resume=args.resume, seed=args.seed,
        manifest={
            "base_model": base_model, "config_file": str(args.config), "data": args.data, "tasks": args.tasks,
            "limit": args.limit, "truncated_examples": n_truncated,
        },
    )
    kind = "plain LoRA" if args.lora_only else f"super-adapter ({len(result.supernet.group_names)} groups)"
    first, last = (f"{result.losses[0]:.4f}", f"{result.losses[-1]:.4f}") if result.losses else ("-", "-")
    print(f"trained {kind} for {result.steps} steps on {len(examples)} examples: loss {first} -> {last}; saved {result.output}")
