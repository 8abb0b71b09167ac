"""`shears train --dry-run`: what training a config on a model would hold in memory, from the model's config alone.

The model is built on the meta device (shapes, no weights read, no memory), the MPT split and PEFT's
LoRA injection are applied as training applies them, and the trainable parameters are counted. The peak
memory of one training device is estimated as the sum of:

- base weights: every parameter of the model at the load dtype (frozen: no gradients, no optimizer state);
- LoRA weights, their gradients and AdamW's two moments: 4 x the trainable parameters, in fp32 (PEFT
  keeps adapters in fp32 under a half-precision base);
- activations autograd keeps for the backward pass, per decoder layer and token of a micro-batch of
  `batch_size` x `max_length` tokens, in the load dtype: about 12 x hidden (norms, attention inputs and
  outputs with a fused SDPA kernel, residuals) + 4 x intermediate (the MLP's gate, up, activation and
  product) + the input features of every adapted linear (PEFT applies LoRA dropout to a copy of the input);
  a model whose attention is not fused (`eager`, e.g. HF's MPT) also keeps its attention scores, their fp32
  softmax and the probabilities: heads x length^2 x (2 x dtype + 4 bytes) per sequence;
  with `gradient_checkpointing`, only each layer's input (hidden per token) plus one layer's full set;
- the logits and their log-softmax in fp32: 2 x vocabulary per token.

Not counted: the CUDA context and kernels (about 0.5-1 GiB), allocator fragmentation, temporary buffers
of the backward pass. It is an estimate for choosing a GPU, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ShearsConfig, check_target_modules
from ..models import dtype_name, meta_model
from .mpt import prepare_for_adapters

GIB = 2**30
_FP32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    model_type: str
    layers: int
    total_parameters: int
    trainable_parameters: int
    dtype: torch.dtype
    tokens: int  # per micro-batch: batch_size x max_length
    weights_bytes: int
    adapter_bytes: int  # LoRA weights + gradients + AdamW moments
    activation_bytes: int
    logits_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.adapter_bytes + self.activation_bytes + self.logits_bytes

    def describe(self) -> str:
        rows = [
            (f"base weights ({dtype_name(self.dtype)})", self.weights_bytes),
            ("LoRA weights, gradients, AdamW moments (fp32)", self.adapter_bytes),
            (f"activations ({self.layers} layers x {self.tokens} tokens)", self.activation_bytes),
            ("logits and log-softmax (fp32)", self.logits_bytes),
        ]
        share = 100 * self.trainable_parameters / self.total_parameters
        return "\n".join([
            f"trainable parameters: {self.trainable_parameters:,} ({share:.2f}% of {self.total_parameters:,})",
            f"estimated peak memory: {self.peak_bytes / GIB:.1f} GiB",
            *[f"  {name}: {size / GIB:.2f} GiB" for name, size in rows],
        ])


def estimate_training_memory(model_config, config: ShearsConfig, dtype: torch.dtype) -> MemoryEstimate:
    """Trainable parameters and the peak memory estimate of training `config` on the model `model_config` describes."""
    from peft import get_peft_model

    from .supernet import lora_config

    model = prepare_for_adapters(meta_model(model_config))
    check_target_modules(model, config.lora.target_modules, config.source)
    total = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)
    peft_model = get_peft_model(model, lora_config(config), low_cpu_mem_usage=True)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)

    hidden = model_config.hidden_size
    intermediate = getattr(model_config, "intermediate_size", None) or model_config.expansion_ratio * hidden  # MPT
    layers = model_config.num_hidden_layers
    adapted = _adapted_linears(peft_model)
    adapted_inputs_per_layer = sum(m.in_features for m in adapted) // layers
    tokens = config.training.batch_size * config.training.max_length
    element = torch.finfo(dtype).bits // 8
    per_token_layer = 12 * hidden + 4 * intermediate + adapted_inputs_per_layer
    layer_bytes = tokens * per_token_layer * element
    if model.config._attn_implementation == "eager":
        length = config.training.max_length
        layer_bytes += config.training.batch_size * model_config.num_attention_heads * length**2 * (2 * element + _FP32)
    if config.training.gradient_checkpointing:
        activations = tokens * layers * hidden * element + layer_bytes
    else:
        activations = layers * layer_bytes
    return MemoryEstimate(
        model_type=model_config.model_type,
        layers=layers,
        total_parameters=total,
        trainable_parameters=trainable,
        dtype=dtype,
        tokens=tokens,
        weights_bytes=total * element,
        adapter_bytes=4 * trainable * _FP32,
        activation_bytes=activations,
        logits_bytes=2 * tokens * model_config.vocab_size * _FP32,
    )


def _adapted_linears(peft_model: nn.Module) -> list[nn.Linear]:
    """The base linears that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [m.get_base_layer() for m in peft_model.modules() if isinstance(m, LoraLayer)]
