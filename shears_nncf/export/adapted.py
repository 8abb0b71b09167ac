"""The one way a base model is loaded with an adapter: for evaluation, benchmarking, export and merging alike.

An adapter is a PEFT LoRA folder (plain, or a sub-adapter `shears extract` took from a mask-aware
super-adapter, whose update is masked by the base's zeros as it was trained) or a super-adapter's
sub-network (`--super-adapter` with `--subnet`, evaluated without extracting it). MPT's fused Wqkv is split
first so that adapters on q/k/v find their modules. Every reader of an adapter goes through `load_adapted`,
so the same base and sub-adapter are the same model wherever they are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ShearsError
from ..models import load_model, load_tokenizer, resolve_model
from ..nls.folder import SuperAdapter
from ..nls.mpt import prepare_for_adapters
from ..nls.sparse_adapter import apply_sparse_adapter
from .sub_adapter import SubAdapter


@dataclass
class Adapted:
    model: nn.Module  # the base model, or a PEFT model with its adapter unmerged
    tokenizer: object
    description: str  # what was loaded, for the user
    mask_aware: bool = False  # the update is masked by the base's zeros (shears.lora.sparse_adapter)

    @property
    def peft(self) -> bool:
        return hasattr(self.model, "peft_config")


def check_adapter_source(adapter: str | os.PathLike | None = None, super_adapter: str | os.PathLike | None = None,
                         subnet: str = "heuristic"):
    """Read the adapter's folder and resolve the sub-network before any weights are loaded: bad input fails first.

    Returns the adapter's folder object and, for a super-adapter, the ranks and how they were chosen."""
    if adapter and super_adapter:
        raise ShearsError("give either --adapter or --super-adapter, not both")
    if super_adapter:
        from ..search.subnet import resolve_subnet

        trained = SuperAdapter.read(super_adapter)
        return trained, resolve_subnet(trained.space, subnet)
    return (SubAdapter.read(adapter) if adapter else None), None


def load_adapted(base: str | os.PathLike | None, adapter: str | os.PathLike | None = None, *,
                 super_adapter: str | os.PathLike | None = None, subnet: str = "heuristic",
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Adapted:
    """`base` with `adapter` (a PEFT folder) or with `super_adapter`'s `subnet` active, in `dtype` on `device`.

    `base` defaults to the one the adapter names."""
    source, chosen = check_adapter_source(adapter, super_adapter, subnet)
    if isinstance(source, SuperAdapter):
        from ..nls.supernet import open_super_adapter

        supernet, tokenizer = open_super_adapter(source, base, dtype)
        ranks = supernet.activate(list(chosen[0]))
        masked = ", update masked by the base's zeros" if source.mask_aware else ""
        return Adapted(supernet.peft_model.to(device).eval(), tokenizer,
                       f"sub-adapter {chosen[1]}: ranks {ranks}{masked}", source.mask_aware)
    base = base or (source.base_model if source else None)
    if not base:
        raise ShearsError(f"adapter {adapter} names no base model; give the base with --model")
    path = resolve_model(base)
    model, tokenizer = load_model(path, dtype=dtype), load_tokenizer(path)
    if source is None:
        return Adapted(model.to(device).eval(), tokenizer, f"model {base}")
    from peft import PeftModel

    prepare_for_adapters(model)  # MPT: the adapter names attn.q_proj/k_proj/v_proj
    source.check_fits(model)
    model = PeftModel.from_pretrained(model, str(source.path))
    description = f"model {base} + adapter {source.path}"
    if source.mask_aware:  # trained with shears.lora.sparse_adapter: this is the trained model
        apply_sparse_adapter(model)
        description += ", update masked by the base's zeros, as it was trained"
    return Adapted(model.to(device).eval(), tokenizer, description, source.mask_aware)
