"""From a validated matrix to a plan: which packages make each kernel and systemtap build,
which base suite hosts them, and which cells (kernel x systemtap) run which tests.

Why one base suite: a trixie userland installs bookworm's 6.1 headers (their compiler,
gcc-12, is in trixie too) and trixie's 6.12 headers (gcc-14), and bookworm's systemtap 4.8
(its `libdw1` dependency is provided by trixie's `libdw1t64`) as well as sid's 5.6 (it only
needs libraries trixie has). So every systemtap image shares one base, and a kernel's files
can be copied onto any systemtap image: N kernels x M builds cost N + M heavy builds. The base
moves to a newer suite only when a kernel's compiler needs it (a sid kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import sources
from harness.archive import SUITES, Archive
from harness.errors import MatrixError
from harness.matrix import Matrix, StapSpec, nearest
from harness.scripts import TestScript

MINIMUM_BASE_SUITE = "trixie"


@dataclass(frozen=True)
class KernelBuild:
    abi: str
    suite: str
    version: str  # the Debian package version, e.g. 6.12.117-1
    packages: tuple[str, ...]  # everything the kernel image extracts, as NAME=VERSION
    dbg_package: str
    image_package: str
    compilers: tuple[str, ...]  # gcc-N packages the headers' Makefile calls


@dataclass(frozen=True)
class StapBuild:
    spec: StapSpec
    suite: str  # deb: the suite that has the package; source builds: "" (built on the base)
    version: str  # deb: the package version; git: the full commit id; path: sha256 of the tree

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(f"{name}={self.version}" for name in ("systemtap", "systemtap-runtime", "systemtap-common"))

    @property
    def version_label(self) -> str:
        """What `stap -V` of a source build shows (configure --with-extra-version)."""
        if self.spec.kind == "git":
            return f"stapmatrix git commit {self.version} ({self.spec.ref})"
        return f"stapmatrix path {self.spec.value} sha256 {self.version[:16]}"


@dataclass(frozen=True)
class Cell:
    kernel: KernelBuild
    stap: StapBuild
    tests: tuple[TestScript, ...]
    base_suite: str
    testsuite: tuple[str, ...] = ()  # systemtap's own .exp files: source builds only


    @property
    def id(self) -> str:
        return f"{self.kernel.abi}-{self.stap.spec.label}"


@dataclass(frozen=True)
class Plan:
    base_suite: str
    kernels: tuple[KernelBuild, ...]
    staps: tuple[StapBuild, ...]
    cells: tuple[Cell, ...]


def resolve_kernel(archive: Archive, abi: str, where: str) -> KernelBuild:
    dbg = archive.find(f"linux-image-{abi}-dbg")
    if dbg is None:
        raise MatrixError(
            f"{where}: kernel {abi!r} has no linux-image-{abi}-dbg package in "
            f"{', '.join(SUITES)}; the archive has: {nearest(abi, archive.kernel_abis())}"
        )
    headers = archive.find(f"linux-headers-{abi}", dbg.version)
    image = archive.find(f"linux-image-{abi}", dbg.version) or archive.find(
        f"linux-image-{abi}-unsigned", dbg.version
    )
    if headers is None or image is None:
        raise MatrixError(f"{where}: kernel {abi} {dbg.version} lacks its headers or image package")
    # linux-headers-ABI depends on its -common headers, the kbuild tools and the compiler
    # (directly as gcc-N since 6.12, through linux-compiler-gcc-N-x86 before).
    extra, compilers = [], []
    for dep in headers.depends:
        if dep.startswith(("linux-headers-", "linux-kbuild-")):
            package = archive.find(dep)
            if package is None:
                raise MatrixError(f"{where}: kernel {abi}: dependency {dep} is not in the archive")
            extra.append(f"{package.name}={package.version}")
        elif dep.startswith("linux-compiler-"):
            wrapper = archive.find(dep)
            compilers += [d for d in (wrapper.depends if wrapper else ()) if d.startswith("gcc-")]
        elif dep.startswith("gcc-"):
            compilers.append(dep)
    if not compilers:
        raise MatrixError(f"{where}: kernel {abi}: cannot tell which gcc its headers need")
    return KernelBuild(
        abi=abi,
        suite=dbg.suite,
        version=dbg.version,
        packages=(f"{headers.name}={headers.version}", *extra, f"{image.name}={image.version}",
                  f"{dbg.name}={dbg.version}"),
        dbg_package=dbg.name,
        image_package=image.name,
        compilers=tuple(sorted(set(compilers))),
    )


def resolve_stap(archive: Archive, spec: StapSpec, where: str) -> StapBuild:
    if spec.kind == "git":
        return StapBuild(spec, "", sources.resolve_ref(spec.value, spec.ref, where))
    if spec.kind == "path":
        return StapBuild(spec, "", sources.content_hash(sources.tree_tarball(Path(spec.value))))
    package = archive.find("systemtap", spec.value)
    if package is None:
        have = [f"deb:{version} ({suite})" for version, suite in archive.systemtap_versions()]
        raise MatrixError(
            f"{where}: systemtap {spec.spec} is in none of {', '.join(SUITES)}; "
            f"the archive has: {', '.join(have)}"
        )
    return StapBuild(spec, package.suite, package.version)


def choose_base_suite(kernels: list[KernelBuild]) -> str:
    order = {suite: index for index, suite in enumerate(SUITES)}
    suites = [MINIMUM_BASE_SUITE] + [k.suite for k in kernels]
    return max(suites, key=lambda s: order[s])


def make_plan(matrix: Matrix, archive: Archive) -> Plan:
    kernels = [resolve_kernel(archive, k.value, matrix.where(k.line)) for k in matrix.kernels]
    staps = [resolve_stap(archive, s.value, matrix.where(s.line)) for s in matrix.staps]
    base = choose_base_suite(kernels)
    cells = []
    for kernel in kernels:
        for stap in staps:
            tests = tuple(
                t for t in matrix.tests if not matrix.excluded(kernel.abi, stap.spec.spec, t.name)
            )
            testsuite = tuple(matrix.testsuite) if stap.spec.kind != "deb" else ()
            if tests or testsuite:
                cells.append(Cell(kernel, stap, tests, base, testsuite))
    return Plan(base, tuple(kernels), tuple(staps), tuple(cells))
