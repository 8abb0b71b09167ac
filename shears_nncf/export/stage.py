"""The export stage as one call: an HF model folder (with an adapter baked in unmerged, run-time adapters beside it,
or a quantization-aware sub-adapter folded into its integer weights) -> one OpenVINO IR folder.

`export_model(model, ExportConfig(...), output)` is what `shears export` and `shears run` do; the handler in `cli.py`
only builds the `ExportConfig` from its flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShearsError
from . import INT4_MODES, WEIGHT_FORMATS
from .openvino import INT4_GROUP_SIZE, INT4_RATIO, OpenVINOModel, export_openvino
from .sub_adapter import QASubAdapter


@dataclass(frozen=True)
class ExportConfig:
    """How `shears export` writes the IR: `shears export`'s flags, with their defaults. `adapter`: a PEFT folder baked
    into the graph unmerged (or a quantization-aware sub-adapter, folded into the INT4 weights it was trained for);
    `runtime_adapters`: PEFT folders written beside the base for OpenVINO GenAI to apply at run time."""

    adapter: str | os.PathLike | None = None
    runtime_adapters: tuple[str | os.PathLike, ...] = ()
    weights: str = "as-is"
    calibration: str = "default"
    int4_ratio: float = INT4_RATIO
    group_size: int = INT4_GROUP_SIZE
    int4_mode: str = INT4_MODES[0]
    int4_all_layers: bool = False
    dtype: str = "auto"

    def __post_init__(self):
        WEIGHT_FORMATS[self.weights]  # an unknown format is one line naming the known ones


def export_model(model: str | os.PathLike, config: ExportConfig, output: str | os.PathLike, *,
                 overwrite: bool = False) -> OpenVINOModel:
    """Export `model` as `config` says and write the IR folder; the folder read back."""
    if config.adapter and (qa := QASubAdapter.read(config.adapter)) is not None:
        return _export_qa(model, qa, config, output, overwrite)
    out = export_openvino(model, output, adapter=config.adapter, weights=config.weights,
                          calibration=config.calibration, int4_ratio=config.int4_ratio, group_size=config.group_size,
                          int4_mode=config.int4_mode, int4_all_layers=config.int4_all_layers, dtype=config.dtype,
                          runtime_adapters=config.runtime_adapters, overwrite=overwrite)
    exported = OpenVINOModel.read(out)
    print(f"exported {model}{' + ' + str(config.adapter) if config.adapter else ''} ({config.weights}) to {out}; "
          f"IR base weight sparsity {exported.sparsity['base_sparsity']:.1%}")
    for entry in exported.runtime_adapters.values():
        print(f"  run-time adapter {entry['name']}: {out}/{entry['file']} (ranks {entry['ranks']}, alpha "
              f"{entry['alpha']:g}); try `shears generate --openvino {out} --adapter {entry['name']} --prompt ...`")
    return exported


def _export_qa(model, qa: QASubAdapter, config: ExportConfig, output, overwrite: bool) -> OpenVINOModel:
    """A quantization-aware adapter: one IR at the format it was trained in, its sub-adapter folded in (qa.py)."""
    from .qa import export_qa

    q = qa.quantization
    if config.weights != "as-is" or config.runtime_adapters:
        raise ShearsError(f"{config.adapter} is quantization-aware: it is exported as it was trained ({q['mode']}, "
                          f"group size {q['group_size']}, ratio {q['ratio']}) with its sub-adapter folded in; leave "
                          "out --weights and --runtime-adapter")
    out, ranks = export_qa(model, qa, output, overwrite=overwrite)
    exported = OpenVINOModel.read(out)
    print(f"exported {model} + {config.adapter} ({qa.chosen_by} sub-adapter, ranks {sorted(set(ranks), reverse=True)}) "
          f"as one {q['mode']} IR to {Path(out)}; {exported.sparsity['base_zeros']} zeros in its weights "
          f"({exported.sparsity['base_sparsity']:.1%} of the decoder's)")
    return exported
