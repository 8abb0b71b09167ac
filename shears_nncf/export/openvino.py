"""The sparse base plus an *unmerged* sub-adapter, exported to an OpenVINO IR with a stateful KV cache.

Merging a dense `B @ A` into the sparse `W` would fill every pruned zero, so the LoRA branches travel
as their own small MatMuls next to the sparse base MatMul (`shears extract --merge` instead folds them
in masked by the base's zeros: `merge.py`). optimum-intel does the conversion (on the
PEFT-injected transformers model), openvino-tokenizers converts the tokenizer, so both
`optimum.intel.OVModelForCausalLM` and `openvino_genai.LLMPipeline` run the folder. NNCF then
optionally compresses the weights: INT8 symmetric (a pruned zero stays an exact zero, no zero point),
W8A8 (`nncf.quantize`, INT8 weights and activations: what OpenVINO's CPU sparse-weights kernels need),
or INT4 weight-only (`nncf.compress_weights` INT4_ASYM, the usual CPU deployment of LLMs: a pruned zero
is stored as its group's zero point, so it stays an exact zero, but no INT4 kernel skips it).
The manifest records the zeros found in the IR's own weight constants, layer by layer.
With run-time adapters the base is exported alone and each sub-adapter is a file beside it that OpenVINO
GenAI applies per call (`runtime_adapters.py`): one IR for every sub-adapter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..artifacts import StageFolder, atomic_output_dir, write_manifest
from ..data.calibration import calibration_samples, check_calibration_source
from ..errors import ShearsError
from ..models import dtype_name, is_router, load_model_config, num_experts, resolve_dtype, resolve_model
from ..nls.mpt import prepare_for_adapters
from . import INT4_MODES, IR_BIN, IR_XML, TOKENIZER_XML, WEIGHT_FORMATS
from .adapted import load_adapted
from .optimum_gate import export_configs
from .runtime_adapters import BASE_ALONE, check_runtime_adapters, write_runtime_adapters

STAGE = "export"
# NNCF's own INT4 defaults (`get_weight_compression_configuration`), also optimum-intel's default 4-bit config:
# groups of 128 input channels, every eligible linear in INT4 (the rest, embeddings and lm_head, INT8_ASYM).
INT4_GROUP_SIZE, INT4_RATIO = 128, 1.0
TASK = "text-generation-with-past"
# Ops that sit between a weight Constant and its MatMul after compression or quantization.
_WEIGHT_PATH_OPS = {"Convert", "Multiply", "Subtract", "FakeQuantize", "Reshape", "Transpose"}


def export_openvino(
    model: str | os.PathLike,
    output: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    weights: str = "as-is",
    calibration: str = "default",
    nsamples: int = 32,
    seqlen: int = 128,
    int4_ratio: float = INT4_RATIO,
    group_size: int = INT4_GROUP_SIZE,
    int4_mode: str = INT4_MODES[0],
    int4_all_layers: bool = False,
    dtype: str = "auto",
    runtime_adapters: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
) -> Path:
    """Export `model` (HF folder; sparse or dense) with an optional PEFT `adapter`, unmerged, to `output`.

    `runtime_adapters` (PEFT folders, instead of `adapter`): the base is exported alone and each adapter written
    under `adapters/` for OpenVINO GenAI to apply at run time, the manifest listing each with the alpha to pass
    (`runtime_adapters.py`).

    `weights`: "as-is" (fp32 constants), "int8" (symmetric INT8 weight compression), "w8a8" (INT8
    weights and activations, calibrated on `nsamples` x `seqlen` tokens of `calibration`, read as `shears sparsify` reads it)
    or "int4" (`int4_mode`, NNCF's int4_asym or int4_sym, in groups of `group_size` inputs on `int4_ratio` of the
    linears, the rest INT8; `int4_all_layers`: the embeddings and the output head in INT4 too).
    `overwrite`: replace `output` even when shears did not write it.
    """
    WEIGHT_FORMATS[weights]  # an unknown format is a ShearsError naming the known ones
    int4 = _int4_settings(int4_ratio, group_size, int4_mode, int4_all_layers) if weights == "int4" else None
    if weights == "w8a8":
        check_calibration_source(calibration)
    if adapter is not None and runtime_adapters:
        raise ShearsError("give --adapter (baked into the IR's graph) or --runtime-adapter (applied by GenAI at run "
                          "time, several at once), not both")
    model_path = resolve_model(model)
    gate = export_configs(load_model_config(model_path), TASK)  # optimum-intel's version gate, before any work
    torch_dtype = resolve_dtype(dtype, "cpu")  # the export traces on the CPU: auto is fp32
    adapted = load_adapted(model_path, adapter, dtype=torch_dtype)
    tokenizer, torch_model, merged = adapted.tokenizer, adapted.model, False
    if runtime_adapters:
        prepare_for_adapters(torch_model)  # MPT: the adapters name attn.q_proj/k_proj/v_proj, so must the base IR
        runtime = check_runtime_adapters(runtime_adapters, torch_model)
    if adapted.mask_aware:
        # Its trained model is W + M ⊙ s B A: unmerged, the IR would add the update on pruned positions too (or
        # form the dense B A at every call). The masked merge is that model exactly, and keeps the base's zeros.
        from .merge import merge_adapted

        torch_model, merged = merge_adapted(torch_model)[0], True
        print(f"adapter {adapter} was trained mask-aware (shears.lora.sparse_adapter): exported merged into the "
              "sparse base, keeping its zeros (exact for it)")
    elif adapted.peft:
        torch_model = torch_model.base_model.model  # the transformers model with PEFT's LoRA layers, unmerged
    samples = calibration_samples(calibration, tokenizer, nsamples, seqlen) if weights == "w8a8" else None

    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        _export_ir(torch_model, tokenizer, tmp, gate, model_path)
        if weights != "as-is":
            _compress_in_place(tmp / IR_XML, weights, samples, int4)
        runtime_entries = write_runtime_adapters(runtime, tmp) if runtime_adapters else []
        OpenVINOModel.write(tmp, torch_model.config, {
            "model": str(model_path),
            "dtype": dtype_name(torch_dtype),
            "adapter": str(adapter) if adapter is not None else None,
            "adapter_merged": merged,
            "model_merged": _is_merged_model(model_path),
            "weights": weights,
            "calibration": {"source": calibration, "nsamples": len(samples), "seqlen": seqlen} if samples else None,
            "compression": int4,
            "runtime_adapters": runtime_entries,
        })
    return Path(output)


def export_compressed(model, tokenizer, output: str | os.PathLike, compression: dict, *, source: str | None = None,
                      adapter: str | None = None, overwrite: bool = False) -> Path:
    """Export a PyTorch causal LM whose weights NNCF already compressed, as it is: e.g. the quantization-aware path's
    model after `nls.quantization_aware.strip_to_int4` (packed integers and a decompressor per weight, the chosen
    sub-adapter folded in). OpenVINO's conversion keeps NNCF's decompression as u4 / u8 constants with zero points
    and scales, so those are not compressed again; with `compression["backup"]` "int8_asym" the weights NNCF left
    float (the embeddings, the output head) are then compressed to INT8, as post-training INT4 does. `compression`
    (its mode, group size, ...) goes into the manifest, with the zeros counted in the IR; `source` names the model it
    came from, `adapter` the adapter folded in."""
    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        _export_ir(model, tokenizer, tmp, export_configs(model.config, TASK), source or "the model")
        if compression.get("backup") == "int8_asym":
            _compress_float_weights(tmp / IR_XML)
        OpenVINOModel.write(tmp, model.config, {
            "model": source, "dtype": "fp32", "adapter": adapter, "adapter_merged": True, "model_merged": False,
            "weights": compression["mode"], "calibration": None, "compression": compression, "runtime_adapters": [],
        })
    return Path(output)


def _export_ir(torch_model, tokenizer, folder: Path, gate: dict | None, source) -> None:
    """optimum-intel's conversion of the model and openvino-tokenizers' of its tokenizer, so that both
    `OVModelForCausalLM` and `openvino_genai.LLMPipeline` run the folder."""
    from optimum.exporters.openvino import export_from_model
    from optimum.exporters.openvino.convert import export_tokenizer

    export_from_model(torch_model, folder, task=TASK, stateful=True, custom_export_configs=gate)
    export_tokenizer(tokenizer, folder, task=TASK)
    tokenizer.save_pretrained(folder)  # the PyTorch-side tokenizer, for OVModelForCausalLM users
    if not (folder / TOKENIZER_XML).is_file():
        raise ShearsError(f"openvino-tokenizers could not convert the tokenizer of {source}")


class OpenVINOModel(StageFolder):
    """An IR folder `shears export` wrote, read back: its weight format, size and the zeros counted in it."""

    STAGE = STAGE

    @staticmethod
    def write(folder: Path, model_config, export: dict) -> None:
        """The manifest, last in the folder: how it was exported (`export`: the model and adapter it came from, the
        weight format and compression settings, the run-time adapters), then what the IR itself holds, read from
        it: its size and the zeros of every weight (`model_config` tells how many experts a weight holds)."""
        layers = ir_weight_sparsity(folder / IR_XML)
        write_manifest(folder, {"stage": STAGE, **export, "ir_bytes": (folder / IR_BIN).stat().st_size,
                                "stateful": True, "sparsity": summarize_sparsity(layers, num_experts(model_config)),
                                "layers": layers})

    @property
    def weights(self) -> str:
        return self.manifest["weights"]

    @property
    def sparsity(self) -> dict:
        """`base_sparsity`, `base_zeros`, `base_params` of the base linears, as counted in the IR's constants."""
        return self.manifest["sparsity"]

    @property
    def layers(self) -> list[dict]:
        return self.manifest["layers"]

    @property
    def ir_bytes(self) -> int:
        return self.manifest["ir_bytes"]

    @property
    def merged(self) -> bool:
        """A sub-adapter is folded into its weights: exported from `shears extract --merge`'s folder, or a mask-aware
        adapter merged at export."""
        return bool(self.manifest.get("adapter_merged") or self.manifest.get("model_merged"))

    @property
    def runtime_adapters(self) -> dict[str, dict]:
        """Its run-time adapters (`--runtime-adapter`) by name: `path` of the file, `alpha` to pass, ranks, parameters."""
        return {e["name"]: dict(e, path=str(self.path / e["file"])) for e in self.manifest.get("runtime_adapters") or []}

    def runtime_adapter(self, name: str) -> dict:
        """One run-time adapter's entry; an unknown name is a ShearsError naming those the folder has."""
        adapters = self.runtime_adapters
        if name in adapters:
            return adapters[name]
        if not adapters:
            raise ShearsError(f"{self.path} has no run-time adapters; export the sparse base with `shears export "
                              "--runtime-adapter SUB_ADAPTER ...` (or bake one in with --adapter)")
        raise ShearsError(f"{self.path} has no run-time adapter {name!r}; its adapters are {', '.join(adapters)} "
                          f"(or {BASE_ALONE} for the base alone)")


def _is_merged_model(model: str | os.PathLike) -> bool:
    """Whether the model folder is one `shears extract --merge` wrote (a sub-adapter folded into the sparse base)."""
    from .merge import merged_manifest

    try:
        merged_manifest(model)
        return True
    except ShearsError:
        return False


def _int4_settings(ratio: float, group_size: int, mode: str, all_layers: bool) -> dict:
    """What the manifest records of an INT4 export; checks the user's mode, ratio and group size first."""
    if mode not in INT4_MODES:
        raise ShearsError(f"INT4 mode {mode!r} is not one of NNCF's: {', '.join(INT4_MODES)}")
    if not 0.0 < ratio <= 1.0:
        raise ShearsError(f"--int4-ratio {ratio} is outside (0, 1]; give the fraction of linears in INT4, e.g. 1.0 or 0.8")
    if group_size != -1 and group_size < 2:
        raise ShearsError(f"--group-size {group_size} is not a group size; give e.g. 128, 64, or -1 (one group per row)")
    # Layers whose input size the group size does not divide get the largest power-of-two group (>= 32)
    # that does, else the backup precision: NNCF's ADJUST fallback.
    return {"mode": mode, "group_size": group_size, "ratio": ratio, "backup": "int8_asym",
            "group_size_fallback": "adjust", "all_layers": all_layers}


def _compress_in_place(xml: Path, weights: str, samples: list | None, int4: dict | None = None) -> None:
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(xml)
    if weights == "int8":
        # Symmetric: q = round(w / scale) with no zero point, so w == 0 <=> q == 0.
        ov_model = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_SYM)
    elif weights == "int4":
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        ov_model = nncf.compress_weights(
            ov_model, mode=nncf.CompressWeightsMode(int4["mode"]), ratio=int4["ratio"], group_size=int4["group_size"],
            backup_mode=nncf.BackupMode.INT8_ASYM, all_layers=int4["all_layers"],
            advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
        )
    else:
        inputs = [_prefill_inputs(ids.numpy()) for ids in samples]
        ov_model = nncf.quantize(
            ov_model, nncf.Dataset(inputs), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(inputs)
        )
    _save_in_place(xml, ov_model)


def _compress_float_weights(xml: Path) -> None:
    """INT8 asymmetric, per output channel, on the weights still float (the embeddings, the output head): NNCF's
    backup mode applied after a quantization-aware strip, whose u4 / u8 weights NNCF leaves as they are."""
    import nncf
    import openvino as ov

    _save_in_place(xml, nncf.compress_weights(ov.Core().read_model(xml), mode=nncf.CompressWeightsMode.INT8_ASYM))


def _save_in_place(xml: Path, ov_model) -> None:
    import openvino as ov

    staged = xml.with_name("compressed_" + xml.name)
    ov.save_model(ov_model, staged, compress_to_fp16=False)
    del ov_model
    os.replace(staged, xml)
    os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))


def _prefill_inputs(ids: np.ndarray) -> dict:
    """One prefill call of the stateful IR (NNCF resets the KV state between samples)."""
    ids = ids.astype(np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
        "beam_idx": np.zeros(1, dtype=np.int32),
    }


def ir_weight_sparsity(xml: str | os.PathLike) -> list[dict]:
    """Zeros of every MatMul's weight constant, read from the IR itself (after any compression).

    Layers are named after the MatMul (e.g. `model.layers.0.self_attn.q_proj.base_layer`).
    """
    return [
        {
            "layer": layer,
            "shape": list(zeros.shape),
            "dtype": dtype,
            "zeros": int(zeros.sum()),
            "sparsity": float(zeros.mean()),
            "adapter": ".lora_" in layer,
        }
        for layer, (zeros, dtype) in _ir_weights(xml).items()
    ]


def ir_zero_masks(xml: str | os.PathLike) -> dict[str, np.ndarray]:
    """Where each MatMul weight of the IR is zero (for an asymmetric INT8 weight: equals its zero point)."""
    return {layer: zeros for layer, (zeros, _) in _ir_weights(xml).items()}


def _ir_weights(xml) -> dict[str, tuple[np.ndarray, str]]:
    import openvino as ov

    weights = {}
    for op in ov.Core().read_model(xml).get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        weight, zero_point = _weight_constant(op.input_value(1).get_node())
        if weight is not None:
            zeros = constant_values(weight) == (zero_point if zero_point is not None else 0)
            name = _layer_name(op.get_friendly_name(), weight.get_friendly_name())
            weights[name] = (zeros, weight.get_element_type().get_type_name())
    return weights


def _weight_constant(node):
    """Walk up a MatMul's weight input to its (largest) Constant; also return a zero point if one is subtracted."""
    zero_point = None
    while node.get_type_name() in _WEIGHT_PATH_OPS:
        inputs = [node.input_value(i).get_node() for i in range(node.get_input_size())]
        if node.get_type_name() == "Subtract":
            zp = _constant_below(inputs[1])
            zero_point = constant_values(zp) if zp is not None else None
        node = inputs[0]
    if node.get_type_name() != "Constant" or len(node.get_output_shape(0)) < 2:
        return None, None
    return node, zero_point


def constant_values(constant) -> np.ndarray:
    """A Constant's values in its own shape; sub-byte types (u4, i4) are stored packed and unpacked here."""
    element = constant.get_element_type().get_type_name()
    if element not in ("u4", "i4"):
        return constant.get_data()
    packed = constant.get_data().view(np.uint8)  # two values a byte, the first in the low nibble
    values = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)
    if element == "i4":
        values = values.astype(np.int8)
        values[values > 7] -= 16
    shape = tuple(constant.get_output_shape(0))
    return values[: int(np.prod(shape))].reshape(shape)


def _constant_below(node):
    while node.get_type_name() in ("Convert", "Reshape"):
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def _layer_name(matmul_name: str, constant_name: str) -> str:
    """optimum names a linear's MatMul "__module.<torch path>/aten::linear/MatMul"; the experts' matmuls share their
    module's path, so they are named by their constant, the parameter ("self.<torch path>.gate_up_proj")."""
    module = matmul_name.removeprefix("__module.").split("/")[0]
    parameter = re.match(r"[\w.]*", constant_name.removeprefix("self.")).group().removesuffix(".weight")
    return parameter if parameter.startswith(module + ".") else module


def summarize_sparsity(layers: list[dict], num_experts: int | None = None) -> dict:
    """Overall sparsity of the base decoder weights, as the paper counts it and `shears report` does: the linears
    and expert tensors of the numbered decoder blocks (`model.layers.3.mlp.up_proj`), not the adapters, the routers
    nor the output layer, whatever its name (lm_head, GPT-NeoX's embed_out)."""
    base = [layer for layer in layers if not layer["adapter"] and re.search(r"\.\d+\.", layer["layer"])
            and not is_router(sorted(layer["shape"]), num_experts)]
    params = sum(int(np.prod(layer["shape"])) for layer in base)
    zeros = sum(layer["zeros"] for layer in base)
    return {"base_weights": len(base), "base_params": params, "base_zeros": zeros,
            "base_sparsity": zeros / params if params else 0.0}
