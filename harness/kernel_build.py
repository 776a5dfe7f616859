"""A kernel as planned (harness/kernels.py resolves one from its spec): what exactly it is,
before anything is downloaded or built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from harness.bases import BaseChoice
from harness.specs import KernelSpec


@dataclass(frozen=True)
class KernelBuild:
    spec: KernelSpec
    key: str  # the store key: a digest of everything the kernel tree depends on
    identity: str  # for people and `diff`: "6.12.117-1 (trixie)", "commit 3f2c1a9...", "tree ... build-id ..."
    origin: str  # the archive suite, or "git" / "path"
    release: str  # uname -r when known before building (a git build learns it from its tree)
    base_suite: str  # the oldest base suite whose compilers can build modules for it
    base_reason: str  # why, in words
    compilers: tuple[str, ...] = ()  # the compiler packages its headers ask for (Debian kernels)
    packages: tuple[str, ...] = ()  # Debian kernels: NAME=VERSION of every package extracted
    dbg_package: str = ""  # Debian kernels: the debuginfo package
    download_bytes: int = 0  # Debian kernels: what the packages weigh
    commit: str = ""  # git kernels: the commit; path kernels: vmlinux's build-id

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def description(self) -> str:
        return self.release or self.spec.spec

    @property
    def base(self) -> BaseChoice:
        return BaseChoice(self.base_suite, self.base_reason)


class KernelImages(Protocol):
    """The images a kernel is made in, built on first use."""

    def base(self) -> str:
        """A base image (dpkg-deb, tar, depmod): Debian packages are extracted and trees
        packaged in it."""

    def kernel_build(self) -> str:
        """The kernel build toolchain (git kernels)."""
