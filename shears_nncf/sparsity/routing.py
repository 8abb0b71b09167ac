"""The tokens a mixture-of-experts block routes to each expert, as its experts' matmuls see them.

A pruner's statistic of an expert's matrix (Wanda's channel norms, SparseGPT's Hessian) is taken over the inputs that
expert actually receives. transformers 5 keeps the experts as 3-D tensors and multiplies each routed token group by
one slice, `F.linear(x, W[e])` (Mixtral, Qwen-MoE, OLMoE, GraniteMoE) or `x @ W[e]` (GPT-OSS), in its eager
implementation. A torch function mode watches those calls while a block runs and recognises a slice by its storage,
so no family needs code of its own; the routing itself, top-k and all, is the model's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ShearsError
from ..models import ExpertTensor

# By name, whether the weight is the transposed operand: F.linear(x, W) takes (out, in), x @ W takes (in, out). Names,
# not the functions themselves: once nncf.torch is imported, torch.nn.functional.linear is NNCF's wrapper of it.
_MATMULS = {"linear": False, "matmul": True, "__matmul__": True}


class RoutedInputs(TorchFunctionMode):
    """Inside `with`: one accumulator per expert of each 3-D tensor, made by `new(in_features, weight)`, is fed the
    rows that expert multiplies (`.add(rows)`); one the router never chose is fed nothing. The same accumulators
    as a block's linears get from their forward hooks (`blockwise.block_statistics`), so each pruner's statistic is
    declared once for both."""

    def __init__(self, experts: dict[str, ExpertTensor], new: Callable):
        super().__init__()
        self.experts = experts
        self._by_storage = {t.weight.untyped_storage().data_ptr(): name for name, t in experts.items()}
        self.statistics = {name: [new(t.in_features, t.weight) for _ in range(t.weight.shape[0])]
                           for name, t in experts.items()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if name in _MATMULS and len(args) >= 2 and self._by_storage:
            self._record(args[0], args[1], transposed=_MATMULS[name])
        return func(*args, **kwargs)

    def _record(self, x, weight, transposed: bool) -> None:
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            return
        name = self._by_storage.get(weight.untyped_storage().data_ptr())
        if name is None:
            return
        tensor = self.experts[name]
        if transposed != tensor.transposed:
            raise ShearsError(f"the expert tensor {name} {tuple(tensor.weight.shape)} is multiplied as "
                              f"{'(in, out)' if transposed else '(out, in)'}, not as its module declares; its layout "
                              "is one this pruner cannot tell apart")
        expert = (weight.storage_offset() - tensor.weight.storage_offset()) // tensor.weight.stride(0)
        self.statistics[name][expert].add(x)

    def by_matrix(self) -> dict:
        """Keyed as `masks.pruned_matrices` names an expert's matrix: `mlp.experts.down_proj[3]`."""
        return {f"{name}[{e}]": stat for name, stats in self.statistics.items() for e, stat in enumerate(stats)}


@contextmanager
def eager_experts(model: nn.Module):
    """Run the experts in transformers' eager implementation (one matmul per expert, which `RoutedInputs` sees)
    rather than a fused grouped matmul; the same numbers, and the model's own setting is put back afterwards."""
    own = getattr(model.config, "_experts_implementation", None)
    if own in (None, "eager") or not hasattr(model, "set_experts_implementation"):
        yield
        return
    model.set_experts_implementation("eager")
    try:
        yield
    finally:
        model.set_experts_implementation(own)
