"""The elastic-LoRA super-adapter: PEFT LoRA at the largest rank, made rank-elastic by NNCF BootstrapNAS.

Each group of `lora_A` linears gets NNCF's elastic output width (its first r rows), and NNCF's mask
propagation trims the matching input columns of `lora_B`, so a sub-adapter is the nested prefix
`lora_A[:r], lora_B[:, :r]` with PEFT's scaling `alpha / r_max` left as it is. Stock BootstrapNAS
needs two narrow changes (frozen base weights allowed; elastic input-width ops only where a sub-adapter
can change the width), made in `bootstrapnas.py`, the one module that touches NNCF internals.

Training and scoring then run the model outside NNCF's per-op tracing (`Supernet.untraced`): the
elastic ops are pre-ops of the lora modules, which run on every call, traced or not. With
`shears.lora.sparse_adapter` the update is masked by the base's zeros (`sparse_adapter.py`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import time
import types
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from shears_nncf import nncf_torch  # noqa: F401  (legacy tracing must be on before nncf.torch is used)

from nncf import NNCFConfig
from nncf.torch.model_creation import create_nncf_network

from ..config import AdapterGroups, ShearsConfig, check_target_modules, expand_groups, nncf_config_dict
from ..errors import ShearsError
from .bootstrapnas import LoRAProgressiveShrinkingBuilder
from .folder import ADAPTER_WEIGHTS, SuperAdapter
from .mpt import prepare_for_adapters
from .space import SearchSpace
from .sparse_adapter import apply_sparse_adapter

_TRACE_LENGTH = 16  # tokens of the dummy input NNCF traces; the traced graph does not depend on it


class Supernet:
    """A PEFT LoRA model whose groups of adapters take a rank each; `activate` picks the sub-adapter.

    A configuration is a list of ranks, one per group, in the order of `group_names` / `search_space`.
    With `elastic=False` (plain LoRA baseline) there is no NNCF and the adapter always runs at full rank.
    """

    def __init__(self, model: nn.Module, config: ShearsConfig, groups: AdapterGroups | None, ctrl, nncf_config: dict | None):
        self.peft_model = model  # extended in place by NNCF when elastic
        self.config = config
        self.groups = groups
        self.ctrl = ctrl  # NNCF ProgressiveShrinkingController, None for plain LoRA
        self.nncf_config = nncf_config  # the expanded config NNCF was built from
        self.build_seconds = 0.0

    @property
    def elastic(self) -> bool:
        return self.ctrl is not None

    @property
    def group_names(self) -> list[str]:
        return list(self.groups.names) if self.groups else []

    @property
    def search_space(self) -> list[list[int]]:
        space = self._width().get_search_space()
        return [list(space[i]) for i in range(len(space))]

    @property
    def active_config(self) -> list[int]:
        active = self._width().get_active_config()
        return [active[i] for i in range(len(active))]

    def activate(self, ranks: Sequence[int] | Mapping[str, int]) -> list[int]:
        """Activate explicit ranks: a list (one per group) or a mapping from group name to rank."""
        space = self.search_space
        if isinstance(ranks, Mapping):
            unknown = set(ranks) - set(self.group_names)
            if unknown:
                raise ShearsError(f"unknown adapter group(s) {sorted(unknown)[:3]}; groups are e.g. {self.group_names[:3]}")
            ranks = [ranks.get(name, options[0]) for name, options in zip(self.group_names, space)]
        ranks = [int(r) for r in ranks]
        if len(ranks) != len(space):
            raise ShearsError(f"a configuration needs {len(space)} ranks (one per group), got {len(ranks)}")
        for name, rank, options in zip(self.group_names, ranks, space):
            if rank not in options:
                raise ShearsError(f"rank {rank} is not in the search space {options} of group {name}")
        self._width().activate_subnet_for_config(dict(enumerate(ranks)))
        return ranks

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.of(self.search_space, self.group_names)

    def activate_maximal(self) -> list[int]:
        return self.activate(self.space.maximal)

    def activate_minimal(self) -> list[int]:
        return self.activate(self.space.minimal)

    def activate_heuristic(self) -> list[int]:
        return self.activate(self.space.heuristic)

    def activate_random(self, rng: random.Random = random) -> list[int]:
        """A uniformly random rank per group, as NNCF's `get_random_config` draws it; training passes its
        own `rng` so that every process draws the same (see nls/training.py), others use the global one."""
        return self.activate(self.space.sample(rng))

    def start_schedule(self, optimizer: torch.optim.Optimizer | None, steps_per_epoch: float) -> None:
        """NNCF's order: give the controller the optimizer, then `epoch_step()` enters the (only) stage and
        enables the width elasticity. Training passes its optimizer; loading for search a throwaway one."""
        if optimizer is None:
            optimizer = torch.optim.SGD([p for p in self.peft_model.parameters() if p.requires_grad], lr=0.0)
        self.ctrl.set_training_lr_scheduler_args(optimizer, steps_per_epoch)
        self.ctrl.scheduler.epoch_step()

    @contextlib.contextmanager
    def untraced(self):
        """Calls of the model inside run its own forward, not NNCF's tracing wrapper around it.

        NNCF traced the graph once at build time and re-traces it only on `rebuild_graph`; its elastic
        ops are pre-ops of the lora modules, which NNCF modules run on every call. So tracing every op
        of every step buys nothing here and costs 5-15% of a training step on SmolLM2. The override
        is a bound method set on the instance, as accelerate's mixed-precision wrapper expects to find
        it, and wrappers that call the model (DDP) go through it too."""
        if not self.elastic:
            yield self.peft_model
            return
        with _quiet_nncf():  # NNCF warns on any `forward` assignment; this one is scoped and tested
            self.peft_model.forward = types.MethodType(self.peft_model.nncf.get_original_unbound_forward(), self.peft_model)
        try:
            yield self.peft_model
        finally:
            vars(self.peft_model).pop("forward", None)  # whatever wrapped it meanwhile goes too

    def _width(self):
        if not self.elastic:
            raise ShearsError("this is a plain LoRA model (--lora-only): it has no elastic ranks to activate")
        return self.ctrl.multi_elasticity_handler.width_handler


def lora_config(config: ShearsConfig):
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
        bias="none", task_type="CAUSAL_LM",
    )


def build_supernet(model: nn.Module, config: ShearsConfig, elastic: bool = True) -> Supernet:
    """Freeze the (sparse) base, add LoRA at r = the largest rank and, if elastic, make the ranks elastic."""
    from peft import get_peft_model

    start = time.perf_counter()
    prepare_for_adapters(model)
    check_target_modules(model, config.lora.target_modules, config.source)
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, lora_config(config))
    if not elastic:
        supernet = Supernet(peft_model, config, None, None, None)
    else:
        with _quiet_nncf():
            network = create_nncf_network(peft_model, NNCFConfig.from_dict(_input_info()))
            names = [node.node_name for node in network.nncf.get_original_graph().get_all_nodes()]
            groups = expand_groups(config, names)
            expanded = nncf_config_dict(config, groups, _TRACE_LENGTH)
            builder = LoRAProgressiveShrinkingBuilder(NNCFConfig.from_dict(_nncf_part(expanded)), config.frozen_layers_allowed)
            network = builder.apply_to(network)
            ctrl = builder.build_controller(network)
            network.nncf.rebuild_graph()
        supernet = Supernet(network, config, groups, ctrl, expanded)
    if config.lora.sparse_adapter:  # only now: NNCF traced the plain branch, whose lora_A / lora_B it makes elastic
        apply_sparse_adapter(supernet.peft_model)
    supernet.build_seconds = time.perf_counter() - start
    return supernet


def _input_info() -> dict:
    return {"input_info": [{"sample_size": [1, _TRACE_LENGTH], "type": "long", "keyword": "input_ids"}]}


def _nncf_part(expanded: dict) -> dict:
    """What NNCF's own schema accepts: without our sections and our `frozen_layers_allowed` key."""
    nncf_dict = {k: v for k, v in copy.deepcopy(expanded).items() if k not in ("shears", "comment")}
    nncf_dict["bootstrapNAS"]["training"].pop("frozen_layers_allowed", None)
    return nncf_dict


class _quiet_nncf:
    """NNCF logs every frozen layer and elastic op at INFO/WARNING; keep build output readable."""

    def __enter__(self):
        self._logger = logging.getLogger("nncf")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)


def save_super_adapter(supernet: Supernet, folder: str | os.PathLike) -> None:
    """Write the super-adapter's PEFT files (r = largest rank); `SuperAdapter.write` adds the rest."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    peft_model = supernet.peft_model
    state = get_peft_model_state_dict(peft_model)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items() if k.endswith(".weight")}
    save_file(state, folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    peft_model.peft_config["default"].save_pretrained(folder)


def load_super_adapter(folder: str | os.PathLike | SuperAdapter, model: nn.Module | None = None) -> Supernet:
    """Rebuild the trained supernet of a `shears train` folder on its base model (or the one given)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..models import load_model

    trained = folder if isinstance(folder, SuperAdapter) else SuperAdapter.read(folder)
    if model is None:
        model = load_model(trained.base_model)
    supernet = build_supernet(model, trained.config, elastic=not trained.lora_only)
    if supernet.elastic and supernet.groups.nodes != trained.group_nodes:
        raise ShearsError(f"the groups of {trained.path} do not match this model's traced graph; is it the same base model?")
    result = set_peft_model_state_dict(supernet.peft_model, load_file(trained.weights_file))
    if getattr(result, "unexpected_keys", None):
        raise ShearsError(f"{trained.path}: adapter weights {result.unexpected_keys[:2]} do not fit the model")
    if supernet.elastic:
        supernet.start_schedule(None, steps_per_epoch=1)
        supernet.activate_maximal()
    return supernet


def open_super_adapter(folder: str | os.PathLike | SuperAdapter, model: str | None = None,
                       dtype: torch.dtype = torch.float32):
    """The trained supernet on its base model (the manifest's, unless `model` names another), loaded in `dtype`,
    and its tokenizer."""
    from ..models import load_model, load_tokenizer

    trained = folder if isinstance(folder, SuperAdapter) else SuperAdapter.read(folder)
    base = model or trained.base_model
    return load_super_adapter(trained, load_model(base, dtype=dtype)), load_tokenizer(base)
