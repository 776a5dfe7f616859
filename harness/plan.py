"""From a validated matrix to a plan: what exactly each kernel and systemtap build is, which
base suite each cell runs on (harness/bases.py), and which cells (kernel x systemtap) run
which tests. Planning reads package indexes and git repositories; it never touches Docker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness import bases, kernels, staps
from harness.archive import Archive
from harness.errors import MatrixError
from harness.kernel_build import KernelBuild
from harness.matrix import Matrix
from harness.scripts import TestScript
from harness.specs import KernelSpec, StapSpec, cell_id
from harness.stap_build import StapBuild
from harness.suites import BASE_SUITES


@dataclass(frozen=True)
class Cell:
    kernel: KernelBuild
    stap: StapBuild
    tests: tuple[TestScript, ...]
    base_suite: str
    base_reason: str
    testsuite: tuple[str, ...] = ()  # systemtap's own .exp files: source builds only

    @property
    def id(self) -> str:
        return cell_id(self.kernel.spec.label, self.stap.spec.label)


@dataclass(frozen=True)
class Plan:
    kernels: tuple[KernelBuild, ...]
    staps: tuple[StapBuild, ...]
    cells: tuple[Cell, ...]

    @property
    def base_suites(self) -> tuple[str, ...]:
        return tuple(s for s in BASE_SUITES if any(c.base_suite == s for c in self.cells))


def make_cell(kernel: KernelBuild, stap: StapBuild, tests: tuple[TestScript, ...],
              testsuite: tuple[str, ...] = ()) -> Cell:
    """A cell on the oldest base that serves both of its parts."""
    base = bases.cell_base(kernel.base, stap.base)
    return Cell(kernel, stap, tests, base.suite, base.reason, testsuite)


def make_plan(matrix: Matrix, archive: Archive) -> Plan:
    builds = [kernels.resolve(k.value, matrix.where(k.line), archive) for k in matrix.kernels]
    stap_builds = [staps.resolve(s.value, matrix.where(s.line), archive) for s in matrix.staps]
    cells = []
    for kernel in builds:
        for stap in stap_builds:
            tests = tuple(t for t in matrix.tests if not matrix.excluded(kernel.spec, stap.spec, t.name))
            testsuite = tuple(matrix.testsuite) if stap.spec.kind != "deb" else ()
            if tests or testsuite:
                cells.append(make_cell(kernel, stap, tests, testsuite))
    if not cells:
        raise MatrixError(f"{matrix.path}: the exclude list leaves no cell to run")
    return Plan(tuple(builds), tuple(stap_builds), tuple(cells))


def _has_work(matrix: Matrix, kernel: KernelSpec, stap: StapSpec) -> bool:
    """Whether make_plan gives this pair a cell: a test the exclude list leaves, or testsuite files."""
    tests = [t for t in matrix.tests if not matrix.excluded(kernel, stap, t.name)]
    return bool(tests) or (bool(matrix.testsuite) and stap.kind != "deb")


def matrix_cell_ids(matrix: Matrix) -> list[str]:
    """The ids of the cells make_plan would give, in its order, without resolving anything."""
    return [cell_id(k.value.label, s.value.label) for k in matrix.kernels for s in matrix.staps
            if _has_work(matrix, k.value, s.value)]


def select_cell(matrix: Matrix, wanted: str) -> Matrix:
    """The matrix cut down to one cell (an exact id, not a pattern: `-k stap-5.5` would also
    select `stap-5.5.1`), so that planning resolves only that cell's kernel and systemtap build:
    a job that runs one cell of a large matrix downloads and clones nothing for the others."""
    for kernel in matrix.kernels:
        for stap in matrix.staps:
            if cell_id(kernel.value.label, stap.value.label) == wanted and _has_work(matrix, kernel.value, stap.value):
                return replace(matrix, kernels=[kernel], staps=[stap])
    cells = matrix_cell_ids(matrix)
    raise MatrixError(f"--cell {wanted}: {matrix.path} has no such cell; its {len(cells)} cell(s): {', '.join(cells)}")
