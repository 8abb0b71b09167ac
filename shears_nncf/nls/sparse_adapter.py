"""Mask-aware adapters (SQFT's SparsePEFT): the LoRA update masked by the sparse base's non-zeros.

Plain LoRA on a sparse base W computes W x + s B A x: its update s B A is dense, so the sparse merge of
`shears extract --merge` (W' = W + M ⊙ s B A, M the base's non-zero mask) is not the model that was
trained. With `shears.lora.sparse_adapter` every adapted module computes W x + (M ⊙ s B_r A_r) x instead,
r the rank its sub-adapter gives it, in training, search and `evaluate --super-adapter` alike; the masked
merge then writes exactly the model that was trained.

It plugs into PEFT as a LoRA variant, PEFT's own extension point (DoRA is one): PEFT's `Linear.forward`
hands the adapter branch to `MaskedLoraVariant.forward`. The branch multiplies A and B itself, so it
applies NNCF's elastic width itself: lora_A's pre-op, an elastic output-width op, holds the active rank r,
and the sub-adapter is the prefix A[:r], B[:, :r], which is what NNCF's ops slice from lora_A's rows and
lora_B's columns. M is a non-persistent buffer taken once from the frozen base (weight != 0): nothing
extra is saved, and it follows the module across devices; it costs a byte per adapted base weight.
Every forward forms the out x in product B_r A_r of every module, as SQFT's does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora.layer import LoraVariant

from shears_nncf import nncf_torch  # noqa: F401  (legacy tracing must be on before nncf.torch is used)

from nncf.experimental.torch.nas.bootstrapNAS.elasticity.elastic_width import ElasticOutputWidthOp

from ..errors import ShearsError

MASK = "sparse_adapter_mask"  # the buffer of every masked module


def active_rank(lora_a: torch.nn.Module) -> int:
    """The rank NNCF's elastic width gives this lora_A now (its output-width pre-op's active width); its whole
    rank where it has no such op (a plain LoRA, an extracted sub-adapter)."""
    for op in getattr(lora_a, "pre_ops", {}).values():
        if isinstance(op.operand, ElasticOutputWidthOp):
            return op.operand.get_active_width()
    return lora_a.weight.shape[0]


def masked_delta(module: LoraLinear, adapter: str) -> torch.Tensor:
    """M ⊙ (s · B_r A_r): the update the active sub-adapter of `adapter` applies to this module's weight."""
    lora_a, lora_b = module.lora_A[adapter], module.lora_B[adapter]
    rank = active_rank(lora_a)
    return (lora_b.weight[:, :rank] @ lora_a.weight[:rank]) * getattr(module, MASK) * module.scaling[adapter]


class MaskedLoraVariant(LoraVariant):
    """PEFT's adapter branch with the update masked: x -> (M ⊙ s B_r A_r) dropout(x). Merging adds the same
    masked update to the base weight, so a merged model equals the unmerged one."""

    def supports_lora_conversion(self) -> bool:
        return False  # a masked update is not a product of two low-rank factors

    @staticmethod
    def forward(module, active_adapter, x, result, **kwargs):
        return result + F.linear(module.lora_dropout[active_adapter](x), masked_delta(module, active_adapter))

    @staticmethod
    def merge_safe(module, active_adapter, orig_weight):
        return orig_weight + masked_delta(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module, active_adapter, orig_weight):
        orig_weight.data += masked_delta(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module, active_adapter, orig_weight):
        return orig_weight.data - masked_delta(module, active_adapter).to(orig_weight.dtype)


def apply_sparse_adapter(peft_model: torch.nn.Module) -> int:
    """Mask the update of every LoRA module of `peft_model` by its base's non-zeros; returns how many modules.

    Call it after NNCF traced the model: the masked branch calls neither lora_A nor lora_B, whose nodes
    NNCF has to find to make them elastic."""
    count = 0
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear) or module.fan_in_fan_out or module.lora_variant:
            raise ShearsError(f"{name}: shears.lora.sparse_adapter masks plain LoRA on nn.Linear layers only, "
                              f"not {type(module).__name__} or a LoRA variant such as DoRA")
        module.register_buffer(MASK, module.get_base_layer().weight != 0, persistent=False)
        for adapter in module.lora_A:
            module.lora_variant[adapter] = MaskedLoraVariant()
        count += 1
    if not count:
        raise ShearsError("shears.lora.sparse_adapter: the model has no LoRA module to mask")
    return count
