"""The grid: rows = kernel_name, columns = stap_name, each cell's counts and seconds, and the
words every report uses for a result that is not a plain pass.

A grid cell shows `pass/xfail/fail/error` counts; `fail` counts the real failures (fail-*,
crash, timeout). Flaky and skipped tests are counted apart (`+N flaky`, `+N skip`) because
neither is a failure of stap nor a pass. Seconds are summed per cell with the stages a
cell's tests share (images, kernel, run, testsuite) counted once and compile per test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.outcomes import FAILURES, Outcome, Result
from harness.report.load import CellKey
from harness.specs import StapSpec
from harness.specs import cell_id as make_cell_id

STAGES = ("images", "kernel", "compile", "run", "check", "installcheck", "testsuite")
# Seconds of each test's own (summed over a cell's tests); every other stage is one piece of
# work per cell: the examples' check and installcheck commands are timed one by one.
PER_TEST_STAGES = frozenset({"compile", "check", "installcheck"})

# The order of the non-pass list: what needs a human first.
SEVERITY = (Outcome.ERROR, Outcome.CRASH, Outcome.TIMEOUT, Outcome.FAIL_PASS2, Outcome.FAIL_PASS4,
            Outcome.FAIL_LOAD, Outcome.FAIL_OUTPUT, Outcome.FLAKY, Outcome.PASS, Outcome.XFAIL, Outcome.SKIP)

LABEL_WIDTH = 16  # column headers longer than this get a short label and a legend line

OUTCOME_STATUS = {o: ("fail" if o in FAILURES else o.value) for o in Outcome}
GRID_KEY = ("each cell: pass/xfail/fail/error (fail = fail-*, crash, timeout), then flaky/skip and its stages' "
            "time (compiles and examples summed over the jobs that ran them at once: more than wall time)")


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def cell_id(result: Result) -> str:
    """The record's cell id; records written before `cell` existed get it rebuilt from the specs."""
    if result.cell:
        return result.cell
    kind, _, rest = result.stap.partition(":")
    value, _, ref = rest.rpartition("@") if kind == "git" else (rest, "", "")
    return make_cell_id(result.kernel, StapSpec(kind, value, ref).label)


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
    rows: set[str] = set()
    columns: set[str] = set()
    for result in results:
        if result.kernel_name not in rows:
            rows.add(result.kernel_name)
            grid.rows.append(result.kernel_name)
        if result.stap_name not in columns:
            columns.add(result.stap_name)
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
    """A short label per name, unique (a numeric suffix when two would collide). Linear in
    the number of names: a grid of thousands of columns with one long prefix is common."""
    result: dict[str, str] = {}
    used: set[str] = set()
    next_number: dict[str, int] = {}
    for name in names:
        label = name if len(name) <= width else short_label(name, width)
        base = label
        while label in used:
            number = next_number.get(base, 2)
            next_number[base] = number + 1
            label = f"{base[: width - 2 - len(str(number)) + 1]}#{number}"
        used.add(label)
        result[name] = label
    return result


def layout(grid: Grid, max_columns: int) -> str:
    """"table" (kernels down, systemtap builds across) or "list" (one line per cell). A grid
    wider than the output allows, or mostly empty, is listed: 2,000 cells of 2,000 kernels
    and 2,000 builds would be a table of 4 million slots (68 s and 1.4 GB of HTML)."""
    slots = len(grid.rows) * len(grid.columns)
    return "table" if len(grid.columns) <= max_columns and slots <= 4 * len(grid.cells) + 64 else "list"


def cells_in_order(grid: Grid) -> list[GridCell]:
    """The cells row by row, each row's in column order: the list layout's order."""
    column = {name: index for index, name in enumerate(grid.columns)}
    row = {name: index for index, name in enumerate(grid.rows)}
    return sorted(grid.cells.values(), key=lambda c: (row[c.kernel_name], column[c.stap_name]))


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


def _legend(names: dict[str, str], specs: dict[str, set[str]], prefix: str) -> list[str]:
    """Lines for names that were shortened or ran as something other than their name."""
    lines = []
    for name, label in names.items():
        ran_as = sorted(specs.get(prefix + name, set()) - {name})
        if label != name or ran_as:
            lines.append(f"{label} = {name}" + (f" ({'; '.join(ran_as)})" if ran_as else ""))
    return lines


def same_reason(results: Sequence[Result]) -> list[tuple[tuple[Outcome, str], list[str]]]:
    """Tests of one cell that failed the same way share a line (a known failure listed for a
    whole cell would otherwise repeat its reason for every test)."""
    groups: dict[tuple[Outcome, str], list[str]] = {}
    for result in results:
        groups.setdefault((result.outcome, reason(result)), []).append(result.test)
    return list(groups.items())


def grid_legend(grid: Grid, rows: dict[str, str], columns: dict[str, str]) -> list[str]:
    """The legend under a grid: rows, then columns, whose label is not their name or that ran
    as something other than their name."""
    return _legend(rows, grid.specs, "kernel:") + _legend(columns, grid.specs, "stap:")
