"""A sub-adapter of a trained super-adapter, written as a standard PEFT LoRA folder.

A sub-adapter is the nested prefix `lora_A[:r], lora_B[:, :r]` of every module of a group, scaled by
the super-adapter's `alpha / r_max` whatever r is. Vanilla PEFT scales a module by `alpha_i / r_i`, so
each module gets its own rank (`rank_pattern`) and `alpha_i = alpha * r_i / r_max` (`alpha_pattern`).
The pattern keys are the modules' full paths, regex-escaped: PEFT 0.21 matches a key `k` against a
module path `p` with `re.match(rf"(.*\\.)?({k})$", p)` (a regex suffix at a dot boundary, first key
that matches wins), so an escaped full path matches exactly one module. An unmodified
`PeftModel.from_pretrained` then loads the folder: no patched PEFT, no reshaping on load.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..artifacts import MANIFEST, atomic_output_dir, check_stage, read_json, read_manifest, write_manifest
from ..errors import ShearsError
from ..models import check_safetensors
from ..config import ShearsConfig, parse_config
from ..nls.folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, QA_STATE, STAGE as TRAIN_STAGE, SuperAdapter
from ..nls.space import NAMED

STAGE = "extract"


@dataclass(frozen=True)
class SubAdapter:
    """A PEFT LoRA folder: one `shears extract` wrote (its manifest says how it was chosen and whether it was
    trained mask-aware), or any other LoRA folder a user brings (no manifest: plain LoRA)."""

    path: Path
    peft_config: dict
    manifest: dict | None

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "SubAdapter":
        folder = Path(folder)
        if not (folder / ADAPTER_CONFIG).is_file():
            raise ShearsError(f"adapter folder {folder} has no {ADAPTER_CONFIG}; give a PEFT adapter folder "
                              "(shears extract writes one)")
        config = read_json(folder / ADAPTER_CONFIG, what="adapter config")
        if config.get("peft_type") != "LORA":
            raise ShearsError(f"adapter {folder} is a {config.get('peft_type')!r} adapter; a LoRA adapter is expected")
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise ShearsError(f"adapter {folder} has no {ADAPTER_WEIGHTS}; give a PEFT adapter folder")
        check_safetensors(folder / ADAPTER_WEIGHTS)
        if not (folder / MANIFEST).is_file():
            return cls(folder, config, None)
        manifest = read_manifest(folder)
        if manifest.get("stage") == TRAIN_STAGE:
            return cls(folder, config, _plain_lora(SuperAdapter.read(folder)))
        check_stage(folder, manifest, STAGE)
        return cls(folder, config, manifest)

    @property
    def weights_file(self) -> Path:
        return self.path / ADAPTER_WEIGHTS

    @property
    def mask_aware(self) -> bool:
        """Taken from a super-adapter trained with its update masked by the base's zeros: the trained model is
        W + M ⊙ s B A, which plain PEFT (and an unmerged export) does not compute."""
        return bool(self.manifest and self.manifest.get("sparse_adapter"))

    @property
    def base_model(self) -> str | None:
        """The base it was taken for: our manifest's, else PEFT's `base_model_name_or_path`."""
        return (self.manifest or {}).get("base_model") or self.peft_config.get("base_model_name_or_path")

    @property
    def scaling(self) -> float | None:
        """The super-adapter's alpha / r_max, the one scale every module of a Shears sub-adapter has."""
        return (self.manifest or {}).get("scaling")

    @property
    def chosen_by(self) -> str | None:
        """How `shears extract` chose it: "heuristic", "hill-climbing (runs/search/search.json)", "file ranks.json"..."""
        return (self.manifest or {}).get("chosen_by")

    def check_fits(self, model) -> None:
        """Fail before any work when the adapter's LoRA weights do not fit the model's linear layers."""
        from safetensors import safe_open
        from torch import nn

        modules = dict(model.named_modules())
        with safe_open(self.weights_file, framework="pt") as f:
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
        if not any(".lora_A." in key for key in shapes):
            raise ShearsError(f"adapter {self.path} holds no lora_A weights")
        for key, shape in shapes.items():
            if ".lora_" not in key:
                continue
            name = key.removeprefix("base_model.model.").split(".lora_")[0]
            target = modules.get(name)
            if not isinstance(target, nn.Linear):
                raise ShearsError(f"adapter {self.path} targets {name!r}, which is not a linear layer of the model; "
                                  "give the adapter trained on this base model")
            expected = target.in_features if ".lora_A." in key else target.out_features
            found = shape[1] if ".lora_A." in key else shape[0]
            if found != expected:
                raise ShearsError(f"adapter {self.path} does not fit the model: {key} has {found} features where "
                                  f"{name} has {expected}; give the adapter trained on this base model")


def _plain_lora(trained: SuperAdapter) -> dict:
    """What a `shears train --lora-only` folder tells as an adapter (it is a PEFT LoRA folder already); a
    super-adapter is not one adapter but many, so it is refused with the ways to take one of them."""
    if not trained.lora_only:
        raise ShearsError(f"{trained.path} is a super-adapter (shears train without --lora-only); give it as "
                          f"--super-adapter with --subnet {'|'.join(NAMED)}, or take a sub-adapter out of it "
                          "with shears extract")
    return {"stage": TRAIN_STAGE, "base_model": trained.base_model, "sparse_adapter": trained.mask_aware}

def write_sub_adapter(
    adapter_dir: str | os.PathLike,
    group_modules: Sequence[Sequence[str]],
    ranks: Sequence[int],
    output: str | os.PathLike,
    manifest: dict,
    overwrite: bool = False,
) -> dict:
    """Slice the PEFT LoRA folder `adapter_dir` (r = r_max) to `ranks` (one per group of module paths) into `output`
    (`overwrite`: even over a folder shears did not write).

    Modules in no group keep the full rank. Returns the rank of every module (its PEFT path)."""
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    adapter_dir = Path(adapter_dir)
    config = LoraConfig.from_pretrained(str(adapter_dir))
    if config.use_rslora or config.use_dora or config.rank_pattern or config.alpha_pattern:
        raise ShearsError(f"{adapter_dir}: a super-adapter is a plain LoRA (no rslora, DoRA or rank/alpha patterns)")
    weights = load_file(adapter_dir / ADAPTER_WEIGHTS)
    r_max, alpha = config.r, config.lora_alpha
    rank_of = {key[: -len(".lora_A.weight")]: r_max for key in weights if key.endswith(".lora_A.weight")}
    if len(group_modules) != len(ranks):
        raise ShearsError(f"{len(ranks)} ranks for {len(group_modules)} groups; give one rank per group")
    for modules, r in zip(group_modules, ranks):
        if not 1 <= int(r) <= r_max:
            raise ShearsError(f"rank {r} is outside 1..{r_max} (the super-adapter's rank)")
        for path in modules:
            if path not in rank_of:
                raise ShearsError(f"{adapter_dir} has no adapter for module {path}; its modules are e.g. {sorted(rank_of)[:2]}")
            rank_of[path] = int(r)

    sliced = {}
    for key, tensor in weights.items():
        path, kind = key.rsplit(".lora_", 1)
        if kind == "A.weight":
            sliced[key] = tensor[: rank_of[path]].contiguous()
        elif kind == "B.weight":
            sliced[key] = tensor[:, : rank_of[path]].contiguous()
        else:
            raise ShearsError(f"{adapter_dir}: unexpected adapter weight {key!r} (only lora_A / lora_B are sliced)")

    def pattern_key(path: str) -> str:  # relative to the model PEFT wraps, as PEFT names modules when injecting
        return re.escape(path.removeprefix("base_model.model."))

    config.r = max(rank_of.values())
    config.lora_alpha = alpha * config.r / r_max
    config.rank_pattern = {pattern_key(p): r for p, r in rank_of.items()}
    config.alpha_pattern = {pattern_key(p): alpha * r / r_max for p, r in rank_of.items()}
    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        save_file(sliced, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
        write_manifest(tmp, {
            "stage": STAGE,
            **manifest,
            "super_adapter_rank": r_max,
            "scaling": alpha / r_max,
            "adapter_parameters": sum(t.numel() for t in sliced.values()),
            "super_adapter_parameters": sum(t.numel() for t in weights.values()),
        })
    return rank_of


@dataclass(frozen=True)
class QASubAdapter:
    """A quantization-aware adapter to deploy: the sub-adapter folder `shears extract` writes of a quantization-aware
    super-adapter (a copy of its QA_STATE, the chosen ranks, the config and settings to rebuild it), or such a
    super-adapter itself, read as its heuristic sub-adapter. Its ranks only take effect when the fake quantizers
    are stripped into integer weights, so it deploys as one IR (`shears export --adapter`), never as PEFT."""

    path: Path
    manifest: dict

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "QASubAdapter | None":
        """The folder as a quantization-aware adapter, or None when it is not one (a PEFT folder, anything else)."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            return None
        manifest = read_manifest(folder)
        if not manifest.get("quantization"):
            return None
        if manifest.get("stage") == TRAIN_STAGE:
            trained = SuperAdapter.read(folder, quantization_aware=True)
            return cls(folder, {**trained.manifest, "ranks": list(trained.space.heuristic), "chosen_by": "heuristic",
                                "super_adapter": str(folder.resolve())})
        check_stage(folder, manifest, STAGE)
        check_safetensors(folder / QA_STATE)
        return cls(folder, manifest)

    @property
    def weights_file(self) -> Path:
        return self.path / QA_STATE

    @property
    def config(self) -> ShearsConfig:
        return parse_config(self.manifest["config"], source=f"{self.path} (its manifest's config)")

    @property
    def quantization(self) -> dict:
        return self.manifest["quantization"]

    @property
    def group_names(self) -> list[str]:
        return list(self.manifest["groups"])

    @property
    def ranks(self) -> list[int]:
        return list(self.manifest["ranks"])

    @property
    def chosen_by(self) -> str:
        return self.manifest["chosen_by"]

    @property
    def base_model(self) -> str | None:
        return self.manifest.get("base_model")


def write_qa_sub_adapter(trained: SuperAdapter, ranks: Sequence[int], output: str | os.PathLike, record: dict,
                         overwrite: bool = False) -> None:
    """A quantization-aware super-adapter's sub-adapter: its QA_STATE copied whole (NNCF's quantizers hold the
    adapters at r_max; the ranks choose the prefix each one runs), the ranks and what rebuilding it needs."""
    import shutil

    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        shutil.copyfile(trained.weights_file, tmp / QA_STATE)
        write_manifest(tmp, {"stage": STAGE, **record, "quantization": trained.quantization,
                             "config": trained.config.raw, "groups": trained.group_names,
                             "search_space": [list(r) for r in trained.space.ranks]})
