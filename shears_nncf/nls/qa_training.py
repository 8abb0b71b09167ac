"""`shears train` with `shears.quantization`: NLS inside NNCF's INT4 fake quantizers (quantization_aware.py).

The float path's records, tokens, Trainer settings, checkpoints and output folder (training.py: `start_session`,
`NLSTrainer`), with three differences, all in `QATrainer`: the sub-adapter of each micro-batch is set on the
quantizers by `sample_sub_adapter` (the BootstrapNAS path's draw, so one seed trains the same ranks on both paths);
the optimizer trains the adapters and the quantization ranges (`trainable_parameters`, ranges at lr / 10); and the
learning rate is HF's cosine without warm-up, the curve NNCF's stage schedule gives the float path (from the
config's lr to 0 over the run), since there is no BootstrapNAS controller here. NNCF's LoRA has no scaling (s = 1)
and no dropout, so `shears.lora.alpha` and `dropout` do not apply.

The folder is a `shears train` folder (`SuperAdapter`) whose manifest's `quantization` says so; instead of PEFT's
files it holds `QA_STATE`: every LoRA quantizer's state (adapters at r_max, ranges) by module path, and the
calibration token ids NNCF traced. `load_qa_model` rebuilds the trained model from it: the sparse base, compressed
again on those ids (the same linears quantized, the same adapters), the state loaded.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import Trainer

from ..config import AdapterGroups, ShearsConfig, nncf_config_dict
from ..errors import ShearsError
from .folder import QA_STATE, SuperAdapter, TrainingInputs
from .space import SearchSpace
from .training import NLSTrainer, TrainResult, run_record, sub_adapter_log_file, start_session
from .quantization_aware import (
    adapter_groups, compress_for_qa, lora_quantizers, sample_sub_adapter, set_group_ranks, trainable_parameters,
)

# NNCF traces the model on these (and, with ratio < 1, picks the linears that stay float): a few windows suffice.
CALIBRATION = {"source": "default", "nsamples": 8, "seed": 0}
_CALIBRATION_KEY = "calibration"  # QA_STATE's tensor of those token ids (n x T); every other key is `path.state`


class QATrainer(NLSTrainer):
    """`NLSTrainer` on the quantization-aware model: ranks set on NNCF's quantizers, HF's cosine schedule."""

    elastic = True

    def __init__(self, *args, groups: AdapterGroups, **kwargs):
        super().__init__(*args, supernet=None, **kwargs)
        self.groups = groups

    def activate_random(self, micro_batch: int) -> list[int]:
        return sample_sub_adapter(self.model, self.groups, self.args.seed, micro_batch)

    def activate_heuristic(self) -> None:
        set_group_ranks(self.model, self.groups, SearchSpace.of(self.groups.widths).heuristic)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        return Trainer.create_scheduler(self, num_training_steps, optimizer)  # cosine to 0, warmup_steps 0


def train_qa(model: torch.nn.Module, tokenizer, config: ShearsConfig, examples: list[dict], output, *,
             eval_examples: list[dict] | None = None, max_steps: int | None = None, resume: bool = False,
             seed: int = 42, device: str = "auto", save_steps: int = 200, inputs: TrainingInputs = TrainingInputs(),
             overwrite: bool = False) -> TrainResult:
    """`training.train` for a config with `shears.quantization`: compress the sparse base for QA at r_max, train,
    write the folder. Returns the result with `supernet` None."""
    from ..data.calibration import calibration_samples

    q = config.quantization
    session = start_session(config, examples, output, eval_examples=eval_examples, max_steps=max_steps,
                            resume=resume, seed=seed, device=device, save_steps=save_steps)
    calibration = calibration_samples(CALIBRATION["source"], tokenizer, CALIBRATION["nsamples"],
                                      config.training.max_length, CALIBRATION["seed"])
    start = time.perf_counter()
    model = _compress(model.to(session.device), config, calibration)
    compress_seconds = time.perf_counter() - start
    groups = adapter_groups(model, config)
    optimizer = torch.optim.AdamW(trainable_parameters(model, config.training.lr),
                                  weight_decay=config.training.weight_decay)
    with sub_adapter_log_file(session.args.process_index) as log:
        trainer = QATrainer(model=model, groups=groups, sub_adapter_log=log, optimizers=(optimizer, None),
                            **session.trainer_kwargs(tokenizer, examples, eval_examples))
        run = trainer.train(resume_from_checkpoint=session.resume_from)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    def write(tmp: Path) -> None:
        _save_state(model, calibration, tmp / QA_STATE)
        SuperAdapter.write(tmp, inputs, nncf_config=nncf_config_dict(config, groups, config.training.max_length),
                           training_log=trainer.state.log_history, run={
                               "lora_only": False, "examples": len(examples),
                               "quantization": {**asdict(q), "calibration": {**CALIBRATION,
                                                                             "seqlen": config.training.max_length}},
                               **run_record(config, trainer, run, losses, session, max_steps, seed,
                                             groups=groups.names, search_space=[list(w) for w in groups.widths],
                                             build_seconds=compress_seconds),
                           })

    session.finish(trainer, output, write, overwrite)
    return TrainResult(Path(output), trainer.state.global_step, losses, None, list(trainer.sampled_configs),
                       trainer.learning_rates)


def load_qa_model(base: str | os.PathLike, trained) -> tuple[torch.nn.Module, AdapterGroups]:
    """The trained quantization-aware model of a folder, rebuilt on the sparse `base`: (model, groups), in eval mode,
    at the maximal sub-adapter. `trained`: the `SuperAdapter`, or a folder object with the same `path`, `config`,
    `quantization`, `group_names` and `weights_file` (a QA_STATE), as export.sub_adapter's `QASubAdapter`."""
    from safetensors.torch import load_file

    from ..models import load_model

    state = load_file(trained.weights_file)
    calibration = list(state.pop(_CALIBRATION_KEY).split(1))
    model = _compress(load_model(base), trained.config, calibration)
    by_path: dict[str, dict] = {}
    for key, tensor in state.items():
        path, _, name = key.rpartition(".")
        by_path.setdefault(path, {})[name] = tensor
    quantizers = lora_quantizers(model)
    if set(by_path) != set(quantizers):
        raise ShearsError(f"{trained.path}: its quantized linears ({len(by_path)}) are not this base's ({len(quantizers)}) "
                          f"at {trained.quantization['mode']}, ratio {trained.quantization['ratio']}; give the sparse "
                          "base it was trained on")
    for path, quantizer in quantizers.items():
        try:
            quantizer.load_state_dict(by_path[path])
        except RuntimeError as e:
            raise ShearsError(f"{trained.path}: the state of {path} does not fit this base ({str(e).splitlines()[-1].strip()}); "
                              "give the sparse base it was trained on") from None
    groups = adapter_groups(model, trained.config)
    if groups.names != trained.group_names:
        raise ShearsError(f"the groups of {trained.path} do not match this model's; is it the same base model?")
    set_group_ranks(model, groups, [w[0] for w in groups.widths])
    return model.eval(), groups


@dataclass
class QASupernet:
    """A trained quantization-aware model as the search's objectives drive a supernet: `activate` a sub-adapter (its
    ranks on the quantizers), run `peft_model` (here the model itself) under `untraced` (nothing to switch off:
    NNCF's function hooks trace nothing at run time)."""

    peft_model: torch.nn.Module
    groups: AdapterGroups

    def activate(self, ranks) -> None:
        set_group_ranks(self.peft_model, self.groups, ranks)

    @contextlib.contextmanager
    def untraced(self):
        yield self.peft_model


def open_qa_super_adapter(trained: SuperAdapter, base: str | os.PathLike) -> tuple[QASupernet, object]:
    """The quantization-aware super-adapter rebuilt on `base` for the search, and the base's tokenizer."""
    from ..models import load_tokenizer

    return QASupernet(*load_qa_model(base, trained)), load_tokenizer(base)


def _compress(model: torch.nn.Module, config: ShearsConfig, calibration: list[torch.Tensor]) -> torch.nn.Module:
    q = config.quantization
    device = next(model.parameters()).device
    return compress_for_qa(model, [ids.to(device) for ids in calibration], rank=config.lora.r,
                           target_modules=config.lora.target_modules, mode=q.mode, group_size=q.group_size,
                           ratio=q.ratio, mask_update=q.mask_update)


def _save_state(model: torch.nn.Module, calibration: list[torch.Tensor], path: Path) -> None:
    """Every LoRA quantizer's state (the masked class is made at run time: tensors, never pickles) and the ids."""
    from safetensors.torch import save_file

    state = {f"{path_}.{name}": tensor.detach().cpu().contiguous()
             for path_, quantizer in lora_quantizers(model).items() for name, tensor in quantizer.state_dict().items()}
    state[_CALIBRATION_KEY] = torch.cat([ids.cpu() for ids in calibration])
    save_file(state, path, metadata={"format": "pt"})
