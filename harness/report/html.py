"""One self-contained HTML page (inline CSS, no scripts, fonts or images; opens offline): the
grid, each cell opening to its tests, each test with its reason, tries, log excerpts and
reproducer. Also the report.html and report.md every run leaves next to its results.json.

Records are input from outside (CI merges results that pull-request jobs uploaded, and
publishes the page): every field is escaped by Jinja's autoescape, a Content-Security-Policy
forbids scripts and every load from elsewhere, and an artifact is shown only when it resolves
to a regular file inside the directory its record was read from (symlinks followed, `..`
and absolute paths elsewhere refused), read from its end up to EXCERPT_BYTES. Links go only
to such files that also lie under the page's own directory, as `./`-relative paths.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import markupsafe

from harness.bounded import UnreadableFile, inside, read_tail, size_text
from harness.logs import first_error_lines
from harness.outcomes import Result
from harness.report.escape import href, terminal
from harness.report.grid import (
    GRID_KEY,
    OUTCOME_STATUS,
    SEVERITY,
    STAGES,
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
from harness.report.markdown import render_markdown

EXCERPT_BYTES = 256 * 1024  # read no more of a log than this (from its end)
HTML_COLUMNS = 40  # more systemtap builds than this: the grid lists one row per cell
NOT_AVAILABLE = "not available"


def artifact_path(result: Result, name: str) -> tuple[Path | None, str]:
    """(the artifact's real path, "") when it may be read, else (None, why not)."""
    path = result.artifacts.get(name, "")
    if not path:
        return None, ""
    real = inside(path, result.root) if result.root else Path(os.path.realpath(path))
    if real is None:
        return None, "outside the run directory its results file is in"
    return real, ""


def read_artifact(result: Result, name: str) -> tuple[str | None, str, bool, Path | None]:
    """(text, what to say about it, cut, real path): text is None when the record names no
    such file, or it may not be read (outside its run, not a regular file) or is not here
    (results copied from another machine without their artifacts); then the second part says
    why. A file longer than EXCERPT_BYTES gives its end: `cut`, and the second part says how
    much of how much."""
    path = result.artifacts.get(name, "")
    if not path:
        return None, "", False, None
    real, why = artifact_path(result, name)
    if real is None:
        return None, f"{path}: {why}", False, None
    try:
        data, size = read_tail(real, EXCERPT_BYTES)
    except UnreadableFile as error:
        return None, f"{path} {error}", False, None
    if size > len(data):
        return data.decode(errors="replace"), f"the last {size_text(len(data))} of {size_text(size)}", True, real
    return data.decode(errors="replace"), path, False, real


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
    path: str  # the path, and when text is None why it is not shown
    link: str  # `./`-relative to the report, "" when not linkable
    cut: bool = False  # only the file's end is shown: `path` says how much of how much


def _link(real: Path | None, page_dir: str | None) -> str:
    """A `./`-relative link from a page in `page_dir` (resolved) to an artifact that was read
    (`real`, resolved), when it lies under that directory; else none."""
    if real is None or page_dir is None or os.path.commonpath([real, page_dir]) != page_dir:
        return ""
    return href(os.path.relpath(real, page_dir))


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
    page_dir = os.path.realpath(link_base) if link_base is not None else None
    shown = []
    for name, title, excerpt in EXCERPTS:
        if name not in result.artifacts:
            continue
        text, about, cut, real = read_artifact(result, name)
        shown.append(Excerpt(title, excerpt(text, result.test) if text is not None else None, about,
                             _link(real, page_dir), cut))
    return shown


def _visible_controls(value: object) -> object:
    """Every printed value, before autoescape: control characters shown as \\xNN (HTML does
    not allow most of them, and a page is also read with `cat` and `less`)."""
    if isinstance(value, markupsafe.Markup):  # already HTML (none of the template's values is)
        return value
    return terminal(value) if isinstance(value, str) else value


def _html_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              finalize=_visible_controls)


def render_html(results: Sequence[Result], link_base: Path | None = None, title: str = "stapmatrix report") -> str:
    """One self-contained page (inline CSS, no scripts, fonts or images). `link_base`: the
    directory the page will be in, to link the full logs next to the excerpts."""
    grid = build_grid(results)
    columns = labels(grid.columns)
    rows = labels(grid.rows, 24)
    cells = [{"cell": cell, "tests": [{"result": r, "reason": reason(r), "excerpts": excerpts(r, link_base)}
                                      for r in sorted(cell.results, key=lambda r: SEVERITY.index(r.outcome))]}
             for cell in grid.cells.values()]
    listed = cells_in_order(grid) if layout(grid, HTML_COLUMNS) == "list" else []
    return _html_environment().get_template("report.html.j2").render(
        title=title, grid=grid, columns=columns, rows=rows, cells=cells, stages=STAGES, grid_key=GRID_KEY, listed=listed,
        legend=grid_legend(grid, rows, columns),
        time_lines=time_lines(grid) if results else [], attention=non_pass(results), reason=reason,
        cell_id=cell_id, status=OUTCOME_STATUS, format_seconds=format_seconds, not_available=NOT_AVAILABLE,
        counts=Counter(r.outcome.value for r in results), total=len(results),
    )


def write_run_reports(run_dir: Path, results: Sequence[Result]) -> None:
    """report.html and report.md next to a run's results.json."""
    (run_dir / "report.html").write_text(render_html(results, link_base=run_dir.resolve()))
    (run_dir / "report.md").write_text(render_markdown(results))
