"""Handlers of `shears export` and `shears bench` (and, from the extraction issue, `shears extract`)."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import read_manifest
from ..errors import ShearsError


def export_command(args) -> None:
    from .openvino import export_openvino

    out = export_openvino(
        model=args.model, output=args.output, adapter=args.adapter, weights=args.weights,
        calibration=args.calibration,
    )
    sparsity = read_manifest(out, stage="export")["sparsity"]
    print(f"exported {args.model}{' + ' + args.adapter if args.adapter else ''} ({args.weights}) to {out}; "
          f"IR base-linear sparsity {sparsity['base_sparsity']:.1%}")


def bench_command(args) -> None:
    from ..bench import benchmark, format_table

    prompts = None
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise ShearsError(f"prompts file {path} does not exist; give a text file with one prompt per line")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ShearsError(f"prompts file {path} has no prompts; give one prompt per line")
    report = benchmark(args.folders, prompts=prompts, max_new_tokens=args.max_new_tokens,
                       sparse_rate=args.sparse_rate, json_out=args.json_out, threads=args.threads)
    print(format_table(report))
