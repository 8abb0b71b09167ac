"""The training stage as one call: config -> records -> tokens -> model -> NLS (or plain LoRA) -> super-adapter folder.

`train_super_adapter(model, TrainConfig(...), output)` is what `shears train` and `shears run` do; the handler in
`cli.py` only builds the `TrainConfig` from its flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..config import TRAINING_OVERRIDES, ShearsConfig, check_target_modules, load_config
from ..data.prompts import protocol_for_model
from ..errors import ShearsError
from ..models import dtype_name, load_model, load_model_config, load_tokenizer, meta_model, resolve_device, resolve_dtype
from .folder import SuperAdapter, TrainingInputs
from .mpt import prepare_for_adapters


@dataclass(frozen=True)
class TrainConfig:
    """How `shears train` trains, besides the model and the output: `shears train`'s flags, with their defaults.

    `config` is the NNCF JSON file (bootstrapNAS and shears sections); `overrides` replaces its training settings by
    name (`lr`, `epochs`, `batch_size`, ... the `shears train --<name>` flags), None or absent keeping the file's."""

    config: str | os.PathLike
    data: str = "default"
    tasks: list[str] | None = None
    limit: int | None = None
    max_steps: int | None = None
    seed: int = 42
    lora_only: bool = False
    resume: bool = False
    save_steps: int = 200
    protocol: str | None = None
    dtype: str = "auto"
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.overrides) - set(TRAINING_OVERRIDES))
        if unknown:
            raise ShearsError(f"TrainConfig.overrides: no training setting {', '.join(unknown)}; the settings are "
                              f"{', '.join(sorted(TRAINING_OVERRIDES))}")

    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        """From `shears train`'s parsed flags (a setting's flag left out is None: the config's value holds)."""
        names = {f.name for f in fields(cls)} - {"overrides"}
        return cls(**{name: getattr(args, name) for name in names},
                   overrides={name: getattr(args, name) for name in TRAINING_OVERRIDES})

    def load(self) -> ShearsConfig:
        """The config file, overridden and validated."""
        return load_config(self.config, protocol=self.protocol, **self.overrides)


def train_super_adapter(model: str, config: TrainConfig, output: str | os.PathLike, *,
                        overwrite: bool = False) -> SuperAdapter | None:
    """Train a super-adapter (NLS; plain LoRA with `lora_only`; quantization-aware with a `shears.quantization`
    section) on the (sparse) base `model` and write it to `output`; the folder read back. Everything that can be
    wrong with the config or the data is found before the model is loaded.

    Under torchrun or accelerate every process calls it; only the main one returns the folder (the others None)."""
    shears = config.load()
    if shears.quantization and config.lora_only:
        raise ShearsError(f"{config.config}: shears.quantization trains a quantization-aware super-adapter; lora_only "
                          "trains a float LoRA: drop one of them")
    from .training import check_checkpoints, checkpoint_dir, train

    check_checkpoints(checkpoint_dir(output))  # before any model or data is read
    # The LoRA targets are checked on the model's shapes alone (meta device), before data or weights are read.
    check_target_modules(prepare_for_adapters(meta_model(load_model_config(model))), shears.lora.target_modules,
                         shears.source)
    tokenizer = load_tokenizer(model)
    examples, held_out, truncated = _tokenized(config, shears, tokenizer, model)
    dtype = resolve_dtype(config.dtype, resolve_device("auto"))
    net = prepare_for_adapters(load_model(model, dtype=dtype))
    inputs = TrainingInputs(base_model=str(Path(model).resolve()) if Path(model).exists() else model,
                            config_file=str(config.config), data=config.data, tasks=config.tasks, limit=config.limit,
                            truncated_examples=truncated, protocol=shears.protocol.name, dtype=dtype_name(dtype))
    run = dict(eval_examples=held_out, max_steps=config.max_steps, resume=config.resume, seed=config.seed,
               save_steps=config.save_steps, overwrite=overwrite, inputs=inputs)
    if shears.quantization:
        from .qa_training import train_qa

        result = train_qa(net, tokenizer, shears, examples, output, **run)
        kind = f"quantization-aware super-adapter ({shears.quantization.mode})"
    else:
        result = train(net, tokenizer, shears, examples, output, lora_only=config.lora_only, **run)
        kind = "plain LoRA" if config.lora_only else f"super-adapter ({len(result.supernet.group_names)} groups)"
    if not main_process():
        return None
    first, last = (f"{result.losses[0]:.4f}", f"{result.losses[-1]:.4f}") if result.losses else ("-", "-")
    print(f"trained {kind} for {result.steps} steps on {len(examples)} examples: loss {first} -> {last}; "
          f"saved {result.output}")
    return SuperAdapter.read(output, quantization_aware=True)


def _tokenized(config: TrainConfig, shears: ShearsConfig, tokenizer, model: str) -> tuple[list, list | None, int]:
    """The training examples, the held-out ones (the records set aside, when their loss is logged) and how many
    examples were cut to `max_length`."""
    from ..data.prompts import require_supervised_tokens, tokenize_for_training
    from ..data.sources import carved_validation_records, load_training_records

    t = shears.training
    records = load_training_records(config.data, config.tasks, config.limit, config.seed, t.val_set_size)
    protocol = protocol_for_model(shears.protocol, model)  # MPT under the reference: run_gsm8k.py's template
    examples, truncated = tokenize_for_training(records, tokenizer, t.max_length, t.train_on_inputs, protocol,
                                                t.truncation)
    require_supervised_tokens(examples, config.data)
    held_out = None
    if t.eval_steps:  # the records set aside, tokenized alike: their loss is logged every eval_steps
        held_out, _ = tokenize_for_training(carved_validation_records(config.data, config.tasks, t.val_set_size),
                                            tokenizer, t.max_length, t.train_on_inputs, protocol, t.truncation)
    if truncated and main_process():
        cut = ("cut after the first tokens, without EOS (shears.training.truncation: end, the reference's)"
               if t.truncation == "end" else "their prompts were cut from the left, their responses kept")
        print(f"{truncated} of {len(examples)} training examples are longer than {t.max_length} tokens: {cut}")
    return examples, held_out, truncated


def main_process() -> bool:
    """Under torchrun or accelerate every process runs the stage; only the first one speaks."""
    return int(os.environ.get("RANK", "0")) == 0
