"""Neural low-rank adapter search (NLS) training: HF's Trainer, a random sub-adapter per micro-batch.

Two things differ from plain LoRA fine-tuning, both in a small Trainer subclass (transformers is not
patched): before every micro-batch a random rank is drawn for every adapter group, and the learning
rate follows NNCF's BootstrapNAS stage schedule (cosine from the stage's `init_lr` over `epochs_lr`,
no warm-up) instead of HF's scheduler. With `lora_only` the same loop trains a plain LoRA baseline
(full rank, HF's cosine without warm-up) for the paper's ablations.
"""

from __future__ import annotations

import collections
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from ..artifacts import atomic_output_dir, write_manifest
from ..config import ShearsConfig
from ..errors import ShearsError
from ..models import resolve_device
from .supernet import NNCF_CONFIG_FILE, Supernet, build_supernet, save_super_adapter


class NNCFStageLR:
    """Fills HF Trainer's `lr_scheduler` slot with NNCF's schedule, called in NNCF's order:
    `epoch_step()` at the start of every epoch, `step()` before every optimizer step."""

    def __init__(self, supernet: Supernet, optimizer: torch.optim.Optimizer, total_steps: int):
        self.optimizer = optimizer
        self.steps_per_epoch = max(1, round(total_steps / supernet.config.training.epochs))
        self.scheduler = supernet.ctrl.scheduler
        supernet.start_schedule(optimizer, self.steps_per_epoch)
        self.steps = 0
        self.scheduler.lr_scheduler.step()  # the learning rate of the first optimizer step

    def step(self) -> None:
        """Called by the Trainer after each optimizer step: prepare the next one."""
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0:
            self.scheduler.epoch_step()
        self.scheduler.lr_scheduler.step()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Resume by replaying the schedule: it is a pure function of the step count."""
        for _ in range(state["steps"] - self.steps):
            self.step()


class NLSTrainer(Trainer):
    """`transformers.Trainer` training a super-adapter: a random sub-adapter at every micro-batch."""

    def __init__(self, *args, supernet: Supernet, **kwargs):
        super().__init__(*args, **kwargs)
        self.supernet = supernet
        self.sampled_configs: collections.deque[list[int]] = collections.deque(maxlen=256)
        self.learning_rates: list[float] = []  # the rate each optimizer step of this run used
        self._micro_batches = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._micro_batches % self.args.gradient_accumulation_steps == 0:
            self.learning_rates.append(self.optimizer.param_groups[0]["lr"])
        self._micro_batches += 1
        if self.supernet.elastic:
            self.sampled_configs.append(self.supernet.activate_random())
        return super().training_step(model, inputs, num_items_in_batch)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.supernet.elastic:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = NNCFStageLR(self.supernet, optimizer or self.optimizer, num_training_steps)
        return self.lr_scheduler


@dataclass
class TrainResult:
    output: Path
    steps: int
    losses: list[float]  # the logged training loss, one per optimizer step
    supernet: Supernet
    sampled_configs: list[list[int]]  # the last (up to 256) sub-adapters drawn, one per micro-batch
    learning_rates: list[float]  # one per optimizer step of this run


def checkpoint_dir(output: str | os.PathLike) -> Path:
    """Checkpoints live beside the output folder, so that writing the output never clobbers them."""
    output = Path(output)
    return output.parent / f"{output.name}.checkpoints"


def train(
    model: torch.nn.Module,
    tokenizer,
    config: ShearsConfig,
    examples: list[dict],
    output: str | os.PathLike,
    *,
    lora_only: bool = False,
    max_steps: int | None = None,
    resume: bool = False,
    seed: int = 42,
    device: str = "auto",
    save_steps: int = 200,
    manifest: dict | None = None,
) -> TrainResult:
    """Train a super-adapter (or a plain LoRA) on tokenized examples and write the output folder."""
    if not examples:
        raise ShearsError("no training examples: check --data, --tasks and --limit")
    device = resolve_device(device)
    checkpoints = checkpoint_dir(output)
    last = _last_checkpoint(checkpoints)
    if resume and last is None:
        raise ShearsError(f"--resume: no checkpoint in {checkpoints} to resume from; run without --resume")

    supernet = build_supernet(model.to(device), config, elastic=not lora_only)
    t = config.training
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=max_steps if max_steps else -1,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        lr_scheduler_type="cosine",  # used by --lora-only; the supernet uses NNCF's schedule
        warmup_steps=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1,
        report_to=[],
        seed=seed,
        bf16=bf16,
        fp16=device.type == "cuda" and not bf16,
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = NLSTrainer(
        model=supernet.peft_model,
        args=args,
        train_dataset=examples,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt"),
        supernet=supernet,
    )
    with supernet.untraced():
        run = trainer.train(resume_from_checkpoint=str(last) if resume else None)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if supernet.elastic:
        supernet.activate_maximal()

    with atomic_output_dir(output) as tmp:
        save_super_adapter(supernet, tmp)
        write_manifest(tmp, {
            "stage": "train",
            **(manifest or {}),
            "lora_only": lora_only,
            "config": config.raw,
            "nncf_config": NNCF_CONFIG_FILE,
            "groups": supernet.group_names,
            "search_space": supernet.search_space if supernet.elastic else None,
            "settings": {**vars(t), "max_steps": max_steps, "seed": seed, "device": str(device),
                         "precision": "bf16" if bf16 else "fp16" if args.fp16 else "fp32"},
            "examples": len(examples),
            "optimizer_steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "supernet_build_seconds": round(supernet.build_seconds, 2),
            "train_seconds": round(run.metrics["train_runtime"], 1),  # this run's; a resumed one's last leg
        })
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(Path(output), trainer.state.global_step, losses, supernet, list(trainer.sampled_configs), trainer.learning_rates)


def _last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if folder.is_dir() and (found := get_last_checkpoint(str(folder))) else None

