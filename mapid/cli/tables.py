"""Tables that fit the width they are drawn in, the way systemctl's do.

A cell never wraps and no column is padded beyond its longest cell: when a table is wider
than the console (the terminal, COLUMNS, or 80 columns off a terminal; see
output.console), the columns that hold free text (display names, paths, status strings)
give way first and their long cells end in an ellipsis, while the key columns (what a
command takes, MAPI names) stay whole as long as the others can shrink. `--json` output
never goes through here, so it always holds the full values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text, TextType

GAP = 2
"""Blank cells between two columns (one of padding, one of rule)."""

FLEXIBLE_MIN = 12
"""The narrowest a free-text column is made before key columns give way..."""

FLEXIBLE_LAST = 4
"""...and the narrowest it is made before a key column is cut: a key cut short is no use
to copy, a free-text column of three letters and an ellipsis costs little."""


@dataclass(frozen=True)
class Col:
    """One column: its header, whether it is a key column, and how it is aligned."""

    header: str
    keep: bool = False
    """A key column: kept whole while the free-text columns can still shrink."""
    right: bool = False
    min_width: int = FLEXIBLE_MIN
    """A free-text column shrinks to this (or its natural width) before key columns do."""


def _shrink(widths: list[int], floors: Sequence[int], which: Sequence[int], excess: int) -> int:
    """Take up to `excess` cells from the columns `which`, always from the widest (the
    rightmost of equals), never below their floors; returns what is still in excess."""
    while excess > 0:
        candidates = [i for i in which if widths[i] > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: (widths[i], i))
        widths[widest] -= 1
        excess -= 1
    return excess


def fit_widths(natural: Sequence[int], columns: Sequence[Col], available: int) -> list[int]:
    """Content widths for `columns` whose natural widths are `natural`, summing to at most
    `available` where that can be done with every column at least one cell wide.

    Free-text columns shrink first (to their min_width, then to FLEXIBLE_LAST), then every
    column (to one cell): that order is what keeps the key columns whole "where possible"."""
    widths = list(natural)
    excess = sum(widths) - available
    flexible = [i for i, c in enumerate(columns) if not c.keep]
    floors = [min(n, c.min_width) for n, c in zip(natural, columns, strict=True)]
    excess = _shrink(widths, floors, flexible, excess)
    excess = _shrink(widths, [min(n, FLEXIBLE_LAST) for n in natural], flexible, excess)
    _shrink(widths, [min(1, n) for n in natural], range(len(widths)), excess)
    return widths


def rstrip_line(line: list[Segment]) -> list[Segment]:
    """A rendered line with its trailing blanks removed (no style shows on a blank here:
    these tables set no background), so a pipe gets no padding."""
    kept = list(line)
    while kept and (kept[-1].control or not kept[-1].text.rstrip()):
        kept.pop()
    if kept:
        last = kept[-1]
        kept[-1] = Segment(last.text.rstrip(), last.style, last.control)
    return kept


def text_width(cell: TextType) -> int:
    """The widest line of a cell, in terminal cells."""
    plain = cell.plain if isinstance(cell, Text) else str(cell)
    return max((cell_len(line) for line in plain.split("\n")), default=0)


class FitTable:
    """A rich renderable that lays its rows out as a table at the width it is given."""

    def __init__(self, *columns: Col, title: str | None = None) -> None:
        self.columns = columns
        self.title = title
        self.rows: list[tuple[TextType, ...]] = []

    def add_row(self, *cells: TextType) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    def natural_widths(self) -> list[int]:
        """Each column's widest cell, its header included."""
        return [
            max([cell_len(col.header), *(text_width(row[i]) for row in self.rows)])
            for i, col in enumerate(self.columns)
        ]

    def table(self, width: int) -> Table:
        """The rich Table at `width` cells: fixed column widths, cells cut with an ellipsis."""
        overhead = GAP * (len(self.columns) - 1)
        widths = fit_widths(self.natural_widths(), self.columns, max(0, width - overhead))
        table = Table(
            title=self.title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, GAP - 1, 0, 0),
        )
        for col, col_width in zip(self.columns, widths, strict=True):
            table.add_column(
                col.header,
                width=max(col_width, 1),
                no_wrap=True,
                overflow="ellipsis",
                justify="right" if col.right else "left",
            )
        for row in self.rows:
            table.add_row(*row)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The table's lines without the blanks that pad them to the full width."""
        new_line = Segment.line()
        for line in console.render_lines(self.table(options.max_width), options, pad=False):
            yield from rstrip_line(line)
            yield new_line

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        natural = sum(self.natural_widths()) + GAP * (len(self.columns) - 1)
        return Measurement(min(natural, options.max_width), min(natural, options.max_width))
