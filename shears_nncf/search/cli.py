"""`shears search`: its flags made a `SearchConfig` for `stage.search_sub_adapter`."""

from __future__ import annotations

from .stage import SearchConfig, search_sub_adapter


def search_command(args) -> None:
    # Bad flags fail before anything is loaded, also in a Namespace built without argparse (its `choices=` check).
    config = SearchConfig.from_args(args)
    search_sub_adapter(args.super_adapter, config, args.output, model=args.model, overwrite=args.overwrite)
