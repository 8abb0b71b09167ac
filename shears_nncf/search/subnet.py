"""A sub-adapter named on the command line: `heuristic|maximal|minimal` or a file, `search.json` among them.

`search.json` is this stage's output; extraction and evaluation read the chosen configuration through here.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import read_json
from ..errors import ShearsError
from ..nls.space import NAMED, Config, SearchSpace


def resolve_subnet(space: SearchSpace, subnet: str) -> tuple[Config, str]:
    """`heuristic|maximal|minimal|FILE.json` -> (configuration, how it was chosen).

    A file is a `search.json` (its chosen configuration), or `{"ranks": [...]}` / `{"ranks": {group: rank}}`,
    or a bare list of ranks."""
    if subnet in NAMED:
        return space.named(subnet), subnet
    path = Path(subnet)
    if path.suffix != ".json" and not path.exists():
        raise ShearsError(f"--subnet {subnet!r}: expected {', '.join(NAMED)} or a .json file")
    data = read_json(path, what="subnet file")
    how = f"file {path}"
    if isinstance(data, dict) and isinstance(data.get("chosen"), dict):
        how = f"{data.get('strategy', 'search')} ({path})"
        data = data["chosen"]
    ranks = data.get("ranks") if isinstance(data, dict) else data
    if isinstance(ranks, dict):
        unknown = sorted(set(ranks) - set(space.group_names))
        missing = [n for n in space.group_names if n not in ranks]
        if unknown or missing:
            raise ShearsError(
                f"{path}: ranks must name every group exactly; unknown {unknown[:3]}, missing {missing[:3]}"
            )
        ranks = [ranks[n] for n in space.group_names]
    if not isinstance(ranks, list):
        raise ShearsError(f"{path}: expected a list of ranks, {{\"ranks\": [...]}} or a search.json")
    return space.validate(ranks, source=str(path)), how
