"""Reading Result records back: merged runs, the grid, the terminal/markdown/HTML/JUnit
reports, and the diff of two runs.

    load_runs(paths)               results.json files or run directories, merged (shards)
    build_grid(results)            rows = kernel_name, columns = stap_name, counts and seconds
    render_terminal(results, c)    the grid and the non-pass lines on a rich console
    render_markdown(results)       the same for a CI step summary, kept under a size limit
    render_html(results)           one self-contained page: the grid, each cell's tests, logs
    write_junit(path, results)     one testcase per record, classname = the cell
    diff_results(base, new)        regressions, fixes, changes, appeared/vanished, identities

A grid cell shows `pass/xfail/fail/error` counts; `fail` counts the real failures (fail-*,
crash, timeout). Flaky and skipped tests are counted apart (`+N flaky`, `+N skip`) because
neither is a failure of stap nor a pass. Seconds are summed per cell with the stages a
cell's tests share (images, kernel, run, testsuite) counted once and compile per test.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import junitparser
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import MatrixError
from harness.matrix import StapSpec
from harness.modules import first_error_lines
from harness.outcomes import FAILURES, Outcome, Result, read_results

Key = tuple[str, str, str]  # (kernel_name, stap_name, test): what identifies a test across runs
CellKey = tuple[str, str]  # (kernel_name, stap_name)

STAGES = ("images", "kernel", "compile", "run", "testsuite")
PER_TEST_STAGES = frozenset({"compile"})  # every other stage is one piece of work per cell

# The order of the non-pass list: what needs a human first.
SEVERITY = (Outcome.ERROR, Outcome.CRASH, Outcome.TIMEOUT, Outcome.FAIL_PASS2, Outcome.FAIL_PASS4,
            Outcome.FAIL_LOAD, Outcome.FAIL_OUTPUT, Outcome.FLAKY, Outcome.PASS, Outcome.XFAIL, Outcome.SKIP)

LABEL_WIDTH = 16  # column headers longer than this get a short label and a legend line


def key(result: Result) -> Key:
    return (result.kernel_name, result.stap_name, result.test)


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def cell_id(result: Result) -> str:
    """The record's cell id; records written before `cell` existed get it rebuilt from the specs."""
    if result.cell:
        return result.cell
    kind, _, rest = result.stap.partition(":")
    value, _, ref = rest.rpartition("@") if kind == "git" else (rest, "", "")
    return f"{result.kernel}-{StapSpec(kind, value, ref).label}"


def needs_attention(result: Result) -> bool:
    """Anything but a clean pass: a pass with a detail is a known failure that passed."""
    return result.outcome is not Outcome.PASS or bool(result.detail)


def reason(result: Result) -> str:
    """One line that says why a result is not a plain pass."""
    if result.outcome is Outcome.XFAIL:
        real = f" (real outcome {result.actual})" if result.actual else ""
        return f"known failure{real}: {first_line(result.xfail_reason)}"
    if result.outcome is Outcome.FLAKY and result.tries:
        tries = ", ".join(t.outcome for t in result.tries)
        failing = next((t.detail for t in result.tries if t.outcome != Outcome.PASS.value and t.detail), "")
        return f"tries: {tries}" + (f": {first_line(failing)}" if failing else "")
    return first_line(result.detail)


# ----------------------------------------------------------------------------------------
# Loading and merging


def _source_file(path: Path) -> Path:
    return path / "results.json" if path.is_dir() else path


def _comparable(result: Result, source: Path) -> dict[str, object]:
    """The record as its file holds it: the same run copied to two places compares equal."""
    return result.as_json(source.parent.resolve())


def load_runs(paths: Iterable[Path | str]) -> list[Result]:
    """Merge the results of several runs (e.g. the shards of one matrix run on many machines).

    A test found twice is an error naming both files, unless both records are identical (the
    same run given twice)."""
    merged: list[Result] = []
    seen: dict[Key, tuple[Result, Path]] = {}
    for path in paths:
        source = _source_file(Path(path))
        for result in read_results(source):
            earlier = seen.get(key(result))
            if earlier is None:
                seen[key(result)] = (result, source)
                merged.append(result)
            elif _comparable(earlier[0], earlier[1]) != _comparable(result, source):
                kernel, stap, test = key(result)
                raise MatrixError(f"{test} of kernel {kernel} x systemtap {stap} is in both {earlier[1]} and "
                                  f"{source} with different results; merge runs that hold different cells")
    return merged


def _relative_to(path: str, base: Path) -> str:
    """Relative when the two share a directory below / (they travel together); else absolute."""
    if not os.path.isabs(path) or os.path.commonpath([path, base]) == os.sep:
        return path
    return os.path.relpath(path, base)


def write_merged(path: Path, results: Sequence[Result]) -> None:
    """A results.json whose artifact paths are relative to its own place (`..` included, so
    a merged file next to downloaded shards still points into them)."""
    base = path.parent.resolve()
    records = []
    for result in results:
        record = result.as_json()
        record["artifacts"] = {name: _relative_to(value, base) for name, value in result.artifacts.items()}
        records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------------------
# The grid


@dataclass
class GridCell:
    kernel_name: str
    stap_name: str
    results: list[Result] = field(default_factory=list)

    @property
    def id(self) -> str:
        return cell_id(self.results[0])

    def count(self) -> Counter[str]:
        """pass / xfail / fail / error, plus flaky and skip."""
        counts: Counter[str] = Counter()
        for result in self.results:
            counts["fail" if result.outcome in FAILURES else result.outcome.value] += 1
        return counts

    def seconds(self) -> dict[str, float]:
        """Seconds per stage: shared stages once per cell, per-test stages summed."""
        totals: dict[str, float] = {}
        for stage in STAGES:
            values = [r.stages[stage].seconds for r in self.results if stage in r.stages]
            if values:
                totals[stage] = sum(values) if stage in PER_TEST_STAGES else max(values)
        return totals

    def cached(self, stage: str) -> bool:
        stages = [r.stages[stage] for r in self.results if stage in r.stages]
        return bool(stages) and all(s.cached for s in stages)

    @property
    def status(self) -> str:
        """The cell's worst outcome class, for colour: error, fail, flaky, xfail, skip, pass."""
        counts = self.count()
        for status in ("error", "fail", "flaky"):
            if counts[status]:
                return status
        if any(r.outcome is Outcome.PASS and r.detail for r in self.results):
            return "fail"  # a known failure that passed fails its pytest item too
        return next((s for s in ("xfail", "skip") if counts[s]), "pass")

    def summary(self) -> str:
        counts = self.count()
        return f"{counts['pass']}/{counts['xfail']}/{counts['fail']}/{counts['error']}"

    def extras(self) -> str:
        counts = self.count()
        return " ".join(f"+{counts[k]} {k}" for k in ("flaky", "skip") if counts[k])


@dataclass
class Grid:
    rows: list[str]  # kernel_name, first-appearance order
    columns: list[str]  # stap_name, first-appearance order
    cells: dict[CellKey, GridCell]
    specs: dict[str, set[str]]  # a row's or column's name -> the specs/identities it ran as

    def cell(self, row: str, column: str) -> GridCell | None:
        return self.cells.get((row, column))

    def seconds(self) -> dict[str, float]:
        totals: Counter[str] = Counter()
        for cell in self.cells.values():
            totals.update(cell.seconds())
        return {stage: totals[stage] for stage in STAGES if stage in totals}


def identity(spec: str, what: str) -> str:
    return f"{spec} ({what})" if what and what != spec else spec


def describe(name: str, spec: str, identity: str) -> str:
    """What a row or column ran as, when that is not its name already: its spec and identity."""
    if spec == name:
        return spec
    return f"{spec} ({identity})" if identity and identity != spec else spec


def build_grid(results: Iterable[Result]) -> Grid:
    grid = Grid([], [], {}, {})
    for result in results:
        if result.kernel_name not in grid.rows:
            grid.rows.append(result.kernel_name)
        if result.stap_name not in grid.columns:
            grid.columns.append(result.stap_name)
        cell = grid.cells.setdefault((result.kernel_name, result.stap_name),
                                     GridCell(result.kernel_name, result.stap_name))
        cell.results.append(result)
        grid.specs.setdefault("kernel:" + result.kernel_name, set()).add(
            describe(result.kernel_name, result.kernel, result.kernel_identity))
        grid.specs.setdefault("stap:" + result.stap_name, set()).add(
            describe(result.stap_name, result.stap, result.stap_identity))
    return grid


def short_label(name: str, width: int = LABEL_WIDTH) -> str:
    """deb:5.6-1 -> 5.6-1, git:URL@release-5.5 -> release-5.5, path:/a/b -> b; then cut."""
    kind, _, rest = name.partition(":")
    if kind == "deb":
        name = rest
    elif kind == "git":
        name = rest.rpartition("@")[2] or rest
    elif kind == "path":
        name = Path(rest).name or rest
    return name if len(name) <= width else name[: width - 1] + "~"


def labels(names: Sequence[str], width: int = LABEL_WIDTH) -> dict[str, str]:
    """A short label per name, unique (a numeric suffix when two would collide)."""
    result: dict[str, str] = {}
    for name in names:
        label = name if len(name) <= width else short_label(name, width)
        base, number = label, 2
        while label in result.values():
            label, number = f"{base[: width - 2]}#{number}", number + 1
        result[name] = label
    return result


def non_pass(results: Iterable[Result]) -> list[Result]:
    """The results a reader must see, worst first, in run order within one outcome."""
    chosen = [r for r in results if needs_attention(r)]
    return sorted(chosen, key=lambda r: SEVERITY.index(r.outcome))


def format_seconds(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def time_lines(grid: Grid) -> list[str]:
    """Where the time went, summed over cells (cells run in parallel: more than wall time),
    and the slowest cell with its biggest stage."""
    totals = grid.seconds()
    if not totals:
        return ["time: no stage durations recorded"]
    parts = []
    for stage, seconds in totals.items():
        cached = sum(1 for c in grid.cells.values() if c.cached(stage))
        note = f" ({cached}/{len(grid.cells)} cells cached)" if stage in ("images", "kernel") and cached else ""
        parts.append(f"{stage} {format_seconds(seconds)}{note}")
    slowest = max(grid.cells.values(), key=lambda c: sum(c.seconds().values()))
    worst_stage = max(slowest.seconds().items(), key=lambda item: item[1])
    return [f"time summed over cells: {'; '.join(parts)}",
            f"slowest cell {slowest.id}: {format_seconds(sum(slowest.seconds().values()))}, mostly {worst_stage[0]}"]


# ----------------------------------------------------------------------------------------
# Terminal

RICH_STYLE = {"pass": "green", "xfail": "yellow", "skip": "dim", "flaky": "yellow", "fail": "bold red",
              "error": "magenta"}
OUTCOME_STATUS = {o: ("fail" if o in FAILURES else o.value) for o in Outcome}
EXPECTED_LINES = 5  # xfail/skip lines shown per cell (a testsuite can have hundreds); failures all
GRID_KEY = "each cell: pass/xfail/fail/error (fail = fail-*, crash, timeout), then flaky/skip and seconds"


def _legend(names: dict[str, str], specs: dict[str, set[str]], prefix: str) -> list[str]:
    """Lines for names that were shortened or ran as something other than their name."""
    lines = []
    for name, label in names.items():
        ran_as = sorted(specs.get(prefix + name, set()) - {name})
        if label != name or ran_as:
            lines.append(f"{label} = {name}" + (f" ({'; '.join(ran_as)})" if ran_as else ""))
    return lines


def grid_table(grid: Grid) -> tuple[Table, list[str]]:
    columns = labels(grid.columns)
    rows = labels(grid.rows, 24)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("kernel \\ systemtap", no_wrap=True)
    for column in grid.columns:
        table.add_column(columns[column], justify="center")
    for row in grid.rows:
        cells = []
        for column in grid.columns:
            cell = grid.cell(row, column)
            if cell is None:
                cells.append("[dim]-[/]")
                continue
            style = RICH_STYLE[cell.status]
            second = " ".join(p for p in (cell.extras(), format_seconds(sum(cell.seconds().values()))) if p)
            cells.append(f"[{style}]{cell.summary()}[/]\n[dim]{escape(second)}[/]")
        table.add_row(escape(rows[row]), *cells)
    legend = _legend(rows, grid.specs, "kernel:") + _legend(columns, grid.specs, "stap:")
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
        console.print("  " + line, markup=False, highlight=False)
    for line in time_lines(grid):
        console.print(line, markup=False, highlight=False)
    attention = non_pass(results)
    if not attention:
        console.print(f"[green]all {len(results)} test(s) passed[/]")
        return
    console.print(f"\n{len(attention)} of {len(results)} test(s) did not simply pass:")
    by_cell: dict[str, list[Result]] = {}
    for result in attention:
        by_cell.setdefault(cell_id(result), []).append(result)
    for cell, cell_results in by_cell.items():
        console.print(f"[bold]{escape(cell)}[/]")
        expected = 0
        for (outcome, why), tests in same_reason(cell_results):
            if outcome in (Outcome.XFAIL, Outcome.SKIP):
                expected += 1
                if expected > EXPECTED_LINES:
                    continue
            style = RICH_STYLE[OUTCOME_STATUS[outcome]]
            console.print(f"  [{style}]{outcome.value:11}[/] {escape(', '.join(tests))}: {escape(why)}",
                          overflow="ellipsis", no_wrap=True, crop=True)
        if expected > EXPECTED_LINES:
            console.print(f"  … {expected - EXPECTED_LINES} more xfail/skip line(s): see report.html", markup=False)
        console.print(f"  reproduce: {cell_results[0].reproduce}", markup=False, highlight=False, soft_wrap=True)


def same_reason(results: Sequence[Result]) -> list[tuple[tuple[Outcome, str], list[str]]]:
    """Tests of one cell that failed the same way share a line (a known failure listed for a
    whole cell would otherwise repeat its reason for every test)."""
    groups: dict[tuple[Outcome, str], list[str]] = {}
    for result in results:
        groups.setdefault((result.outcome, reason(result)), []).append(result.test)
    return list(groups.items())


# ----------------------------------------------------------------------------------------
# Markdown (a CI step summary: GitHub renders it, and limits it to 1 MiB)

MARK = {"pass": "✅", "xfail": "🟡", "skip": "⬜", "flaky": "⚠️", "fail": "❌", "error": "🔧"}


def md_cell(text: str) -> str:
    """Text for a markdown table cell: no pipes or newlines, no HTML (GitHub would render it)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def fenced(text: str) -> str:
    """A code block whose fence is longer than any backtick run inside."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text.rstrip()}\n{fence}"


def markdown_grid(grid: Grid) -> list[str]:
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
            extras = f" {cell.extras()}" if cell.extras() else ""
            seconds = format_seconds(sum(cell.seconds().values()))
            cells.append(f"{MARK[cell.status]} {cell.summary()}{extras} · {seconds}")
        lines.append(f"| {md_cell(rows[row])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"_{GRID_KEY}_")
    legend = _legend(rows, grid.specs, "kernel:") + _legend(columns, grid.specs, "stap:")
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
    return [line, "  <details><summary>detail</summary>", "", fenced(full), "", "  </details>"]


def render_markdown(results: Sequence[Result], limit_bytes: int = 1_000_000) -> str:
    """The grid, where the time went, and every non-pass with its reason (details folded).
    Over `limit_bytes`: the grid, the counts and as many one-line failures as fit."""
    grid = build_grid(results)
    head = ["## stapmatrix", ""] + markdown_grid(grid) + [""] + [line + "  " for line in time_lines(grid)] + [""]
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


# ----------------------------------------------------------------------------------------
# HTML

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
    return _relative_to(path, link_base)


def excerpts(result: Result, link_base: Path | None) -> list[Excerpt]:
    shown = []
    text, path = read_artifact(result, "compile_log")
    shown.append(Excerpt("compile log", compile_excerpt(text) if text is not None else None, path,
                         _link(path, link_base)))
    text, path = read_artifact(result, "console")
    shown.append(Excerpt("guest console", console_excerpt(text, result.test) if text is not None else None, path,
                         _link(path, link_base)))
    for name in ("stdout", "stderr"):
        text, path = read_artifact(result, name)
        shown.append(Excerpt(name, tail(text, 80) if text is not None else None, path, _link(path, link_base)))
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
        legend=_legend(rows, grid.specs, "kernel:") + _legend(columns, grid.specs, "stap:"),
        time_lines=time_lines(grid) if results else [], attention=non_pass(results), reason=reason,
        cell_id=cell_id, status=OUTCOME_STATUS, format_seconds=format_seconds, not_available=NOT_AVAILABLE,
        counts=Counter(r.outcome.value for r in results), total=len(results),
    )


def write_run_reports(run_dir: Path, results: Sequence[Result]) -> None:
    """report.html and report.md next to a run's results.json."""
    (run_dir / "report.html").write_text(render_html(results, link_base=run_dir.resolve()))
    (run_dir / "report.md").write_text(render_markdown(results))


# ----------------------------------------------------------------------------------------
# JUnit


def junit_case(result: Result) -> junitparser.TestCase:
    """Failures are stap's (fail-*, crash, timeout, a known failure that passed); errors are
    infrastructure; xfail, skip and flaky are skipped with their reason (not a failure)."""
    compile_stage = result.stages.get("compile")
    case = junitparser.TestCase(result.test, cell_id(result), compile_stage.seconds if compile_stage else 0.0)
    outcome = result.outcome
    entry: junitparser.Failure | junitparser.Error | junitparser.Skipped | None = None
    if outcome in FAILURES or (outcome is Outcome.PASS and result.detail):
        entry = junitparser.Failure(f"{outcome.value}: {reason(result)}", outcome.value)
    elif outcome is Outcome.ERROR:
        entry = junitparser.Error(reason(result), outcome.value)
    elif outcome in (Outcome.XFAIL, Outcome.SKIP, Outcome.FLAKY):
        entry = junitparser.Skipped(f"{outcome.value}: {reason(result)}", outcome.value)
    if entry is not None:
        entry.text = "\n\n".join(t for t in (result.detail, result.xfail_reason, "reproduce: " + result.reproduce) if t)
        case.result = [entry]
    return case


def write_junit(path: Path, results: Sequence[Result]) -> None:
    """One testsuite per cell, one testcase per record."""
    xml = junitparser.JUnitXml("stapmatrix")
    for cell in build_grid(results).cells.values():
        suite = junitparser.TestSuite(cell.id)
        for result in cell.results:
            suite.add_testcase(junit_case(result))
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    path.parent.mkdir(parents=True, exist_ok=True)
    xml.write(str(path), pretty=True)


# ----------------------------------------------------------------------------------------
# Diff: what changed between two runs, matched by (kernel_name, stap_name, test)
#
# A regression is a test that passed (or failed as known, xfail) before and now does
# anything else. Two outcomes are not regressions but are reported in groups of their own:
# `flaky` now (the test passed in one try), and `error` now (infrastructure: the run says
# nothing about stap). Only regressions make `stapmatrix diff` exit 1.

GROUPS = ("regressions", "errors", "flaky", "changes", "fixes", "appeared", "vanished")
GROUP_TITLES = {
    "regressions": "regressions (passed or known-failed before, fail now)",
    "errors": "infrastructure errors now (not counted as regressions)",
    "flaky": "flaky now (not counted as regressions)",
    "changes": "other outcome changes",
    "fixes": "fixes (did not pass before, pass now)",
    "appeared": "tests that appeared",
    "vanished": "tests that vanished",
}


@dataclass
class Change:
    key: Key
    before: Result | None
    after: Result | None

    @property
    def summary(self) -> str:
        before = self.before.outcome.value if self.before else "(absent)"
        after = self.after.outcome.value if self.after else "(absent)"
        if self.before and self.before.outcome is Outcome.XFAIL:
            before += f" ({self.before.actual})"
        if self.after and self.after.outcome is Outcome.XFAIL:
            after += f" ({self.after.actual})"
        return f"{before} -> {after}"

    @property
    def reason(self) -> str:
        """The new result's reason; for a fix, what it was."""
        if self.after and needs_attention(self.after):
            return reason(self.after)
        return f"was: {reason(self.before)}" if self.before and needs_attention(self.before) else ""

    def as_json(self) -> dict[str, object]:
        return {"kernel_name": self.key[0], "stap_name": self.key[1], "test": self.key[2],
                "before": self.before.outcome.value if self.before else None,
                "after": self.after.outcome.value if self.after else None, "reason": self.reason,
                "reproduce": self.after.reproduce if self.after else ""}


@dataclass
class Diff:
    groups: dict[str, list[Change]] = field(default_factory=lambda: {g: [] for g in GROUPS})
    cells_appeared: list[CellKey] = field(default_factory=list)
    cells_vanished: list[CellKey] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)  # "column NAME: OLD -> NEW"
    compared: int = 0

    @property
    def regressed(self) -> bool:
        return bool(self.groups["regressions"])


def classify(before: Result, after: Result) -> str | None:
    """The group a matched pair belongs to, or None when nothing changed."""
    b, a = before.outcome, after.outcome
    if b is a and before.actual == after.actual:
        return None
    if a is Outcome.FLAKY:
        return "flaky"
    if a is Outcome.ERROR:
        return "errors"
    if b in (Outcome.PASS, Outcome.XFAIL) and a not in (Outcome.PASS, Outcome.XFAIL):
        return "regressions"
    if a is Outcome.PASS and b is not Outcome.ERROR:
        return "fixes"
    return "changes"  # fail-pass4 -> fail-load, pass -> xfail, error -> anything, ...


def _identities(base: Sequence[Result], new: Sequence[Result]) -> list[str]:
    """Rows and columns present in both runs whose spec or identity differs."""
    lines = []
    for what, name_of, spec_of in (("kernel", lambda r: r.kernel_name, lambda r: identity(r.kernel, r.kernel_identity)),
                                   ("systemtap", lambda r: r.stap_name, lambda r: identity(r.stap, r.stap_identity))):
        before: dict[str, set[str]] = {}
        after: dict[str, set[str]] = {}
        for results, specs in ((base, before), (new, after)):
            for result in results:
                specs.setdefault(name_of(result), set()).add(spec_of(result))
        for name in [n for n in before if n in after and before[n] != after[n]]:
            lines.append(f"{what} {name}: {', '.join(sorted(before[name]))} -> {', '.join(sorted(after[name]))}")
    return lines


def diff_results(base: Sequence[Result], new: Sequence[Result]) -> Diff:
    diff = Diff(identities=_identities(base, new))
    before = {key(r): r for r in base}
    after = {key(r): r for r in new}
    cells_before = {k[:2] for k in before}
    cells_after = {k[:2] for k in after}
    diff.cells_appeared = [c for c in dict.fromkeys(k[:2] for k in after) if c not in cells_before]
    diff.cells_vanished = [c for c in dict.fromkeys(k[:2] for k in before) if c not in cells_after]
    for test_key, result in after.items():
        if test_key in before:
            diff.compared += 1
            group = classify(before[test_key], result)
            if group:
                diff.groups[group].append(Change(test_key, before[test_key], result))
        elif test_key[:2] in cells_before:  # whole new cells are listed as cells, not test by test
            diff.groups["appeared"].append(Change(test_key, None, result))
    for test_key, result in before.items():
        if test_key not in after and test_key[:2] in cells_after:
            diff.groups["vanished"].append(Change(test_key, result, None))
    return diff


def _change_line(change: Change) -> str:
    kernel, stap, test = change.key
    return f"{kernel} x {stap} {test}: {change.summary}" + (f": {change.reason}" if change.reason else "")


def _cell_lines(diff: Diff) -> list[tuple[str, list[str]]]:
    return [("cells that appeared", [f"{k} x {s}" for k, s in diff.cells_appeared]),
            ("cells that vanished", [f"{k} x {s}" for k, s in diff.cells_vanished]),
            ("identity changes (same name, another build)", diff.identities)]


def diff_counts(diff: Diff) -> str:
    parts = [f"{len(diff.groups[g])} {g}" for g in GROUPS]
    return f"{diff.compared} test(s) compared: " + ", ".join(parts)


def render_diff_text(diff: Diff) -> str:
    out = []
    for title, lines in _cell_lines(diff):
        if lines:
            out += [f"{title}:"] + [f"  {line}" for line in lines]
    for group in GROUPS:
        changes = diff.groups[group]
        if changes:
            out += [f"{GROUP_TITLES[group]} ({len(changes)}):"] + [f"  {_change_line(c)}" for c in changes]
    out.append(diff_counts(diff))
    out.append("REGRESSED" if diff.regressed else "no regressions")
    return "\n".join(out) + "\n"


def render_diff_markdown(diff: Diff) -> str:
    out = ["## stapmatrix diff", ""]
    for title, lines in _cell_lines(diff):
        if lines:
            out += [f"**{title}**", ""] + [f"- {md_cell(line)}" for line in lines] + [""]
    for group in GROUPS:
        changes = diff.groups[group]
        if not changes:
            continue
        out += [f"### {GROUP_TITLES[group]} ({len(changes)})", "", "| kernel | systemtap | test | change | reason |",
                "| --- | --- | --- | --- | --- |"]
        out += [f"| {md_cell(c.key[0])} | {md_cell(c.key[1])} | {md_cell(c.key[2])} | {md_cell(c.summary)} | "
                f"{md_cell(c.reason)} |" for c in changes]
        out.append("")
    out += [diff_counts(diff), "", "**regressed**" if diff.regressed else "no regressions"]
    return "\n".join(out) + "\n"


def render_diff_json(diff: Diff) -> str:
    document = {
        "regressed": diff.regressed,
        "compared": diff.compared,
        "cells_appeared": [list(c) for c in diff.cells_appeared],
        "cells_vanished": [list(c) for c in diff.cells_vanished],
        "identity_changes": diff.identities,
        **{group: [c.as_json() for c in diff.groups[group]] for group in GROUPS},
    }
    return json.dumps(document, indent=2) + "\n"


DIFF_FORMATS = {"text": render_diff_text, "markdown": render_diff_markdown, "json": render_diff_json}
