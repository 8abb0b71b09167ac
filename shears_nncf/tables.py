"""Tables, rendered in one place: aligned plain text for the terminal, markdown for the reports and summaries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def text_table(header: Sequence, rows: Iterable[Sequence], *, align: str = "", rule: bool = False,
               total: bool = False) -> list[str]:
    """Columns two spaces apart, each as wide as its widest cell and padded to it, so that every line is as long.

    `align` has an "l" or "r" per column ("r" for numbers; left where it is shorter); `rule` puts dashes under
    the header, `total` also above the last row (a total or an average)."""
    table = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    sides = align.ljust(len(widths), "l")

    def line(row: list[str]) -> str:
        return "  ".join(cell.rjust(w) if side == "r" else cell.ljust(w) for cell, w, side in zip(row, widths, sides))

    dashes = line(["-" * w for w in widths])
    body = [line(row) for row in table[1:]]
    if total and body:
        body.insert(len(body) - 1, dashes)
    return [line(table[0]), *([dashes] if rule else []), *body]


def markdown_table(header: Sequence, rows: Iterable[Sequence]) -> list[str]:
    """A GitHub markdown table; a "|" inside a cell is escaped so that it stays in its cell."""

    def line(row: Sequence) -> str:
        return "| " + " | ".join(str(cell).replace("|", r"\|") for cell in row) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]
