"""The `sparsify` verb: prune a model in place, or load, prune and save it as a stage folder."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..artifacts import StageFolder, atomic_output_dir, write_manifest
from ..data import c4
from ..data.calibration import calibration_samples, check_calibration_source
from ..errors import ShearsError
from ..models import (
    architecture, context_length, dtype_name, load_model, load_model_config, load_tokenizer, meta_model,
    parameter_count, resolve_device, resolve_dtype, resolve_model,
)
from . import METHODS
from .masks import magnitude_, parse_pattern
from .report import model_sparsity
from .wanda import wanda_

STAGE = "sparsify"
# The paper's Wanda used 128 x 2048 tokens; 32 x 512 (calibration.DEFAULT_NSAMPLES) keeps the CPU
# demo to a few minutes, and Wanda's own ablation shows little change down to ~32 samples.
DEFAULT_SEQLEN = 512


class SparseModel(StageFolder):
    """A folder `shears sparsify` wrote: an HF model, and how it was pruned."""

    STAGE = STAGE

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def sparsity(self) -> dict:
        """`total_parameters`, `nonzero_parameters`, `decoder_sparsity` and the per-weight figures."""
        return self.manifest["sparsity"]


def sparsify(model: nn.Module, calibration_samples: list[torch.Tensor] | None, ratio: float, method: str = "wanda",
             pattern: str = "unstructured", block_device: torch.device | None = None) -> list[str]:
    """Zero `ratio` of every decoder weight (linears and experts), row by row, in place (magnitude needs no samples).
    Returns the matrices no calibration token reached (an expert the router never chose), pruned by |W| alone.

    `block_device`: Wanda runs each decoder block there, one at a time, while the model stays where it is."""
    calibrated = METHODS[method].calibrated  # an unknown method is a ShearsError naming the known ones
    parse_pattern(pattern, ratio)
    if calibrated:
        if not calibration_samples:
            raise ShearsError("wanda needs calibration samples; give --calibration (a file, a hub id or 'default')")
        return wanda_(model, calibration_samples, ratio, pattern, block_device=block_device)
    magnitude_(model, ratio, pattern)
    return []


def sparsify_to_folder(model: str, output: str | Path, ratio: float, method: str = "wanda", pattern: str = "unstructured",
                       calibration: str = "default", nsamples: int | None = None, seqlen: int | None = None,
                       seed: int = 0, device: str = "auto", dtype: str = "auto", overwrite: bool = False) -> dict:
    """Load `model` in `dtype`, sparsify it and write an HF folder plus its manifest to `output`, atomically
    (`overwrite`: even over a folder shears did not write).

    On CUDA, a model whose weights do not fit in the free GPU memory stays on the CPU and Wanda moves
    one decoder block at a time to the GPU."""
    # Every check that can fail on the user's input runs before anything is loaded or written.
    calibrated = METHODS[method].calibrated  # an unknown method is a ShearsError naming the known ones
    parse_pattern(pattern, ratio)
    if calibrated:
        check_calibration_source(calibration)
    for flag, value in (("--nsamples", nsamples), ("--seqlen", seqlen)):
        if value is not None and value < 1:
            raise ShearsError(f"{flag} must be a positive integer, got {value}")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    path = resolve_model(model)
    config = load_model_config(path)
    architecture(meta_model(config))  # blocks and linears found from the shapes alone, before any weight is read

    start = time.perf_counter()
    tokenizer = load_tokenizer(path)
    offload = torch_device.type == "cuda" and not _fits_on_gpu(path, torch_dtype, torch_device)
    net = load_model(path, dtype=torch_dtype, device="cpu" if offload else torch_device)
    manifest = {"stage": STAGE, "base_model": str(model), "base_model_path": path, "method": method,
                "pattern": pattern, "ratio": ratio, "seed": seed, "device": str(torch_device),
                "dtype": dtype_name(torch_dtype), "blockwise_offload": offload}
    samples = None
    if calibrated:
        default = c4.SEQLEN if calibration == c4.SOURCE else DEFAULT_SEQLEN
        seqlen = min(seqlen or default, context_length(config) or default)
        samples = calibration_samples(calibration, tokenizer, nsamples, seqlen, seed)
        manifest["calibration"] = {"source": calibration, "nsamples": len(samples), "seqlen": seqlen,
                                   "tokens": sum(s.numel() for s in samples)}
    uncalibrated = sparsify(net, samples, ratio, method, pattern, block_device=torch_device if offload else None)
    if calibrated:
        manifest["calibration"]["uncalibrated"] = uncalibrated  # pruned by |W|: no calibration token reached them
    manifest["seconds"] = round(time.perf_counter() - start, 2)
    manifest["sparsity"] = model_sparsity(net)
    with atomic_output_dir(output, STAGE, overwrite=overwrite) as tmp:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, manifest)
    print(f"sparsified {model} ({method}, {pattern}, ratio {ratio}) in {manifest['seconds']} s: "
          f"decoder weight sparsity {manifest['sparsity']['decoder_sparsity']:.2%} -> {output}")
    return manifest


def _fits_on_gpu(path: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the weights fit in the free memory of `device` with a quarter to spare for activations."""
    free, _ = torch.cuda.mem_get_info(device)
    return parameter_count(load_model_config(path)) * torch.finfo(dtype).bits // 8 < 0.75 * free


def sparsify_command(args) -> None:
    """`shears sparsify`."""
    sparsify_to_folder(
        model=args.model, output=args.output, ratio=args.ratio, method=args.method, pattern=args.pattern,
        calibration=args.calibration, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
        device=args.device, dtype=args.dtype, overwrite=args.overwrite,
    )
