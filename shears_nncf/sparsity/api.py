"""The `sparsify` verb: prune a model in place, or load, prune and save it as a stage folder."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from ..artifacts import StageFolder, atomic_output_dir, write_manifest, written_by
from ..data import c4
from ..data.calibration import calibration_samples, check_calibration_source
from ..errors import ShearsError
from ..models import (
    architecture, context_length, decoder_blocks, dtype_name, load_model, load_model_config, load_tokenizer,
    meta_model, parameter_count, resolve_device, resolve_dtype, resolve_model,
)
from . import ALLOCATIONS, METHODS, SparsifyConfig
from .masks import magnitude_
from .owl import outlier_shares, owl_ratios
from .report import folder_sparsity, format_table, model_sparsity
from .sparsegpt import sparsegpt_
from .wanda import wanda_

STAGE = "sparsify"
# The paper's Wanda used 128 x 2048 tokens; 32 x 512 (calibration.DEFAULT_NSAMPLES) keeps the CPU
# demo to a few minutes, and Wanda's own ablation shows little change down to ~32 samples.
DEFAULT_SEQLEN = 512


class SparseModel(StageFolder):
    """A folder `shears sparsify` wrote: an HF model, and how it was pruned."""

    STAGE = STAGE

    @staticmethod
    def write(folder: Path, model: nn.Module, tokenizer, manifest: dict) -> None:
        """The pruned model and its tokenizer as an HF folder, and the manifest last: how it was pruned."""
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_manifest(folder, manifest)

    @property
    def pruning_seconds(self) -> float | None:
        """The pruner's own time (no load, no save); None for a folder written before it was recorded."""
        return self.manifest.get("pruning_seconds")

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def sparsity(self) -> dict:
        """`total_parameters`, `nonzero_parameters`, `decoder_sparsity` and the per-weight figures."""
        return self.manifest["sparsity"]

    @property
    def allocation(self) -> dict | None:
        """`name`, its settings, `block_ratios` (one per decoder block) and, for OWL, `outlier_shares`; None in a
        folder written before allocations were recorded."""
        return self.manifest.get("allocation")


def sparsify(model: nn.Module, calibration_samples: list[torch.Tensor] | None, ratio: float, method: str = "wanda",
             pattern: str = "unstructured", block_device: torch.device | None = None, **settings) -> dict:
    """Zero `ratio` of the decoder weights (linears and experts), in place (magnitude needs no samples, unless OWL
    allocates its ratios). `settings`: `SparsifyConfig`'s other fields (allocation, damping, block_size,
    outlier_threshold, owl_lambda).

    Returns what the manifest records: `allocation` (its name and settings, `block_ratios`, and OWL's
    `outlier_shares`), `method_settings`, and `uncalibrated`, the matrices no calibration token reached (an
    expert the router never chose), pruned by |W| alone.

    `block_device`: calibrated passes run each decoder block there, one at a time, while the model stays where it is."""
    config = SparsifyConfig(ratio, method, pattern, **settings)  # every check of the settings together
    if config.calibrated and not calibration_samples:
        needs = method if METHODS[method].calibrated else f"--allocation owl (its outlier shares, even with {method})"
        raise ShearsError(f"{needs} needs calibration samples; give --calibration (a file, a hub id or 'default')")
    allocation = {"name": config.allocation, **config.settings(ALLOCATIONS, config.allocation)}
    ratios = [ratio] * len(decoder_blocks(model))
    if config.allocation == "owl":  # a first pass over the dense model, as the reference measures the shares
        shares, sizes = outlier_shares(model, calibration_samples, config.outlier_threshold, block_device)
        ratios = owl_ratios(shares, sizes, ratio, config.owl_lambda)
        allocation["outlier_shares"] = shares
    allocation["block_ratios"] = ratios
    uncalibrated = []
    if method == "wanda":
        uncalibrated = wanda_(model, calibration_samples, ratios, pattern, block_device=block_device)
    elif method == "sparsegpt":
        uncalibrated = sparsegpt_(model, calibration_samples, ratios, pattern, block_size=config.block_size,
                                  damping=config.damping, block_device=block_device)
    else:
        magnitude_(model, ratios, pattern)
    return {"allocation": allocation, "method_settings": config.settings(METHODS, method), "uncalibrated": uncalibrated}


def sparsify_to_folder(model: str, config: SparsifyConfig, output: str | Path, *, calibration: str = "default",
                       nsamples: int | None = None, seqlen: int | None = None, seed: int = 0, device: str = "auto",
                       dtype: str = "auto", overwrite: bool = False) -> SparseModel:
    """Load `model` in `dtype`, prune it as `config` says and write an HF folder plus its manifest to `output`,
    atomically (`overwrite`: even over a folder shears did not write); the folder read back. `calibration` (a file,
    a hub dataset id, 'c4' or 'default'): `nsamples` x `seqlen` tokens drawn with `seed`, for the methods and
    allocations that need them.

    On CUDA, a model whose weights do not fit in the free GPU memory stays on the CPU and each calibrated pass moves
    one decoder block at a time to the GPU."""
    # Every check that can fail on the user's input runs before anything is loaded or written.
    if config.calibrated:
        check_calibration_source(calibration)
    for flag, value in (("--nsamples", nsamples), ("--seqlen", seqlen)):
        if value is not None and value < 1:
            raise ShearsError(f"{flag} must be a positive integer, got {value}")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    path = resolve_model(model)
    model_config = load_model_config(path)
    architecture(meta_model(model_config))  # blocks and linears found from the shapes alone, before any weight is read

    start = time.perf_counter()
    tokenizer = load_tokenizer(path)
    offload = torch_device.type == "cuda" and not _fits_on_gpu(path, torch_dtype, torch_device)
    net = load_model(path, dtype=torch_dtype, device="cpu" if offload else torch_device)
    manifest = {"stage": STAGE, "base_model": str(model), "base_model_path": path, "method": config.method,
                "pattern": config.pattern, "ratio": config.ratio, "seed": seed, "device": str(torch_device),
                "dtype": dtype_name(torch_dtype), "blockwise_offload": offload}
    samples = None
    if config.calibrated:
        default = c4.SEQLEN if calibration == c4.SOURCE else DEFAULT_SEQLEN
        seqlen = min(seqlen or default, context_length(model_config) or default)
        samples = calibration_samples(calibration, tokenizer, nsamples, seqlen, seed)
        manifest["calibration"] = {"source": calibration, "nsamples": len(samples), "seqlen": seqlen,
                                   "tokens": sum(s.numel() for s in samples)}
    pruning = time.perf_counter()
    record = sparsify(net, samples, block_device=torch_device if offload else None, **asdict(config))
    manifest["pruning_seconds"] = round(time.perf_counter() - pruning, 2)  # the pruner alone: no load, no save
    uncalibrated = record.pop("uncalibrated")
    if config.calibrated:  # pruned by |W|: no calibration token reached them
        manifest["calibration"]["uncalibrated"] = uncalibrated
    manifest |= record  # method_settings, allocation
    manifest["seconds"] = round(time.perf_counter() - start, 2)
    manifest["sparsity"] = model_sparsity(net)
    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        SparseModel.write(tmp, net, tokenizer, manifest)
    print(f"sparsified {model} ({config.method}, {config.pattern}, ratio {config.ratio}, {config.allocation} "
          f"allocation) in {manifest['seconds']} s: decoder weight sparsity "
          f"{manifest['sparsity']['decoder_sparsity']:.2%} -> {output}")
    return SparseModel.read(output)


def _fits_on_gpu(path: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the weights fit in the free memory of `device` with a quarter to spare for activations."""
    free, _ = torch.cuda.mem_get_info(device)
    return parameter_count(load_model_config(path)) * torch.finfo(dtype).bits // 8 < 0.75 * free


def sparsify_command(args) -> None:
    """`shears sparsify`."""
    config = SparsifyConfig(**{setting.name: getattr(args, setting.name) for setting in fields(SparsifyConfig)})
    sparsify_to_folder(args.model, config, args.output, calibration=args.calibration, nsamples=args.nsamples,
                       seqlen=args.seqlen, seed=args.seed, device=args.device, dtype=args.dtype, overwrite=args.overwrite)


def report_command(args) -> None:
    """`shears report`: the folder's sparsity, and how its ratios were allocated where `shears sparsify` wrote it
    (any other HF folder is reported from its weights alone)."""
    stats = folder_sparsity(args.folder)
    allocation = SparseModel.read(args.folder).allocation if written_by(args.folder) == STAGE else None
    if args.json:
        print(json.dumps(stats | ({"allocation": allocation} if allocation else {}), indent=2))
    else:
        print(format_table(stats, allocation))
