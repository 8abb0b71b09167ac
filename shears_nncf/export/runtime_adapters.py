"""Sub-adapters for OpenVINO GenAI's run-time LoRA: one sparse base IR, any number of adapters picked per call.

GenAI (`openvino_genai.Adapter`, `AdapterConfig`) reads a safetensors file with PEFT's tensor names (the rank
may differ per layer) and adds `alpha * B @ A` beside every matching MatMul of the base IR, unmerged, so
the base's zeros stay zeros and switching adapters reloads nothing. The alpha passed is the whole scale:
neither the file nor `adapter_config.json` is read for one. PEFT scales each module by `alpha_m / r_m`
(`alpha_m / sqrt(r_m)` with rslora). A Shears sub-adapter has `alpha / r_max` everywhere (its
`alpha_pattern` keeps it so); a PEFT folder from elsewhere may not, so the commonest scale becomes the alpha
to pass and every other module's ratio to it is folded into its `lora_B`: one alpha is then exact for all.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import ShearsError

if TYPE_CHECKING:
    from .sub_adapter import SubAdapter

ADAPTERS_DIR = "adapters"  # under the IR folder: one NAME.safetensors per sub-adapter
BASE_ALONE = "none"  # what `shears generate --adapter` and `shears evaluate --adapter` call the base without one
# The export manifest's `runtime_adapters` lists each: name, file, alpha (to pass), ranks, parameters, bytes, source;
# `openvino.OpenVINOModel.runtime_adapters` reads them back.
_PEFT_PREFIX = "base_model.model."


def check_runtime_adapters(adapters: Sequence[str | os.PathLike], model) -> list[SubAdapter]:
    """Read every adapter folder and check it before anything is exported: each must fit `model` (the base as
    exported) and be one that GenAI applies as it was trained."""
    from .sub_adapter import SubAdapter  # imports torch: not for the readers of an IR folder (bench's workers)

    folders = [SubAdapter.read(a) for a in adapters]
    for folder in folders:
        if folder.mask_aware:
            raise ShearsError(f"adapter {folder.path} was trained mask-aware (shears.lora.sparse_adapter): GenAI would "
                              "add its update on the base's pruned positions too; bake it in with `shears export "
                              "--adapter` (exported merged, exact for it) or merge it with `shears extract --merge`")
        folder.check_fits(model)
    return folders


def runtime_adapter(adapter: SubAdapter) -> tuple[dict, dict]:
    """(tensors as GenAI reads them, what the manifest records: the alpha to pass among it) of a PEFT LoRA folder."""
    from peft import LoraConfig
    from peft.utils.other import get_pattern_key
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(adapter.path))
    if config.use_dora or config.lora_bias:
        raise ShearsError(f"adapter {adapter.path} uses {'DoRA' if config.use_dora else 'LoRA biases'}, which GenAI's "
                          "run-time LoRA does not apply (it adds B A only); bake it in with --adapter")
    tensors = load_file(adapter.weights_file)
    other = sorted(k for k in tensors if not re.search(r"\.lora_[AB]\.weight$", k))
    if other:
        raise ShearsError(f"adapter {adapter.path} holds weights other than lora_A / lora_B (e.g. {other[0]}), which "
                          "GenAI's run-time LoRA does not load; bake it in with --adapter")
    scales, ranks = {}, {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            path = module.removeprefix(_PEFT_PREFIX)  # as PEFT matches rank_pattern / alpha_pattern keys
            alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), path), config.lora_alpha)
            ranks[module] = a.shape[0]
            scales[module] = alpha / (math.sqrt(a.shape[0]) if config.use_rslora else a.shape[0])
    alpha = Counter(scales.values()).most_common(1)[0][0]
    folded = [m for m, s in scales.items() if not math.isclose(s, alpha, rel_tol=1e-6)]
    for module in folded:
        key = f"{module}.lora_B.weight"
        tensors[key] = (tensors[key] * (scales[module] / alpha)).contiguous()
    return tensors, {
        "alpha": alpha,
        "ranks": sorted(set(ranks.values()), reverse=True),
        "modules": len(ranks),
        "parameters": sum(t.numel() for t in tensors.values()),
        "folded_modules": len(folded),
    }


def adapter_name(adapter: SubAdapter, taken: set[str]) -> str:
    """How the sub-adapter was chosen (heuristic, maximal, a search's strategy...), else its folder's name; unique."""
    chosen = str(adapter.chosen_by or "")
    # `shears extract` records "heuristic", "hill-climbing (runs/search/search.json)" or "file ranks.json".
    candidates = [chosen.split(" (")[0]] if chosen and not chosen.startswith("file ") else []
    candidates = [re.sub(r"[^A-Za-z0-9._-]+", "-", c).strip("-.") for c in candidates + [adapter.path.resolve().name]]
    candidates = [c for c in candidates if c and c != BASE_ALONE] or ["adapter"]
    free = [c for c in candidates if c not in taken]
    if free:
        return free[0]
    n = 2
    while f"{candidates[0]}-{n}" in taken:
        n += 1
    return f"{candidates[0]}-{n}"


def write_runtime_adapters(adapters: Sequence[SubAdapter], folder: Path) -> list[dict]:
    """Write every sub-adapter to `folder/adapters/NAME.safetensors`; return their manifest entries."""
    from safetensors.torch import save_file

    (folder / ADAPTERS_DIR).mkdir()
    entries, taken = [], set()
    for adapter in adapters:
        tensors, summary = runtime_adapter(adapter)
        name = adapter_name(adapter, taken)
        taken.add(name)
        file = Path(ADAPTERS_DIR) / f"{name}.safetensors"
        save_file(tensors, folder / file, metadata={"format": "pt"})
        entries.append({"name": name, "file": str(file), **summary, "bytes": (folder / file).stat().st_size,
                        "source": str(adapter.path.resolve()), "chosen_by": adapter.chosen_by})
    return entries
