"""`shears export --adapter` of a quantization-aware adapter: one INT4 (or INT8) IR with the sub-adapter folded in.

The adapter (`export.sub_adapter.QASubAdapter`: a sub-adapter folder of `shears extract`, or the super-adapter
itself at its heuristic ranks) is rebuilt on the sparse base (`nls.qa_training.load_qa_model`), set to its ranks,
and NNCF strips every fake quantizer into packed integer weights with the masked update inside
(`strip_to_int4`); OpenVINO's conversion keeps them as they are (`export_compressed`), so the IR computes what was
trained, and its manifest counts the zeros the integer weights keep.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import QuantizationSettings
from .openvino import export_compressed
from .sub_adapter import QASubAdapter


def export_qa(model: str | os.PathLike, adapter: QASubAdapter, output: str | os.PathLike,
              overwrite: bool = False) -> tuple[Path, list[int]]:
    """Export the sparse base `model` with the quantization-aware `adapter` at its ranks; returns (IR folder, ranks)."""
    from ..models import load_tokenizer
    from ..nls.qa_training import load_qa_model
    from ..nls.quantization_aware import set_group_ranks, strip_to_int4

    qa_model, groups = load_qa_model(model, adapter)
    ranks = set_group_ranks(qa_model, groups, adapter.ranks)
    q = adapter.quantization
    compression = {"mode": q["mode"], "group_size": q["group_size"], "ratio": q["ratio"],
                   "mask_update": q["mask_update"], "backup": q.get("backup", QuantizationSettings.backup),
                   "quantization_aware": True, "ranks": ranks,
                   "chosen_by": adapter.chosen_by}
    out = export_compressed(strip_to_int4(qa_model), load_tokenizer(model), output, compression, source=str(model),
                            adapter=str(Path(adapter.path).resolve()), overwrite=overwrite)
    return out, ranks

