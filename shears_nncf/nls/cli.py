"""`shears train`: its flags made a `TrainConfig` for `stage.train_super_adapter`, or a dry run's estimate."""

from __future__ import annotations

from ..errors import ShearsError
from ..models import load_model_config, resolve_device, resolve_dtype
from .stage import TrainConfig, train_super_adapter


def train_command(args) -> None:
    config = TrainConfig.from_args(args)
    if args.dry_run:
        return _dry_run(args, config.load(), resolve_dtype(args.dtype, resolve_device("auto")))
    if not args.output:
        raise ShearsError("give --output (the super-adapter folder), or --dry-run to only estimate memory")
    train_super_adapter(args.model, config, args.output, overwrite=args.overwrite)


def _dry_run(args, config, dtype) -> None:
    """Size the training from the model's config alone: no weights, no data, nothing written."""
    from .dry_run import estimate_training_memory

    estimate = estimate_training_memory(load_model_config(args.model), config, dtype)
    print(f"dry run: {args.config} on {args.model} ({estimate.model_type}, {estimate.layers} layers), "
          f"micro-batch {config.training.batch_size} x {config.training.max_length} tokens")
    print(estimate.describe())
