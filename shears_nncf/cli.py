"""The `shears` console script, built from the stage declarations in `stages.py`.

Each sub-command is one declared stage: its options become the flags, its handler runs with the parsed
flags. To add or change an option, edit its stage in `stages.py`; `shears run` reads the same declaration.
A `ShearsError` (bad input) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ShearsError
from .stages import STAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shears",
        description="Shears on NNCF: Wanda sparsity, elastic LoRA super-adapters (NLS), sub-adapter search, OpenVINO deployment.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help)
        for o in stage.options:
            p.add_argument(*o.flags, **o.settings)
        p.set_defaults(stage=stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.stage.run(args)
    except ShearsError as e:
        print(f"shears {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if "torch" in sys.modules:  # only a command that imported torch can have joined a process group
            from .distributed import leave

            leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
