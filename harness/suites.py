"""Debian's suites, as stapmatrix uses them: where packages are looked up, in which order,
which suites serve as the base of an image, and what each base carries.

    SUITES             every suite whose index is read, in the order of preference
    BASE_SUITES        the suites an image is debootstrapped from, oldest first
    BASE_SUITE_SOURCES which suites' packages a base can install (its apt sources and pins)
    BASE_COMPILERS     the kernel compilers every systemtap image of a base carries
    KERNEL_BUILD_SUITE the toolchain of every kernel built from source
    RUNNER_SUITE       the base of the one QEMU runner image

Why these bases: a kernel's files sit in the kernel store, outside any image, so they need no
base at all; what needs one is a cell's compile image, which must install the systemtap build
and the compiler the kernel's headers call. trixie installs bookworm's gcc-12 and its own
gcc-14, and bookworm's systemtap 4.8 (its `libdw1` is provided by `libdw1t64`) as well as
sid's 5.6 (whose dependencies trixie meets). A 7.x kernel's headers call gcc-16, and
experimental's packages are built against sid: those cells get a sid base, which has gcc-11
to gcc-16. harness/bases.py chooses, per kernel, systemtap build and cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.settings import mirror, security_mirror


@dataclass(frozen=True)
class Suite:
    name: str
    release: str  # the Debian release the suite belongs to (sid for experimental)

    @property
    def security(self) -> bool:
        return self.name.endswith("-security")

    def url(self) -> str:
        """The archive that serves this suite: the security archive for `*-security`."""
        return security_mirror().url if self.security else mirror().url


# The order of preference when a package is in several suites: a release, its security
# updates and its backports, oldest release first; sid, then experimental (a partial suite
# built against sid) last.
SUITES: tuple[Suite, ...] = (
    Suite("bookworm", "bookworm"),
    Suite("bookworm-security", "bookworm"),
    Suite("bookworm-backports", "bookworm"),
    Suite("trixie", "trixie"),
    Suite("trixie-security", "trixie"),
    Suite("trixie-backports", "trixie"),
    Suite("sid", "sid"),
    Suite("experimental", "sid"),
)
SUITE_NAMES = tuple(s.name for s in SUITES)
SUITE_BY_NAME = {s.name: s for s in SUITES}

# Base suites, oldest first: a cell runs on the oldest one that can install what it needs.
BASE_SUITES = ("trixie", "sid")
# Which suites' packages a base can install (harness/images.py writes its apt sources).
BASE_SUITE_SOURCES = {"trixie": ("trixie", "trixie-security"), "sid": ("sid", "experimental")}

# The compilers every systemtap image of a base carries: what the Debian kernels the base
# serves call (bookworm's and bookworm-backports' gcc-12, trixie's gcc-14; sid's 7.x gcc-16,
# which is also sid's default gcc). One image then compiles for every kernel of the grid.
BASE_COMPILERS = {"trixie": ("gcc-12", "gcc-14"), "sid": ("gcc-16",)}

KERNEL_BUILD_SUITE = "trixie"  # the toolchain every kernel built from source gets
RUNNER_SUITE = "trixie"  # QEMU does not care which base it runs on: one runner for every cell


def provided_compilers(base_suite: str) -> set[str]:
    """Compiler packages a systemtap image of this base has, with the arch-qualified
    packages they depend on (gcc-16 brings gcc-16-x86-64-linux-gnu)."""
    names = set(BASE_COMPILERS[base_suite])
    return names | {f"{name}-x86-64-linux-gnu" for name in names}
