"""Quantization-aware NLS: the super-adapter trained inside NNCF's INT4 fake quantizers, deployed as packed INT4.

`nncf.compress_weights(..., compression_format=FQ_LORA_NLS)` puts a fake quantizer with a LoRA inside on every
compressed weight (`AsymmetricLoraNLSQuantizer`, `SymmetricLoraNLSQuantizer`): the weight becomes Q(W + B_r A_r),
r the quantizer's active rank, with no alpha scaling (s = 1), and `nncf.strip(..., StripFormat.DQ)` folds the
active adapter into packed integer weights. Three things are ours:

- The zeros. NNCF adds the dense B A to the sparse W, which fills every pruned zero. With `mask_update` the update
  enters masked by the base's non-zeros, Q(W + M ⊙ B_r A_r): a pruned weight reaches the quantizer as exactly 0,
  and 0 is exactly representable: NNCF's asymmetric quantizer tunes its range on every call (`TuneRange`) so that
  0 falls on a level, the zero point, and the symmetric one has no zero point. So a pruned weight is stored as its
  group's zero point and dequantizes to exactly 0, in PyTorch and in the IR.
- The groups: the Shears config's adapter groups, expanded exactly as the BootstrapNAS path expands them, each
  group's rank set on the quantizers of its linears.
- The sampling: the draw of BootstrapNAS training (`SearchSpace.sample(sub_adapter_rng(seed, micro_batch))`), so
  one seed trains the same sub-adapter at every micro-batch on either path.

Only LoRA quantizers run, whose fake quantization is pure torch. In the INT4 modes embeddings, `lm_head` and any
linear that `ratio` < 1 leaves out stay float (`BackupMode.NONE`): NNCF would otherwise give them its plain INT8
fake quantizers, which need its C++ extension (compiled on first use, minutes on a small CPU), and Shears neither
prunes nor adapts them. In INT8 mode NNCF quantizes every weight, embeddings and `lm_head` too, all with LoRA quantizers.
A weight outside the LoRA targets gets an empty (rank 0) adapter, as PEFT would put none there.

This uses NNCF's function-hook API, the one NNCF 3.x keeps, and nothing of BootstrapNAS or the legacy tracer.
NNCF 2.19 picks its tracer from NNCF_TORCH_LEGACY_TRACING at every `compress_weights` / `strip` call, and the
BootstrapNAS modules set that variable for the whole process, so our calls run with it off (`_function_hooks`).
NNCF's torch backend is imported only when a function here needs it. A process that also uses BootstrapNAS (or
`shears export`) must import that first, as shears_nncf.nncf_torch requires.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..config import AdapterGroups, ShearsConfig, check_target_modules, expand_groups
from ..errors import ShearsError
from .mpt import prepare_for_adapters
from .space import SearchSpace, sub_adapter_rng

MODES = ("int4_asym", "int4_sym", "int8_asym")  # NNCF's CompressWeightsMode names this path takes
# shears.quantization.backup: the weights the fake quantizers leave float (embeddings, head) at export, INT8 as NNCF's
# BackupMode.INT8_ASYM (the default, config.QuantizationSettings) or float
BACKUP_MODES = ("int8_asym", "none")
GROUP_SIZE = 128  # NNCF's INT4 default; a layer it does not divide gets the largest power of two (>= 32) that does
MASK = "sparse_mask"  # the buffer holding the base's non-zero mask on every masked quantizer
_LEGACY_TRACING = "NNCF_TORCH_LEGACY_TRACING"


def compress_for_qa(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    *,
    rank: int,
    target_modules: Sequence[str],
    mode: str = "int4_asym",
    group_size: int = GROUP_SIZE,
    ratio: float = 1.0,
    mask_update: bool = True,
) -> nn.Module:
    """Give every decoder linear of the (sparse) causal LM an NNCF fake quantizer with a rank-`rank` LoRA inside.

    `calibration`: token-id tensors (1 x T), traced by NNCF and, with `ratio` < 1, used to choose the linears that
    stay float. `target_modules` (PEFT's matching, e.g. q_proj): the linears that carry an adapter. `group_size`:
    inputs per INT4 scale (INT8 has one per output channel). `mask_update`: the adapter's update masked by the base's
    non-zeros, keeping its zeros; False is NNCF's dense update. Returns the model, hooked in place, base frozen."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    if mode not in MODES:
        raise ShearsError(f"quantization mode {mode!r} is not one of {', '.join(MODES)}")
    if not 0.0 < ratio <= 1.0:
        raise ShearsError(f"quantization ratio {ratio} is outside (0, 1]; give the fraction of linears to quantize")
    if not calibration:
        raise ShearsError("compress_for_qa needs at least one calibration sample (token ids) to trace the model")
    int8 = mode.startswith("int8")
    check_extension_lock()
    prepare_for_adapters(model)  # MPT: q/k/v split out of Wqkv, as the BootstrapNAS path does, so groups name them
    with _function_hooks():
        model = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode(mode), group_size=-1 if int8 else group_size, ratio=ratio,
            backup_mode=None if int8 else nncf.BackupMode.NONE,  # INT8 has no backup: every weight is INT8
            dataset=nncf.Dataset([{"input_ids": ids} for ids in calibration]),
            compression_format=nncf.CompressionFormat.FQ_LORA_NLS,
            advanced_parameters=AdvancedCompressionParameters(
                lora_adapter_rank=rank, group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
        )
    modules = dict(model.named_modules())
    for path, quantizer in lora_quantizers(model).items():
        if not _targeted(path, target_modules):
            _drop_adapter(quantizer)
        if mask_update:
            quantizer.register_buffer(MASK, modules[path].weight != 0, persistent=False)
            quantizer.__class__ = _masked(type(quantizer))
    return model


def lora_quantizers(model: nn.Module) -> dict[str, nn.Module]:
    """NNCF's LoRA fake quantizer of every compressed weight, by the module path of its linear."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import LoraNLSMixin

    return {decode_hook_name(name)[1].rpartition(".")[0]: hook
            for name, hook in get_hook_storage(model).named_hooks() if isinstance(hook, LoraNLSMixin)}


def adapter_groups(model: nn.Module, config: ShearsConfig) -> AdapterGroups:
    """The config's adapter groups on this model, expanded as the BootstrapNAS path expands them: by
    `config.expand_groups`, against the node names NNCF traces there for the lora_A of every LoRA target, so that
    module-name groups and node-name patterns (`{*}LlamaDecoderLayer[{layer}]/...`) give the same groups, names
    and order on both paths."""
    targets = config.lora.target_modules
    check_target_modules(model, targets, config.source)
    return expand_groups(config, [_lora_a_node(model, path) for path, module in model.named_modules()
                                  if isinstance(module, nn.Linear) and _targeted(path, targets)])


def set_group_ranks(model: nn.Module, groups: AdapterGroups, ranks: Sequence[int]) -> list[int]:
    """Activate a sub-adapter: each group's rank (one per group, from its rank list) on its linears' quantizers."""
    ranks = SearchSpace.of(groups.widths, groups.names).validate([int(r) for r in ranks])
    quantizers = lora_quantizers(model)
    for name, nodes, rank in zip(groups.names, groups.nodes, ranks):
        for path in map(_module_path, nodes):
            if path not in quantizers:
                raise ShearsError(f"group {name}: {path} has no LoRA quantizer; compress_for_qa left it float "
                                  "(ratio < 1), where it carries no adapter: quantize it (ratio 1.0) or leave it "
                                  "out of the groups")
            quantizers[path].set_active_rank(rank)
    return list(ranks)


def sample_sub_adapter(model: nn.Module, groups: AdapterGroups, seed: int, micro_batch: int) -> list[int]:
    """Activate the random sub-adapter of global micro-batch `micro_batch`: for the same seed and index, the ranks
    that BootstrapNAS training (`Supernet.activate_random(sub_adapter_rng(seed, micro_batch))`) activates."""
    space = SearchSpace.of(groups.widths, groups.names)
    return set_group_ranks(model, groups, space.sample(sub_adapter_rng(seed, micro_batch)))


def trainable_parameters(model: nn.Module, lr: float) -> list[dict]:
    """Optimizer parameter groups as NNCF's QAT-with-NLS example trains: every adapter at `lr`, every quantization
    range (asymmetric: input_low and input_range; symmetric: scale) at lr / 10; the rest of the model frozen."""
    model.requires_grad_(False)
    adapters, ranges = [], []
    for quantizer in lora_quantizers(model).values():
        quantizer.enable_gradients()
        own = quantizer.get_adapters()
        adapters += [p for p in own.values() if p.numel()]
        ranges += [p for name, p in quantizer.get_trainable_params().items() if name not in own]
    return [{"params": adapters, "lr": lr}, {"params": ranges, "lr": lr / 10}]


def strip_to_int4(model: nn.Module) -> nn.Module:
    """A deployable copy: every fake quantizer folded, with its active (masked) sub-adapter, into packed integer
    weights (INT4: two a byte, per group a scale and zero point) and NNCF's decompressor, which OpenVINO's
    conversion keeps as u4 constants (`export.openvino.export_compressed`)."""
    import nncf

    with _function_hooks():
        return nncf.strip(model, do_copy=True, strip_format=nncf.StripFormat.DQ)


def check_extension_lock() -> None:
    """Refuse a stale build lock of NNCF's C++ extension before NNCF could wait on it.

    torch builds the extension (`quantized_functions_cpu`) under a lock file in its cache, held open while it builds
    and removed after; a build cut short leaves it behind, and every later load waits on it for ever (NNCF's load
    times out after NNCF_EXTENSION_LOAD_TIMEOUT, the wait goes on). A lock no process holds open is stale. This path
    never loads the extension, but any plain NNCF fake quantizer elsewhere in the process would."""
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    lock = Path(QuantizedFunctionsCPULoader.get_build_dir()) / "lock"
    if lock.exists() and not _held_open(lock):
        raise ShearsError(f"{lock} is left from a build of NNCF's C++ extension that was cut short (no process holds "
                          f"it), and NNCF would wait on it for ever: delete it (rm {lock}) and run again")


def _held_open(path: Path) -> bool:
    """Whether a process of this user holds `path` open (Linux: its /proc/<pid>/fd links)."""
    target = str(path.resolve())
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) == target:
                return True
    return False


class _MaskedUpdate:
    """Put before NNCF's LoRA-NLS quantizer class: the quantizer gets W + M ⊙ B_r A_r. NNCF's quantize function adds
    B @ A to its input itself, so it runs with the adapter emptied (rank 0) for the call: it adds nothing more."""

    def quantize(self, x: torch.Tensor, execute_traced_op_as_identity: bool = False) -> torch.Tensor:
        lora_a, lora_b = self.get_active_adapters()
        if not execute_traced_op_as_identity:
            x = x + (getattr(self, MASK) * (lora_b @ lora_a)).to(x.dtype)
        rank, self.active_lora_rank = self.active_lora_rank, 0
        try:
            return super().quantize(x, execute_traced_op_as_identity)
        finally:
            self.active_lora_rank = rank


@functools.cache
def _masked(cls: type) -> type:
    """The masked variant of one of NNCF's LoRA-NLS quantizer classes (asymmetric or symmetric)."""
    return type(f"Masked{cls.__name__}", (_MaskedUpdate, cls), {})


def _drop_adapter(quantizer: nn.Module) -> None:
    """An empty adapter: the weight is still quantized, with nothing added and nothing to train."""
    from nncf.torch.quantization.layers import PTLoraNLSSpec

    spec = quantizer._lspec
    quantizer.init_lora(PTLoraNLSSpec(0, 0, spec.orig_weight_shape, spec.weight_shape))


def _targeted(path: str, targets: Sequence[str]) -> bool:
    """PEFT's matching of `target_modules`: the module path or its last components."""
    return any(path == t or path.endswith("." + t) for t in targets)


def _lora_a_node(model: nn.Module, path: str) -> str:
    """The node name NNCF's tracer gives the lora_A of this linear in the BootstrapNAS path (PEFT's causal-LM
    wrapper, every scope `Class[attribute]`, PEFT's LoRA `Linear`, NNCF's linear inside), e.g.
    `PeftModelForCausalLM/LoraModel[base_model]/LlamaForCausalLM[model]/LlamaModel[model]/ModuleList[layers]/
    LlamaDecoderLayer[0]/LlamaAttention[self_attn]/Linear[q_proj]/ModuleDict[lora_A]/NNCFLinear[default]/linear_0`."""
    *parents, leaf = path.split(".")
    scopes, module = [f"{type(model).__name__}[model]"], model
    for name in parents:
        module = getattr(module, name)
        scopes.append(f"{type(module).__name__}[{name}]")
    return (f"PeftModelForCausalLM/LoraModel[base_model]/{'/'.join(scopes)}/Linear[{leaf}]"
            "/ModuleDict[lora_A]/NNCFLinear[default]/linear_0")


def _module_path(node: str) -> str:
    """A lora_A node name (traced or `_lora_a_node`'s) -> its linear's module path (`model.layers.0.self_attn.q_proj`):
    the scopes' attribute names below PEFT's two wrappers."""
    return ".".join(re.findall(r"\[([^\]]+)\]", node.split("/ModuleDict[lora_A]")[0])[2:])


@contextlib.contextmanager
def _function_hooks():
    """NNCF's function-hook tracer for the calls inside, whatever the process set for BootstrapNAS."""
    saved = os.environ.get(_LEGACY_TRACING)
    os.environ[_LEGACY_TRACING] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_LEGACY_TRACING)
        else:
            os.environ[_LEGACY_TRACING] = saved
