"""The grid, the durations and every non-pass as markdown: a CI step summary (GitHub renders
it, and limits it to 1 MiB)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from harness.outcomes import Result
from harness.report.escape import markdown_block, markdown_inline
from harness.report.grid import (
    GRID_KEY,
    OUTCOME_STATUS,
    STAGES,
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
    reason,
    time_lines,
)

MARK = {"pass": "✅", "xfail": "🟡", "skip": "⬜", "flaky": "⚠️", "fail": "❌", "error": "🔧"}


def md_cell(text: str) -> str:
    """Record text for a markdown line or table cell (harness/report/escape.py)."""
    return markdown_inline(text)


def fenced(text: str) -> str:
    """Record text as a code block whose fence is longer than any backtick run inside."""
    return markdown_block(text)


MARKDOWN_COLUMNS = 16  # more systemtap builds than this: one table row per cell


def _cell_text(cell: GridCell) -> str:
    extras = f" {cell.extras()}" if cell.extras() else ""
    return f"{MARK[cell.status]} {cell.summary()}{extras} · {format_seconds(sum(cell.seconds().values()))}"


def markdown_grid(grid: Grid) -> list[str]:
    if layout(grid, MARKDOWN_COLUMNS) == "list":
        lines = ["| kernel | systemtap | result |", "| --- | --- | --- |"]
        lines += [f"| {md_cell(c.kernel_name)} | {md_cell(c.stap_name)} | {_cell_text(c)} |" for c in cells_in_order(grid)]
        return lines + ["", f"_{GRID_KEY}_"]
    columns = labels(grid.columns)
    rows = labels(grid.rows, 24)
    lines = ["| kernel \\ systemtap | " + " | ".join(md_cell(columns[c]) for c in grid.columns) + " |",
             "| --- |" + " --- |" * len(grid.columns)]
    for row in grid.rows:
        cells = []
        for column in grid.columns:
            cell = grid.cell(row, column)
            if cell is None:
                cells.append("–")
                continue
            cells.append(_cell_text(cell))
        lines.append(f"| {md_cell(rows[row])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"_{GRID_KEY}_")
    legend = grid_legend(grid, rows, columns)
    lines += [f"- {md_cell(line)}" for line in legend]
    return lines


def markdown_times(grid: Grid) -> list[str]:
    lines = ["| cell | " + " | ".join(STAGES) + " | total |", "| --- |" + " ---: |" * (len(STAGES) + 1)]
    for cell in grid.cells.values():
        seconds = cell.seconds()
        values = [format_seconds(seconds[s]) + (" (cached)" if cell.cached(s) and s != "run" else "")
                  if s in seconds else "" for s in STAGES]
        lines.append(f"| {md_cell(cell.id)} | " + " | ".join(values) + f" | {format_seconds(sum(seconds.values()))} |")
    return lines


def markdown_result(result: Result, with_details: bool) -> list[str]:
    line = f"- {MARK[OUTCOME_STATUS[result.outcome]]} `{result.outcome.value}` **{md_cell(cell_id(result))}** " \
           f"{md_cell(result.test)}: {md_cell(reason(result))}"
    full = "\n\n".join(t for t in (result.detail, result.xfail_reason) if t)
    if not with_details or full.strip() == reason(result):
        return [line]
    # The blank line after </details> ends its HTML block: without it markdown would take the
    # next line, a record's test name and reason, for raw HTML too.
    return [line, "  <details><summary>detail</summary>", "", fenced(full), "", "  </details>", ""]


def render_markdown(results: Sequence[Result], limit_bytes: int = 1_000_000) -> str:
    """The grid, where the time went, and every non-pass with its reason (details folded).
    Over `limit_bytes`: the grid, the counts and as many one-line failures as fit."""
    grid = build_grid(results)
    head = ["## stapmatrix", ""] + markdown_grid(grid) + [""] + [md_cell(line) + "  " for line in time_lines(grid)] + [""]
    attention = non_pass(results)
    counts = Counter(r.outcome.value for r in results)
    summary = f"{len(results)} test(s): " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    full = head + ["### Where the time went", ""] + markdown_times(grid) + ["", f"### Not passed ({len(attention)})", "",
                                                                           summary, ""]
    for result in attention:
        full += markdown_result(result, with_details=True)
    text = "\n".join(full) + "\n"
    if len(text.encode()) <= limit_bytes:
        return text
    return _short_markdown(head, summary, attention, limit_bytes)


def _short_markdown(head: list[str], summary: str, attention: list[Result], limit_bytes: int) -> str:
    lines = head + [summary, ""]
    note_room = 300  # the closing note
    size = len("\n".join(lines).encode()) + note_room
    shown = 0
    for result in attention:
        line = markdown_result(result, with_details=False)[0]
        if size + len(line.encode()) + 1 > limit_bytes:
            break
        lines.append(line)
        size += len(line.encode()) + 1
        shown += 1
    lines += ["", (f"_Shortened to fit {limit_bytes} bytes: {shown} of {len(attention)} non-pass result(s) shown, "
                   "without details; the full list is in report.html and results.json._")]
    text = "\n".join(lines) + "\n"
    return text if len(text.encode()) <= limit_bytes else text.encode()[: limit_bytes - 4].decode(errors="ignore") + "\n…\n"
