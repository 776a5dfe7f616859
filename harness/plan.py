"""From a validated matrix to a plan: what exactly each kernel and systemtap build is, which
base suite each cell runs on, and which cells (kernel x systemtap) run which tests. Planning
reads package indexes and git repositories; it never touches Docker.

Why a base suite per cell: a kernel's files sit in the kernel store, outside any image, so
they need no base at all; what needs one is the cell's compile image, which must install the
systemtap build and the compiler the kernel's headers call. trixie installs bookworm's gcc-12
and its own gcc-14, and bookworm's systemtap 4.8 (its `libdw1` is provided by `libdw1t64`) as
well as sid's 5.6 (whose dependencies trixie meets). A 7.x kernel's headers call gcc-16, and
experimental's packages are built against sid: those cells get a sid base, which has gcc-11
to gcc-16. Each cell takes the oldest base that can install both of its parts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from harness import cache, kernels, sources
from harness.archive import Archive
from harness.errors import MatrixError
from harness.kernel_debian import BASE_SUITE_SOURCES
from harness.kernels import BASE_SUITES, KernelBuild
from harness.matrix import KernelSpec, Matrix, StapSpec
from harness.scripts import TestScript
from harness.settings import cache_dir

STAP_PACKAGES = ("systemtap", "systemtap-runtime", "systemtap-common")


@dataclass(frozen=True)
class StapBuild:
    spec: StapSpec
    suite: str  # deb: the suite that has the package; source builds: "" (built on the base)
    version: str  # deb: the package version; git: the full commit id; path: sha256 of the tree
    base_suite: str = BASE_SUITES[0]  # the oldest base that installs it
    base_reason: str = ""

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(f"{name}={self.version}" for name in STAP_PACKAGES)

    @property
    def version_label(self) -> str:
        """What `stap -V` of a source build shows (configure --with-extra-version)."""
        if self.spec.kind == "git":
            return f"stapmatrix git commit {self.version} ({self.spec.ref})"
        return f"stapmatrix path {self.spec.value} sha256 {self.version[:16]}"

    @property
    def identity(self) -> str:
        if self.spec.kind == "deb":
            return f"{self.version} ({self.suite})"
        if self.spec.kind == "git":
            return f"commit {self.version}"
        return f"tree sha256 {self.version[:16]}"


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
        return cell_id(self.kernel.spec, self.stap.spec)


def cell_id(kernel: KernelSpec, stap: StapSpec) -> str:
    """`KERNEL-LABEL-STAP-LABEL`: known from the matrix file alone, before anything is resolved."""
    return f"{kernel.label}-{stap.label}"


@dataclass(frozen=True)
class Plan:
    kernels: tuple[KernelBuild, ...]
    staps: tuple[StapBuild, ...]
    cells: tuple[Cell, ...]

    @property
    def base_suites(self) -> tuple[str, ...]:
        return tuple(s for s in BASE_SUITES if any(c.base_suite == s for c in self.cells))


def resolve_stap(archive: Archive, spec: StapSpec, where: str) -> StapBuild:
    if spec.kind == "git":
        return StapBuild(spec, "", sources.resolve_ref(spec.value, spec.ref, where),
                         base_reason="systemtap is built from source on the base")
    if spec.kind == "path":
        return StapBuild(spec, "", sources.content_hash(sources.tree_tarball(Path(spec.value))),
                         base_reason="systemtap is built from source on the base")
    package = archive.find("systemtap", spec.value)
    if package is None:
        have = [f"deb:{version} ({suite})" for version, suite in archive.systemtap_versions()]
        raise MatrixError(
            f"{where}: systemtap {spec.spec} is in none of {', '.join(s.name for s in archive.suites)}; "
            f"the archive has: {', '.join(have)}"
        )
    base, reason = _stap_base(archive, package.suite, spec.value)
    return StapBuild(spec, package.suite, package.version, base, reason)


def _stap_base(archive: Archive, suite: str, version: str) -> tuple[str, str]:
    """The oldest base whose suites meet every dependency of the systemtap packages; the
    answer is remembered until the indexes it was read from are fetched again (reading the
    catalogues of every package costs more than the rest of planning)."""
    key = hashlib.sha256("\0".join([suite, version, *archive.index_stamps(BASE_SUITES)]).encode()).hexdigest()[:24]
    memo = cache_dir() / "plans" / f"stap-base-{key}.json"
    known = cache.read_entry(memo)
    if isinstance(known, list) and len(known) == 2:
        return str(known[0]), str(known[1])
    base, reason = _stap_base_from_indexes(archive, suite, version)
    cache.write_entry(memo, [base, reason])
    return base, reason


def _stap_base_from_indexes(archive: Archive, suite: str, version: str) -> tuple[str, str]:
    parts = [p for name in STAP_PACKAGES if (p := archive.find(name, version)) is not None]
    for base in BASE_SUITES:
        sources_of_base = BASE_SUITE_SOURCES[base]
        if suite == "experimental" and "experimental" not in sources_of_base:
            continue
        unmet = [clause for part in parts for clause in archive.unmet(part, sources_of_base, tuple(parts))]
        if not unmet:
            return base, f"systemtap {version} ({suite}) installs on {base}"
    unmet_text = ", ".join(sorted({c for part in parts for c in archive.unmet(part, BASE_SUITE_SOURCES[BASE_SUITES[0]], tuple(parts))}))
    return BASE_SUITES[-1], (f"systemtap {version} ({suite}) needs {BASE_SUITES[-1]}"
                             + (f" ({BASE_SUITES[0]} lacks {unmet_text})" if unmet_text else ""))


def cell_base(kernel: KernelBuild, stap: StapBuild) -> tuple[str, str]:
    """The oldest base that can install both the kernel's compiler and the systemtap build."""
    order = {suite: index for index, suite in enumerate(BASE_SUITES)}
    if order[kernel.base_suite] >= order[stap.base_suite]:
        return kernel.base_suite, kernel.base_reason + (f"; {stap.base_reason}" if stap.base_reason else "")
    return stap.base_suite, stap.base_reason + f"; {kernel.base_reason}"


def make_plan(matrix: Matrix, archive: Archive) -> Plan:
    builds = [kernels.resolve(archive, k.value, matrix.where(k.line)) for k in matrix.kernels]
    staps = [resolve_stap(archive, s.value, matrix.where(s.line)) for s in matrix.staps]
    cells = []
    for kernel in builds:
        for stap in staps:
            tests = tuple(t for t in matrix.tests if not matrix.excluded(kernel.spec, stap.spec, t.name))
            testsuite = tuple(matrix.testsuite) if stap.spec.kind != "deb" else ()
            if tests or testsuite:
                base, reason = cell_base(kernel, stap)
                cells.append(Cell(kernel, stap, tests, base, reason, testsuite))
    if not cells:
        raise MatrixError(f"{matrix.path}: the exclude list leaves no cell to run")
    return Plan(tuple(builds), tuple(staps), tuple(cells))


def _has_work(matrix: Matrix, kernel: KernelSpec, stap: StapSpec) -> bool:
    """Whether make_plan gives this pair a cell: a test the exclude list leaves, or testsuite files."""
    tests = [t for t in matrix.tests if not matrix.excluded(kernel, stap, t.name)]
    return bool(tests) or (bool(matrix.testsuite) and stap.kind != "deb")


def matrix_cell_ids(matrix: Matrix) -> list[str]:
    """The ids of the cells make_plan would give, in its order, without resolving anything."""
    return [cell_id(k.value, s.value) for k in matrix.kernels for s in matrix.staps
            if _has_work(matrix, k.value, s.value)]


def select_cell(matrix: Matrix, wanted: str) -> Matrix:
    """The matrix cut down to one cell (an exact id, not a pattern: `-k stap-5.5` would also
    select `stap-5.5.1`), so that planning resolves only that cell's kernel and systemtap build:
    a job that runs one cell of a large matrix downloads and clones nothing for the others."""
    for kernel in matrix.kernels:
        for stap in matrix.staps:
            if cell_id(kernel.value, stap.value) == wanted and _has_work(matrix, kernel.value, stap.value):
                return replace(matrix, kernels=[kernel], staps=[stap])
    cells = matrix_cell_ids(matrix)
    raise MatrixError(f"--cell {wanted}: {matrix.path} has no such cell; its {len(cells)} cell(s): {', '.join(cells)}")
