"""`shears export`: an HF model folder (with an unmerged adapter, or run-time adapters beside it) to an OpenVINO IR."""

from __future__ import annotations


def export_command(args) -> None:
    from .openvino import OpenVINOModel, export_openvino
    from .sub_adapter import QASubAdapter

    if args.adapter and (qa := QASubAdapter.read(args.adapter)) is not None:
        return _export_qa(args, qa)
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


def _export_qa(args, qa) -> None:
    """A quantization-aware adapter: one IR at the format it was trained in, its sub-adapter folded in (export/qa.py)."""
    from ..errors import ShearsError
    from .openvino import OpenVINOModel
    from .qa import export_qa

    q = qa.quantization
    if args.weights != "as-is" or args.runtime_adapter:
        raise ShearsError(f"{args.adapter} is quantization-aware: it is exported as it was trained ({q['mode']}, group "
                          f"size {q['group_size']}, ratio {q['ratio']}) with its sub-adapter folded in; leave out "
                          "--weights and --runtime-adapter")
    out, ranks = export_qa(args.model, qa, args.output, overwrite=args.overwrite)
    sparsity = OpenVINOModel.read(out).sparsity
    print(f"exported {args.model} + {args.adapter} ({qa.chosen_by} sub-adapter, ranks {sorted(set(ranks), reverse=True)}) "
          f"as one {q['mode']} IR to {out}; {sparsity['base_zeros']} zeros in its weights "
          f"({sparsity['base_sparsity']:.1%} of the decoder's)")
