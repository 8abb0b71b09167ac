"""`shears export`: its flags made an `ExportConfig` for `stage.export_model`."""

from __future__ import annotations

from .stage import ExportConfig, export_model


def export_command(args) -> None:
    config = ExportConfig(adapter=args.adapter, runtime_adapters=tuple(args.runtime_adapter or ()), weights=args.weights,
                          calibration=args.calibration, int4_ratio=args.int4_ratio, group_size=args.group_size,
                          int4_mode=args.int4_mode, int4_all_layers=args.int4_all_layers, dtype=args.dtype)
    export_model(args.model, config, args.output, overwrite=args.overwrite)
