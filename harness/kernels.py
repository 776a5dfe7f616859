"""Where a kernel comes from, behind one interface (as harness/sources.py is for systemtap):

    kernel_debian.py   a Debian kernel package (any suite, the 6.x and 7.x package layouts)
    kernel_git.py      a commit of a kernel repository, built from source
    kernel_tree.py     a tree a developer built themselves (`make`, `make O=DIR`)

Each module has `resolve(spec, ..., where) -> KernelBuild` (planning: cheap, no Docker, no
download; an error names the matrix line) and `materialize(build, base, progress) ->
KernelTree` (extract, build or package the kernel into harness/kernel_store.py, once per
key). Everything after that (compile containers, the guest, the image checks) sees every
kernel the same way: a KernelTree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.archive import Archive
from harness.errors import InfraError
from harness.kernel_store import KernelTree
from harness.matrix import KernelSpec

# Base suites, oldest first: a cell runs on the oldest one that can install what it needs.
BASE_SUITES = ("trixie", "sid")


@dataclass(frozen=True)
class KernelBuild:
    """A kernel as planned: what exactly it is, before anything is downloaded or built."""

    spec: KernelSpec
    key: str  # the store key: a digest of everything the kernel tree depends on
    identity: str  # for people and `diff`: "6.12.117-1 (trixie)", "commit 3f2c1a9...", "tree sha256 ..."
    origin: str  # the archive suite, or "git" / "path"
    release: str  # uname -r when known before building (a git build learns it from its tree)
    base_suite: str  # the oldest base suite whose compilers can build modules for it
    base_reason: str  # why, in words
    compilers: tuple[str, ...] = ()  # the compiler packages its headers ask for (Debian kernels)
    packages: tuple[str, ...] = ()  # Debian kernels: NAME=VERSION of every package extracted
    dbg_package: str = ""  # Debian kernels: the debuginfo package
    download_bytes: int = 0  # Debian kernels: what the packages weigh
    commit: str = ""  # git kernels

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def description(self) -> str:
        return self.release or self.spec.spec


Progress = Callable[[str], None]


def resolve(archive: Archive, spec: KernelSpec, where: str) -> KernelBuild:
    from harness import kernel_debian, kernel_git, kernel_tree

    if spec.kind == "git":
        return kernel_git.resolve(spec, where)
    if spec.kind == "path":
        return kernel_tree.resolve(spec, where, archive)
    return kernel_debian.resolve(archive, spec, where)


def materialize(build: KernelBuild, archive: Archive, base_image: str, progress: Progress) -> KernelTree:
    """The kernel's files in the store: extracted, built or packaged now unless already there."""
    from harness import kernel_debian, kernel_git, kernel_tree

    if build.spec.kind == "git":
        return kernel_git.materialize(build, archive, base_image, progress)
    if build.spec.kind == "path":
        return kernel_tree.materialize(build, archive, base_image, progress)
    return kernel_debian.materialize(build, archive, base_image, progress)


def compiler_packages(archive: Archive, cc: str, cc_version: str, base_suite: str) -> tuple[tuple[str, ...], str]:
    """(packages, gcc-N) on `base_suite` for the compiler a kernel's Makefile calls:
    `gcc-14` -> gcc-14; `x86_64-linux-gnu-gcc-16` (7.x headers, through gcc-16-for-host) ->
    gcc-16-x86-64-linux-gnu, the package holding that very binary; a plain `gcc` (a kernel
    built from source) -> gcc-N of the version that built it."""
    from harness.kernel_debian import BASE_SUITE_SOURCES

    match = re.fullmatch(r"(x86_64-linux-gnu-)?gcc(?:-([0-9]+))?", cc)
    if not match or not re.fullmatch(r"[0-9]+", cc_version):
        raise InfraError(f"the kernel was built with {cc!r}, which is not a gcc stapmatrix knows how to install")
    prefix = match.group(1)
    candidates = [f"gcc-{cc_version}-x86-64-linux-gnu"] if prefix else []
    candidates.append(f"gcc-{cc_version}")
    suites = BASE_SUITE_SOURCES[base_suite]
    for candidate in candidates:
        if any(archive.in_suite(suite, candidate) for suite in suites):
            return (candidate,), f"gcc-{cc_version}"
    raise InfraError(f"the kernel's Makefile calls {cc} (gcc {cc_version}), which no package of {base_suite} "
                     f"provides (looked for {', '.join(candidates)})")
