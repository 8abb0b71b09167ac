"""`shears export`: an HF model folder (and an unmerged adapter) to an OpenVINO IR."""

from __future__ import annotations

from ..artifacts import read_manifest


def export_command(args) -> None:
    from .openvino import export_openvino

    out = export_openvino(
        model=args.model, output=args.output, adapter=args.adapter, weights=args.weights,
        calibration=args.calibration, int4_ratio=args.int4_ratio, group_size=args.group_size, dtype=args.dtype,
    )
    sparsity = read_manifest(out, stage="export")["sparsity"]
    print(f"exported {args.model}{' + ' + args.adapter if args.adapter else ''} ({args.weights}) to {out}; "
          f"IR base-linear sparsity {sparsity['base_sparsity']:.1%}")
