"""From a validated matrix to a plan: what exactly each kernel and systemtap build is, which
base suite each cell runs on (harness/bases.py), and which cells (kernel x systemtap) run
which tests. Planning reads package indexes and git repositories; it never touches Docker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from harness import bases, dejagnu_sets, examples, kernels, staps
from harness.archive import Archive
from harness.dejagnu_sets import DejaGnuFile
from harness.errors import MatrixError
from harness.examples import ExampleCorpus, ExampleTest
from harness.kernel_build import KernelBuild
from harness.matrix import Matrix
from harness.scripts import TestScript
from harness.specs import KernelSpec, StapSpec, cell_id
from harness.stap_build import StapBuild
from harness.suites import BASE_SUITES
from harness.testsets import TestSet


@dataclass(frozen=True)
class Cell:
    kernel: KernelBuild
    stap: StapBuild
    tests: tuple[TestScript, ...]
    base_suite: str
    base_reason: str
    work: StapTests = field(default_factory=lambda: StapTests())  # systemtap's own tests for this column

    @property
    def id(self) -> str:
        return cell_id(self.kernel.spec.label, self.stap.spec.label)

    @property
    def test_sets(self) -> tuple[TestSet, ...]:
        return self.work.test_sets

    @property
    def examples(self) -> tuple[ExampleTest, ...]:
        return self.work.examples

    @property
    def dejagnu(self) -> tuple[DejaGnuFile, ...]:
        return self.work.dejagnu


@dataclass(frozen=True)
class StapTests:
    """systemtap's own tests a column runs: what the test sets name in its systemtap."""

    test_sets: tuple[TestSet, ...] = ()
    corpus: ExampleCorpus | None = None  # the examples' tree and the tests it holds
    dejagnu: tuple[DejaGnuFile, ...] = ()  # DejaGnu files below testsuite/ (source builds only)

    @property
    def examples(self) -> tuple[ExampleTest, ...]:
        return self.corpus.tests if self.corpus else ()

    def __bool__(self) -> bool:
        return bool(self.examples or self.dejagnu)


def stap_tests(stap: StapBuild, test_sets: tuple[TestSet, ...], archive: Archive, where: str) -> StapTests:
    """The tests `test_sets` hold for one systemtap build: examples from its own corpus (or a
    set's directory), merged in order; DejaGnu files for source builds (a Debian package ships
    no testsuite, so its column runs the examples only)."""
    found: dict[str, ExampleTest] = {}
    corpus: ExampleCorpus | None = None
    for test_set in (s for s in test_sets if s.is_examples):
        one = examples.corpus(stap, test_set, archive, where)
        if corpus is not None and (one.host_dir, one.image_dir) != (corpus.host_dir, corpus.image_dir):
            raise MatrixError(f"{where}: two examples sets from different trees ({corpus.origin}, {one.origin}); "
                              "give one examples set per matrix, with include: patterns")
        corpus = one
        found.update((t.name, t) for t in one.tests)
    if corpus is not None:
        corpus = replace(corpus, tests=tuple(found.values()))
    dejagnu = dejagnu_sets.expand(stap, test_sets, where) if stap.spec.kind != "deb" else ()
    return StapTests(test_sets, corpus, dejagnu)


@dataclass(frozen=True)
class Plan:
    kernels: tuple[KernelBuild, ...]
    staps: tuple[StapBuild, ...]
    cells: tuple[Cell, ...]

    @property
    def base_suites(self) -> tuple[str, ...]:
        return tuple(s for s in BASE_SUITES if any(c.base_suite == s for c in self.cells))


def make_cell(kernel: KernelBuild, stap: StapBuild, tests: tuple[TestScript, ...],
              work: StapTests | None = None) -> Cell:
    """A cell on the oldest base that serves both of its parts."""
    base = bases.cell_base(kernel.base, stap.base)
    return Cell(kernel, stap, tests, base.suite, base.reason, work or StapTests())


def make_plan(matrix: Matrix, archive: Archive) -> Plan:
    builds = [kernels.resolve(k.value, matrix.where(k.line), archive) for k in matrix.kernels]
    stap_builds = [staps.resolve(s.value, matrix.where(s.line), archive) for s in matrix.staps]
    work = {stap.spec: stap_tests(stap, tuple(matrix.testsuite), archive, matrix.where(s.line))
            for stap, s in zip(stap_builds, matrix.staps, strict=True)}
    cells = []
    for kernel in builds:
        for stap in stap_builds:
            tests = tuple(t for t in matrix.tests if not matrix.excluded(kernel.spec, stap.spec, t.name))
            if tests or work[stap.spec]:
                cells.append(make_cell(kernel, stap, tests, work[stap.spec]))
    if not cells:
        raise MatrixError(f"{matrix.path}: the exclude list leaves no cell to run")
    return Plan(tuple(builds), tuple(stap_builds), tuple(cells))


def _has_work(matrix: Matrix, kernel: KernelSpec, stap: StapSpec) -> bool:
    """Whether make_plan gives this pair a cell: a test the exclude list leaves, or test sets
    that apply to the column (examples to every column, DejaGnu sets to source builds). A
    filter that leaves no test is known only once planned; the cell is listed until then."""
    tests = [t for t in matrix.tests if not matrix.excluded(kernel, stap, t.name)]
    return bool(tests) or any(s.is_examples or stap.kind != "deb" for s in matrix.testsuite)


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
