"""The tokens a mixture-of-experts block routes to each expert, as its experts' matmuls see them.

Wanda scores an expert's weight with the norms of the inputs that expert actually receives. transformers 5 keeps the
experts as 3-D tensors and multiplies each routed token group by one slice, `F.linear(x, W[e])` (Mixtral, Qwen-MoE,
OLMoE, GraniteMoE) or `x @ W[e]` (GPT-OSS), in its eager implementation. A torch function mode watches those calls
while a block runs and recognises a slice by its storage, so no family needs code of its own; the routing
itself, top-k and all, is the model's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ShearsError
from ..models import ExpertTensor

# By name, whether the weight is the transposed operand: F.linear(x, W) takes (out, in), x @ W takes (in, out). Names,
# not the functions themselves: once nncf.torch is imported, torch.nn.functional.linear is NNCF's wrapper of it.
_MATMULS = {"linear": False, "matmul": True, "__matmul__": True}


class RoutedInputs(TorchFunctionMode):
    """Inside `with`: per expert of each 3-D tensor, the sum of squares per input channel of the rows it multiplied
    (a float64 running total); an expert the router never chose keeps zeros."""

    def __init__(self, experts: dict[str, ExpertTensor]):
        super().__init__()
        self.experts = experts
        self._by_storage = {t.weight.untyped_storage().data_ptr(): name for name, t in experts.items()}
        self.sq_norms = {name: torch.zeros(t.weight.shape[0], t.in_features, dtype=torch.float64, device=t.weight.device)
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
        rows = x.reshape(-1, x.shape[-1])
        self.sq_norms[name][expert] += rows.float().square().sum(dim=0)

    def sq_norms_by_matrix(self) -> dict[str, torch.Tensor]:
        """Keyed as `masks.pruned_matrices` names an expert's matrix: `mlp.experts.down_proj[3]`."""
        return {f"{name}[{e}]": norms for name, all_norms in self.sq_norms.items() for e, norms in enumerate(all_norms)}


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
