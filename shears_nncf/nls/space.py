"""The search space of a super-adapter: one descending rank list per group; a configuration picks one rank each.

A configuration is a tuple of ranks in group order. The named configurations need no evaluation:
`maximal` (every group's first rank, the whole super-adapter), `minimal` (the last) and the paper's
heuristic (Eq. 3: the middle of every list, `space[(n - 1) // 2]`). Neighbours, the moves of
hill-climbing, change one group's rank by one step in its list. The space is the super-adapter's (its
config's rank lists), so it lives with the super-adapter; `search.subnet` reads a chosen one from a file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from ..choices import Choice, Choices
from ..config import strictly_descending
from ..errors import ShearsError

Config = tuple[int, ...]
# The configurations chosen by name (`--subnet`, and the search's fixed strategies): each is the property of its name.
NAMED = Choices(
    "named configuration",
    Choice("maximal", "every group's largest rank (the whole super-adapter)"),
    Choice("heuristic", "the middle rank of every group (the paper's Eq. 3)"),
    Choice("minimal", "every group's smallest rank"),
)


@dataclass(frozen=True)
class SearchSpace:
    ranks: tuple[tuple[int, ...], ...]  # per group, descending; ranks[g][0] is the super-adapter's rank
    group_names: tuple[str, ...]

    @classmethod
    def of(cls, ranks: Sequence[Sequence[int]], group_names: Sequence[str] | None = None) -> "SearchSpace":
        ranks = tuple(tuple(int(r) for r in options) for options in ranks)
        if not ranks or any(not options for options in ranks):
            raise ShearsError("the search space needs at least one group with at least one rank")
        for options in ranks:
            if not strictly_descending(options):
                raise ShearsError(f"rank list {list(options)} must be strictly descending")
        names = tuple(group_names) if group_names is not None else tuple(str(g) for g in range(len(ranks)))
        if len(names) != len(ranks):
            raise ShearsError(f"{len(names)} group names for {len(ranks)} rank lists")
        return cls(ranks, names)

    def __len__(self) -> int:
        return len(self.ranks)

    @property
    def maximal(self) -> Config:
        return tuple(options[0] for options in self.ranks)

    @property
    def minimal(self) -> Config:
        return tuple(options[-1] for options in self.ranks)

    @property
    def heuristic(self) -> Config:
        """Eq. 3 of the paper: the middle rank of every group, chosen without any evaluation."""
        return tuple(options[(len(options) - 1) // 2] for options in self.ranks)

    def sample(self, rng: random.Random) -> Config:
        """A uniformly random rank per group, drawn in group order (as NNCF's `get_random_config` draws it): the one
        draw that every trainer of a super-adapter (BootstrapNAS, quantization-aware) makes per micro-batch."""
        return tuple(rng.choice(options) for options in self.ranks)

    def named(self, name: str) -> Config:
        return getattr(self, NAMED[name].name)

    def indices(self, config: Config) -> tuple[int, ...]:
        """Position of each rank in its group's list (0 = largest): the design variables of the GA."""
        return tuple(options.index(r) for options, r in zip(self.ranks, config))

    def from_indices(self, indices: Sequence[int]) -> Config:
        return tuple(options[int(i)] for options, i in zip(self.ranks, indices))

    def neighbours(self, config: Config) -> list[Config]:
        """Every configuration one step away in one group's list, in group order (smaller rank first)."""
        result = []
        for g, i in enumerate(self.indices(config)):
            for j in (i + 1, i - 1):
                if 0 <= j < len(self.ranks[g]):
                    result.append(config[:g] + (self.ranks[g][j],) + config[g + 1:])
        return result

    def validate(self, config: Sequence[int], source: str = "configuration") -> Config:
        """A configuration from outside (a file, the CLI): one rank per group, each in its group's list."""
        if len(config) != len(self.ranks):
            raise ShearsError(f"{source} has {len(config)} ranks, but the super-adapter has {len(self.ranks)} groups; give one rank per group")
        for name, r, options in zip(self.group_names, config, self.ranks):
            if not isinstance(r, int) or isinstance(r, bool) or r not in options:
                raise ShearsError(f"{source}: rank {r!r} of group {name} is not in its rank list {list(options)}")
        return tuple(config)


def sub_adapter_rng(seed: int, micro_batch: int) -> random.Random:
    """The generator that draws the sub-adapter of global micro-batch `micro_batch`.

    Every rank builds the same generator from (seed, micro-batch index), so all ranks activate the same
    sub-adapter without any communication. We chose this over broadcasting rank 0's draw because it needs
    no collective per micro-batch (on NCCL that is a device tensor and a sync before every forward), it
    holds however the global `random` is used elsewhere on one rank but not another (NNCF's own sampler
    draws from the global `random`; the Shears reference relies on every rank seeding and consuming it
    alike, as NNCF's `compression_ctrl.distributed()`, which it calls, is a no-op for progressive
    shrinking in NNCF 2.19), a one-process run with a W times larger batch draws the same sequence, and
    a resumed run needs no saved generator state: the index is the optimizer step times the accumulation
    plus the micro-batch within the step. A string seed is hashed with SHA-512 by `random`, the same in
    every process whatever PYTHONHASHSEED is.
    """
    return random.Random(f"shears-nls:{seed}:{micro_batch}")
