"""A family of string choices (search strategies, metrics, weight formats, ...), declared once.

Each entry is a name, its help text and, where the choice selects code, its handler. The one table gives
argparse its `choices=` and the option's help (`stages.py`), so `shears run`'s check of a config's value as well;
its lookup is the check and the dispatch, and an unknown name is one `ShearsError` listing the valid ones. A
handler given as "module:function" is imported only when chosen, so a family can be declared beside the
package that owns it without importing torch (`shears --help` stays instant, as with the stage handlers).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import ShearsError


@dataclass(frozen=True)
class Choice:
    name: str
    help: str
    handler: Callable | str | None = None  # a callable, or "module:function" imported when it is chosen

    @property
    def function(self) -> Callable:
        if isinstance(self.handler, str):
            module, name = self.handler.split(":")
            return getattr(importlib.import_module(module), name)
        return self.handler


class Choices:
    """The choices of one family by name, in declaration order; `choices[name]` is the entry or a ShearsError.

    Iterating gives the names, so the table itself is an argparse `choices=`."""

    def __init__(self, what: str, *choices: Choice):
        self.what = what  # the family in words, for the error: "unknown {what} 'x'"
        self._by_name = {choice.name: choice for choice in choices}

    def __getitem__(self, name: str) -> Choice:
        if name not in self:
            raise ShearsError(f"unknown {self.what} {name!r}; expected one of {', '.join(self)}")
        return self._by_name[name]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._by_name  # a config's list or number is no name, not a crash

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Choices({self.what!r}: {', '.join(self)})"

    def values(self) -> list[Choice]:
        return list(self._by_name.values())

    def help(self) -> str:
        """Every name with its help, for the option's help text."""
        return "; ".join(f"{choice.name}: {choice.help}" for choice in self.values())
