"""Tables that survive a narrow terminal and a pipe (`handoffs list`, `optouts list`, `report`).

On a terminal: a rich table whose key columns (the id `handoffs close ID` needs, a step name)
are never cut or folded, however narrow the window; the other columns fold. Anywhere else (a
pipe, a file, a test runner): plain rows, a header and then one line per row with the columns
aligned two spaces apart, at full width, so `| grep`, `| less -S` and `> file` get whole values
(scripts read `--json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """A table column. `key` columns (ids a later command needs, step names) are never cut or
    folded; the others fold on a terminal that is too narrow."""

    name: str
    key: bool = False
    right: bool = False


def print_rows(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    console: Console,
    bold: Sequence[bool] | None = None,
) -> None:
    """A table on a terminal, plain rows elsewhere; cells are data, never rich markup (a
    patient's reply may look like markup)."""
    if not console.is_terminal:
        _plain(columns, rows, console)
        return
    table = Table(title_justify="left")
    for i, column in enumerate(columns):
        widest = max((len(row[i]) for row in rows), default=0)
        table.add_column(
            column.name,
            justify="right" if column.right else "left",
            no_wrap=column.key,
            min_width=max(widest, len(column.name)) if column.key else None,
            overflow="fold",
        )
    for index, cells in enumerate(rows):
        style = "bold" if bold and bold[index] else None
        table.add_row(*map(Text, cells), style=style)
    console.print(table)


def _plain(columns: Sequence[Column], rows: Sequence[Sequence[str]], console: Console) -> None:
    """A header and one line per row, columns aligned two spaces apart and never cut; line breaks
    and tabs inside a cell become spaces, so one row stays one line."""
    lines = [[c.name for c in columns], *([" ".join(cell.split()) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        cells = [
            cell.rjust(width) if column.right else cell.ljust(width)
            for cell, width, column in zip(line, widths, columns, strict=True)
        ]
        console.print(Text("  ".join(cells).rstrip()), soft_wrap=True, crop=False)
