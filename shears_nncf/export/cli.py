"""`shears export`: an HF model folder (with an unmerged adapter, or run-time adapters beside it) to an OpenVINO IR."""

from __future__ import annotations


def export_command(args) -> None:
    from .openvino import OpenVINOModel, export_openvino

    out = export_openvino(
        model=args.model, output=args.output, adapter=args.adapter, weights=args.weights,
        calibration=args.calibration, int4_ratio=args.int4_ratio, group_size=args.group_size, dtype=args.dtype,
        runtime_adapters=args.runtime_adapter or (), overwrite=args.overwrite,
    )
    exported = OpenVINOModel.read(out)
    print(f"exported {args.model}{' + ' + args.adapter if args.adapter else ''} ({args.weights}) to {out}; "
          f"IR base weight sparsity {exported.sparsity['base_sparsity']:.1%}")
    for entry in exported.runtime_adapters.values():
        print(f"  run-time adapter {entry['name']}: {out}/{entry['file']} (ranks {entry['ranks']}, alpha {entry['alpha']:g}); "
              f"try `shears generate --openvino {out} --adapter {entry['name']} --prompt ...`")
