"""Neural low-rank adapter search (NLS) training: HF's Trainer, a random sub-adapter per micro-batch.

Two things differ from plain LoRA fine-tuning, both in a small Trainer subclass (transformers is not
patched): before every micro-batch a random rank is drawn for every adapter group, and the learning
rate follows NNCF's BootstrapNAS stage schedule (cosine from the stage's `init_lr` over `epochs_lr`,
no warm-up) instead of HF's scheduler. With `lora_only` the same loop trains a plain LoRA baseline
(full rank, HF's cosine without warm-up) for the paper's ablations.

Several processes (`torchrun`, `accelerate launch`) train data-parallel as HF's Trainer does it (DDP;
gloo on CPU, NCCL on GPU): each rank takes its share of every global micro-batch, and DDP averages
the gradients. That is only the paper's method if every rank trains the *same* sub-adapter at the same
micro-batch, which `sub_adapter_rng` guarantees. Only the main process writes the output folder and
the checkpoints' shared files; every rank writes its own RNG state into a checkpoint, so checkpoints and
the output live on a file system all nodes share, as HF's Trainer assumes.

Setting `SHEARS_SUB_ADAPTER_LOG=<folder>` makes every rank append the sub-adapter of each micro-batch
to `<folder>/sub_adapters.rank<R>.jsonl` (`{"micro_batch": i, "ranks": [...]}`), so that a run can
show the ranks agreed.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

from ..artifacts import atomic_output_dir
from ..config import ShearsConfig
from ..errors import ShearsError
from ..models import dtype_name, resolve_device, resolve_dtype
from .folder import STAGE, SuperAdapter, TrainingInputs
from .space import sub_adapter_rng
from .supernet import Supernet, build_supernet, save_super_adapter


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


SUB_ADAPTER_LOG = "SHEARS_SUB_ADAPTER_LOG"


class NLSTrainer(Trainer):
    """`transformers.Trainer` training a super-adapter: a random sub-adapter at every micro-batch."""

    def __init__(self, *args, supernet: Supernet, sub_adapter_log=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.supernet = supernet
        self.sub_adapter_log = sub_adapter_log  # an open text file, or None
        self.sampled_configs: collections.deque[list[int]] = collections.deque(maxlen=256)
        self.learning_rates: list[float] = []  # the rate each optimizer step of this run used
        self._step, self._in_step = -1, 0  # the optimizer step being accumulated, its micro-batches so far

    # What a subclass training another kind of super-adapter (nls/qa_training.py) replaces: whether ranks are drawn,
    # how the random sub-adapter of a global micro-batch and the heuristic one are activated.
    @property
    def elastic(self) -> bool:
        return self.supernet.elastic

    def activate_random(self, micro_batch: int) -> list[int]:
        return self.supernet.activate_random(sub_adapter_rng(self.args.seed, micro_batch))

    def activate_heuristic(self) -> None:
        self.supernet.activate_heuristic()

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step != self._step:
            self._step, self._in_step = self.state.global_step, 0
            self.learning_rates.append(self.optimizer.param_groups[0]["lr"])
        micro_batch = self._step * self.args.gradient_accumulation_steps + self._in_step
        self._in_step += 1
        if self.elastic:
            ranks = self.activate_random(micro_batch)
            self.sampled_configs.append(ranks)
            if self.sub_adapter_log is not None:
                self.sub_adapter_log.write(json.dumps({"micro_batch": micro_batch, "ranks": ranks}) + "\n")
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, *args, **kwargs):
        """The held-out loss of the sub-adapter deployed by default (the heuristic's middle ranks), not of whichever
        one the last micro-batch drew; the next training step draws its own again."""
        if self.elastic:
            self.activate_heuristic()
        return super().evaluate(*args, **kwargs)

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
    supernet: Supernet | None  # None: quantization-aware (nls/qa_training.py)
    sampled_configs: list[list[int]]  # the last (up to 256) sub-adapters drawn, one per micro-batch
    learning_rates: list[float]  # one per optimizer step of this run


def sub_adapter_log_file(rank: int):
    """This rank's sub-adapter log when SHEARS_SUB_ADAPTER_LOG names a folder (appended to, line-buffered)."""
    folder = os.environ.get(SUB_ADAPTER_LOG)
    if not folder:
        return contextlib.nullcontext()
    Path(folder).mkdir(parents=True, exist_ok=True)
    return open(Path(folder) / f"sub_adapters.rank{rank}.jsonl", "a", buffering=1)


def checkpoint_dir(output: str | os.PathLike) -> Path:
    """Checkpoints live beside the output folder, so that writing the output never clobbers them."""
    output = Path(output)
    return output.parent / f"{output.name}.checkpoints"


def check_checkpoints(checkpoints: Path) -> None:
    """The checkpoints folder is removed once training ends: refuse one that holds anything but the Trainer's
    `checkpoint-N` folders (an earlier run's, to resume from), before anything is written."""
    if checkpoints.exists() and (not checkpoints.is_dir() or any(not p.name.startswith("checkpoint-")
                                                                 for p in checkpoints.iterdir())):
        raise ShearsError(f"{checkpoints} holds what shears did not write; training keeps its checkpoints there and "
                          "removes the folder when it ends: move it away, or give another --output")


def train(
    model: torch.nn.Module,
    tokenizer,
    config: ShearsConfig,
    examples: list[dict],
    output: str | os.PathLike,
    *,
    eval_examples: list[dict] | None = None,
    lora_only: bool = False,
    max_steps: int | None = None,
    resume: bool = False,
    seed: int = 42,
    device: str = "auto",
    save_steps: int = 200,
    inputs: TrainingInputs = TrainingInputs(),
    overwrite: bool = False,
) -> TrainResult:
    """Train a super-adapter (or a plain LoRA) on tokenized examples and write the output folder (`overwrite`:
    even over a folder shears did not write); `eval_examples` (held-out, tokenized alike) are scored every
    `shears.training.eval_steps` optimizer steps, their loss logged as `eval_loss`.

    Under torchrun or accelerate every process calls this with the same arguments; the main one writes."""
    session = start_session(config, examples, output, eval_examples=eval_examples, max_steps=max_steps, resume=resume,
                            seed=seed, device=device, save_steps=save_steps)
    supernet = build_supernet(model.to(session.device), config, elastic=not lora_only)
    with sub_adapter_log_file(session.args.process_index) as log:
        trainer = NLSTrainer(model=supernet.peft_model, supernet=supernet, sub_adapter_log=log,
                             **session.trainer_kwargs(tokenizer, examples, eval_examples))
        with supernet.untraced():
            run = trainer.train(resume_from_checkpoint=session.resume_from)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if supernet.elastic:
        supernet.activate_maximal()

    def write(tmp: Path) -> None:
        save_super_adapter(supernet, tmp)
        # The log: the loss (mean over ranks) at every step, as the reference keeps it in trainer_state.json.
        SuperAdapter.write(tmp, inputs, nncf_config=supernet.nncf_config or supernet.config.raw,
                           training_log=trainer.state.log_history, run={
                               "lora_only": lora_only, "examples": len(examples),
                               **run_record(config, trainer, run, losses, session, max_steps, seed,
                                            groups=supernet.group_names,
                                            search_space=supernet.search_space if supernet.elastic else None,
                                            build_seconds=supernet.build_seconds),
                           })

    session.finish(trainer, output, write, overwrite)
    return TrainResult(Path(output), trainer.state.global_step, losses, supernet, list(trainer.sampled_configs), trainer.learning_rates)


@dataclass
class TrainingSession:
    """What every `shears train` (float or quantization-aware, nls/qa_training.py) sets up around its Trainer: the
    device, HF's arguments, the checkpoints folder and the checkpoint to resume from."""

    device: torch.device
    args: TrainingArguments
    precision: str
    checkpoints: Path
    resume_from: str | None

    def trainer_kwargs(self, tokenizer, examples: list[dict], eval_examples: list[dict] | None) -> dict:
        """The Trainer's arguments besides the model: data, padding collator, settings."""
        return dict(args=self.args, train_dataset=examples, eval_dataset=eval_examples or None,
                    data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                                         return_tensors="pt"))

    def finish(self, trainer: Trainer, output, write, overwrite: bool) -> None:
        """The main process writes the output folder atomically (`write(tmp)` fills it) and removes the checkpoints."""
        trainer.accelerator.wait_for_everyone()  # no rank still writes a checkpoint when the main one removes them
        if trainer.is_world_process_zero():
            with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
                write(tmp)
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()  # every process returns once the output is there


def start_session(config: ShearsConfig, examples: list[dict], output, *, eval_examples, max_steps: int | None,
                  resume: bool, seed: int, device: str, save_steps: int) -> TrainingSession:
    """Check the examples and the checkpoints folder, make HF's arguments, seed the process."""
    if not examples:
        raise ShearsError("no training examples: check --data, --tasks and --limit")
    device = resolve_device(device)
    checkpoints = checkpoint_dir(output)
    check_checkpoints(checkpoints)
    last = _last_checkpoint(checkpoints)
    if resume and last is None:
        raise ShearsError(f"--resume: no checkpoint in {checkpoints} to resume from; run without --resume")

    precision = dtype_name(resolve_dtype(config.training.precision, device))
    args = training_arguments(config, checkpoints, precision, device, max_steps=max_steps, seed=seed,
                              save_steps=save_steps, evaluate=bool(eval_examples))
    if args.world_size > 1 and device.type == "cuda":
        device = args.device  # this process's GPU (cuda:LOCAL_RANK), as the launcher's environment says
    if args.world_size > 1 and device.type == "cpu":
        _load_indexed_cpu_locations()
    set_seed(seed)  # the LoRA initialisation, the same in every process and every run with this seed
    return TrainingSession(device, args, precision, checkpoints, str(last) if resume else None)


def training_arguments(config: ShearsConfig, checkpoints: Path, precision: str, device: torch.device, *,
                       max_steps: int | None, seed: int, save_steps: int, evaluate: bool = False) -> TrainingArguments:
    """HF's arguments for the config's training settings; the launcher's own precision may not contradict them."""
    t = config.training
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
        eval_strategy="steps" if evaluate and t.eval_steps else "no",
        eval_steps=t.eval_steps or None,
        per_device_eval_batch_size=t.batch_size,
        prediction_loss_only=True,  # the loss alone: no vocabulary-wide logits gathered over the held-out set
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1,
        report_to=[],
        seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # the frozen base's inputs need no grad
        ddp_find_unused_parameters=False,  # every LoRA weight is used at every rank (a sub-adapter slices it)
        # Every buffer is a function of the frozen base, the same at every rank (rotary frequencies, the masks of
        # shears.lora.sparse_adapter: a byte per adapted weight); DDP would broadcast them all before every forward.
        ddp_broadcast_buffers=False,
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    launched_with = "fp32" if args.mixed_precision == "no" else args.mixed_precision
    if launched_with != precision:  # the launcher's ACCELERATE_MIXED_PRECISION would win over our choice
        raise ShearsError(
            f"the launcher asks for mixed precision {args.mixed_precision!r} (ACCELERATE_MIXED_PRECISION, e.g. from an "
            f"accelerate config) but shears.training.precision gives {precision}; set mixed_precision: \"no\" in the "
            "accelerate config and choose the precision in the shears config"
        )
    return args


def run_record(config: ShearsConfig, trainer: Trainer, run, losses: list[float], session: TrainingSession,
                max_steps: int | None, seed: int, *, groups: list[str], search_space, build_seconds: float) -> dict:
    """What the manifest says of the training itself: its settings as they ran, its groups, steps and losses."""
    t, args = config.training, session.args
    return {
        "config": config.raw,
        "groups": groups,
        "search_space": search_space,
        "settings": {**vars(t), "max_steps": max_steps, "seed": seed, "device": str(args.device),
                     "precision": session.precision,
                     "world_size": args.world_size, "global_batch": t.batch_size * t.grad_accum * args.world_size,
                     "distributed_backend": torch.distributed.get_backend() if args.world_size > 1 else None},
        "optimizer_steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "supernet_build_seconds": round(build_seconds, 2),
        "train_seconds": round(run.metrics["train_runtime"], 1),  # this run's; a resumed one's last leg
    }


@functools.cache
def _load_indexed_cpu_locations() -> None:
    """Let `torch.load` map to 'cpu:0'. On CPU, accelerate gives every process of a multi-process run the
    device cpu:0, and the Trainer resuming such a run loads the optimizer state with that device as its
    `map_location`, which torch's own CPU loader (it knows only 'cpu') refuses. Registered through torch's
    public hook for device tags, once per process, and only in such a run: it never tags what is saved."""
    torch.serialization.register_package(11, lambda obj: None, lambda storage, location: storage if location.startswith("cpu:") else None)


def _last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if folder.is_dir() and (found := get_last_checkpoint(str(folder))) else None

