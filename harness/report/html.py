"""One self-contained HTML page (inline CSS, no scripts, fonts or images; opens offline): the
grid, each cell opening to its tests, each test with its reason, tries, log excerpts and
reproducer. Also the report.html and report.md every run leaves next to its results.json."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from harness.logs import first_error_lines
from harness.outcomes import Result
from harness.report.grid import (
    GRID_KEY,
    OUTCOME_STATUS,
    SEVERITY,
    STAGES,
    build_grid,
    cell_id,
    format_seconds,
    grid_legend,
    labels,
    non_pass,
    reason,
    time_lines,
)
from harness.report.load import relative_to
from harness.report.markdown import render_markdown

EXCERPT_BYTES = 256 * 1024  # read no more of a log than this (from its end)
NOT_AVAILABLE = "not available"


def read_artifact(result: Result, name: str) -> tuple[str | None, str]:
    """(text, path): text is None when the record names no such file or it is not here
    (results copied from another machine without their artifacts)."""
    path = result.artifacts.get(name, "")
    if not path:
        return None, ""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - EXCERPT_BYTES))
            return file.read().decode(errors="replace"), path
    except OSError:
        return None, path


def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def compile_excerpt(text: str) -> str:
    """The first error lines (the cause) and the log's end (where stap gave up)."""
    errors = first_error_lines(text, 12)
    end = tail(text, 15)
    return end if errors in end else f"{errors}\n…\n{end}"


def console_excerpt(text: str, test: str, lines: int = 60) -> str:
    """The console lines between the guest's `stapmatrix: start TEST` and `end TEST` markers
    (a crashed test has no end: up to the panic), or the boot's end without markers."""
    all_lines = text.rstrip().splitlines()
    start = next((i for i, line in enumerate(all_lines) if line.rstrip().endswith(f"stapmatrix: start {test}")), None)
    if start is None:
        return "(no console lines marked for this test; the boot's last lines:)\n" + "\n".join(all_lines[-20:])
    end = next((i for i in range(start + 1, len(all_lines))
                if all_lines[i].rstrip().endswith(f"stapmatrix: end {test}")), len(all_lines) - 1)
    section = all_lines[start : end + 1]
    if len(section) > lines:
        section = section[: lines // 2] + [f"… {len(section) - lines} lines …"] + section[-lines // 2 :]
    return "\n".join(section)


@dataclass
class Excerpt:
    title: str
    text: str | None  # None: not available
    path: str
    link: str  # relative to the report, "" when not linkable


def _link(path: str, link_base: Path | None) -> str:
    if not path or link_base is None or not os.path.exists(path):
        return ""
    return relative_to(path, link_base)


EXCERPTS = (  # (artifact, title, how much of it); a record shows those it names
    ("command", "command", lambda text, test: tail(text, 80)),
    ("output", "output", lambda text, test: tail(text, 80)),
    ("compile_log", "compile log", lambda text, test: compile_excerpt(text)),
    ("console", "guest console", console_excerpt),
    ("stdout", "stdout", lambda text, test: tail(text, 80)),
    ("stderr", "stderr", lambda text, test: tail(text, 80)),
    ("systemtap.log", "systemtap.log", lambda text, test: tail(text, 80)),
)


def excerpts(result: Result, link_base: Path | None) -> list[Excerpt]:
    shown = []
    for name, title, excerpt in EXCERPTS:
        if name not in result.artifacts:
            continue
        text, path = read_artifact(result, name)
        shown.append(Excerpt(title, excerpt(text, result.test) if text is not None else None, path,
                             _link(path, link_base)))
    return shown


def _html_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(results: Sequence[Result], link_base: Path | None = None, title: str = "stapmatrix report") -> str:
    """One self-contained page (inline CSS, no scripts, fonts or images). `link_base`: the
    directory the page will be in, to link the full logs next to the excerpts."""
    grid = build_grid(results)
    columns = labels(grid.columns)
    rows = labels(grid.rows, 24)
    cells = [{"cell": cell, "tests": [{"result": r, "reason": reason(r), "excerpts": excerpts(r, link_base)}
                                      for r in sorted(cell.results, key=lambda r: SEVERITY.index(r.outcome))]}
             for cell in grid.cells.values()]
    return _html_environment().get_template("report.html.j2").render(
        title=title, grid=grid, columns=columns, rows=rows, cells=cells, stages=STAGES, grid_key=GRID_KEY,
        legend=grid_legend(grid, rows, columns),
        time_lines=time_lines(grid) if results else [], attention=non_pass(results), reason=reason,
        cell_id=cell_id, status=OUTCOME_STATUS, format_seconds=format_seconds, not_available=NOT_AVAILABLE,
        counts=Counter(r.outcome.value for r in results), total=len(results),
    )


def write_run_reports(run_dir: Path, results: Sequence[Result]) -> None:
    """report.html and report.md next to a run's results.json."""
    (run_dir / "report.html").write_text(render_html(results, link_base=run_dir.resolve()))
    (run_dir / "report.md").write_text(render_markdown(results))
