"""The grid and the non-pass lines on a rich console: what `stapmatrix report`, `stapmatrix
run` and the end of every pytest run print. Colour only on a terminal. Every field from a
record is shown with its control characters escaped (harness/report/escape.py) and never
read as rich markup."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.outcomes import Outcome, Result
from harness.report.escape import terminal_line
from harness.report.grid import (
    GRID_KEY,
    OUTCOME_STATUS,
    Grid,
    GridCell,
    build_grid,
    cell_id,
    cells_in_order,
    format_seconds,
    grid_legend,
    labels,
    layout,
    non_pass,
    same_reason,
    time_lines,
)

RICH_STYLE = {"pass": "green", "xfail": "yellow", "skip": "dim", "flaky": "yellow", "fail": "bold red",
              "error": "magenta"}
EXPECTED_LINES = 5  # xfail/skip lines shown per cell (a testsuite can have hundreds); failures all


def plain(text: str) -> str:
    """Record text inside rich markup: control characters escaped, brackets not markup."""
    return escape(terminal_line(text))


TERMINAL_COLUMNS = 12  # more systemtap builds than this: one line per cell instead of a table


def _cell_text(cell: GridCell) -> tuple[str, str]:
    second = " ".join(p for p in (cell.extras(), format_seconds(sum(cell.seconds().values()))) if p)
    return f"[{RICH_STYLE[cell.status]}]{cell.summary()}[/]", f"[dim]{escape(second)}[/]"


def grid_list(grid: Grid) -> Table:
    """The list layout: one line per cell (a wide or mostly empty grid)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for title in ("kernel", "systemtap", "pass/xfail/fail/error", ""):
        table.add_column(title, no_wrap=title != "")
    for cell in cells_in_order(grid):
        table.add_row(plain(cell.kernel_name), plain(cell.stap_name), *_cell_text(cell))
    return table


def grid_table(grid: Grid) -> tuple[Table, list[str]]:
    if layout(grid, TERMINAL_COLUMNS) == "list":
        return grid_list(grid), []
    columns = labels(grid.columns)
    rows = labels(grid.rows, 24)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("kernel \\ systemtap", no_wrap=True)
    for column in grid.columns:
        table.add_column(plain(columns[column]), justify="center")
    for row in grid.rows:
        cells = []
        for column in grid.columns:
            cell = grid.cell(row, column)
            if cell is None:
                cells.append("[dim]-[/]")
                continue
            cells.append("\n".join(_cell_text(cell)))
        table.add_row(plain(rows[row]), *cells)
    legend = grid_legend(grid, rows, columns)
    return table, legend


def render_terminal(results: Sequence[Result], console: Console) -> None:
    """The grid, the legend, where the time went, then every result that is not a plain pass
    (grouped by cell, with the cell's reproducer)."""
    if not results:
        console.print("stapmatrix: no results")
        return
    grid = build_grid(results)
    table, legend = grid_table(grid)
    console.print(table)
    console.print(GRID_KEY, markup=False, highlight=False)
    for line in legend:
        console.print("  " + terminal_line(line), markup=False, highlight=False)
    for line in time_lines(grid):
        console.print(terminal_line(line), markup=False, highlight=False)
    attention = non_pass(results)
    if not attention:
        console.print(f"[green]all {len(results)} test(s) passed[/]")
        return
    console.print(f"\n{len(attention)} of {len(results)} test(s) did not simply pass:")
    by_cell: dict[str, list[Result]] = {}
    for result in attention:
        by_cell.setdefault(cell_id(result), []).append(result)
    for cell, cell_results in by_cell.items():
        console.print(f"[bold]{plain(cell)}[/]")
        expected = 0
        for (outcome, why), tests in same_reason(cell_results):
            if outcome in (Outcome.XFAIL, Outcome.SKIP):
                expected += 1
                if expected > EXPECTED_LINES:
                    continue
            style = RICH_STYLE[OUTCOME_STATUS[outcome]]
            console.print(f"  [{style}]{outcome.value:11}[/] {plain(', '.join(tests))}: {plain(why)}",
                          overflow="ellipsis", no_wrap=True, crop=True)
        if expected > EXPECTED_LINES:
            console.print(f"  … {expected - EXPECTED_LINES} more xfail/skip line(s): see report.html", markup=False)
        console.print(f"  reproduce: {terminal_line(cell_results[0].reproduce)}", markup=False, highlight=False,
                      soft_wrap=True)
