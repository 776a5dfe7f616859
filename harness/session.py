"""A run: its directory, its plan, its cells run and recorded, their results merged. Both
front ends use it, `stapmatrix run` (one cell from the command line) and the pytest plugin
(a matrix file, one xdist group per cell), so a cell runs, is recorded and merges the same
way whichever started it.

    RUN/                  artifacts/run-YYYYmmdd-HHMMSS (STAPMATRIX_ARTIFACTS)
    RUN/progress.log      every event of every process, for people (harness/progress.py)
    RUN/events.jsonl      the same events as records
    RUN/CELL/             the cell's artifacts (harness/cell.py)
    RUN/cells/CELL.json   the cell's results, written by whichever process ran it
    RUN/results.json      every cell's results, merged by the process that owns the run
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from harness import docker_env, registry
from harness.archive import Archive
from harness.cell import CellContext, run_cell
from harness.errors import StapmatrixError
from harness.matrix import Matrix, load_matrix
from harness.outcomes import Result, read_results, write_results
from harness.plan import Cell, Plan, make_plan, select_cell
from harness.progress import CellFinished, CellStarted, ProgressLog
from harness.settings import artifacts_root


def new_run_dir() -> Path:
    """A fresh run directory under STAPMATRIX_ARTIFACTS, named after the time it started."""
    path = artifacts_root() / time.strftime("run-%Y%m%d-%H%M%S")
    suffix = 0
    while True:
        candidate = path if suffix == 0 else path.with_name(f"{path.name}-{suffix}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            suffix += 1


def plan_matrix(path: Path, archive: Archive, cell: str | None = None) -> tuple[Matrix, Plan]:
    """A matrix file read and planned (only `cell`'s kernel and systemtap build when given)."""
    registry.configured()  # a bad STAPMATRIX_REGISTRY is bad input, before anything runs
    matrix = load_matrix(path)
    if cell:
        matrix = select_cell(matrix, cell)
    return matrix, make_plan(matrix, archive)


def matrix_context(matrix: Matrix, reruns: int) -> CellContext:
    return CellContext(matrix.allow_splats, matrix.known_failure, reruns)


_prepared: list[bool] = []


def prepare_process(docker_required: bool) -> None:
    """Once per process, before its first cell, not at start-up: planning (`check`,
    `--collect-only`) must never contact Docker, and only a process that starts containers
    needs SIGTERM to unwind through their clean-up. Containers of dead runs are removed;
    without a daemon that is an error when `docker_required`, else the cell reports it."""
    if _prepared:
        return
    docker_env.exit_cleanly_on_sigterm()
    try:
        docker_env.remove_orphans()
    except StapmatrixError:
        if docker_required:
            raise
    _prepared.append(True)


class Session:
    """The cells of one run directory: run here and recorded, or merged from every process."""

    def __init__(self, plan: Plan, run_dir: Path, context: CellContext, archive: Archive,
                 echo: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self.context = context
        self.archive = archive  # the one planning read: cells need the same package indexes
        self.progress = ProgressLog(run_dir / "progress.log", echo)
        self.results: dict[str, list[Result]] = {}

    @property
    def cells_dir(self) -> Path:
        return self.run_dir / "cells"

    def run(self, cell: Cell) -> list[Result]:
        """The cell's results, run now (once per process) and recorded in RUN/cells/CELL.json."""
        if cell.id not in self.results:
            self.progress(CellStarted(cell.id, len(cell.tests) + len(cell.examples) + len(cell.dejagnu)))
            results = run_cell(cell, self.context, self.run_dir / cell.id, self.progress, self.archive)
            write_results(self.cells_dir / f"{cell.id}.json", results)
            counts = Counter(r.outcome.value for r in results)
            self.progress(CellFinished(cell.id, ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))))
            self.results[cell.id] = results
        return self.results[cell.id]

    def cells_done(self) -> int:
        return len(list(self.cells_dir.glob("*.json"))) if self.cells_dir.exists() else 0

    def merge(self, path: Path | None = None) -> list[Result]:
        """Every recorded cell's results (whichever process ran it), written to `path`
        (default RUN/results.json) when there are any."""
        results: list[Result] = []
        for cell_file in sorted(self.cells_dir.glob("*.json")) if self.cells_dir.exists() else []:
            results += read_results(cell_file, root=self.run_dir)
        if results:
            write_results(path or self.run_dir / "results.json", results)
        return results
