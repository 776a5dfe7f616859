"""Which compiler a kernel's Makefile really calls, and which package provides it: read from
the kernel's own .config (real CONFIG_CC_VERSION_TEXT lines of Debian's 6.1, 6.12 and 7.2
headers and of a kernel stapmatrix built), mapped against real package indexes, recorded (selftests/data/indexes/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.archive import Archive
from harness.bases import compiler_packages
from harness.errors import InfraError
from harness.kconfig import compiler_of

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(("text", "cc", "version"), [
    ('CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"', "gcc-12", "12"),
    ('CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0"', "x86_64-linux-gnu-gcc-14", "14"),
    ('CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0"', "x86_64-linux-gnu-gcc-16", "16"),
])
def test_compiler_from_debian_headers(text: str, cc: str, version: str) -> None:
    assert compiler_of(text + "\n", "t") == (cc, version)


def test_compiler_of_a_kernel_built_here() -> None:
    assert compiler_of((DATA / "config-6.12-tinyconfig-stapmatrix").read_text(), "t") == ("gcc", "14")


def test_clang_is_refused_by_name() -> None:
    with pytest.raises(InfraError, match="clang"):
        compiler_of('CONFIG_CC_VERSION_TEXT="Debian clang version 19.1.7"\n', "t")


def test_the_7x_compiler_is_the_arch_package_that_holds_the_binary() -> None:
    """7.x headers depend on gcc-16-for-host (a metapackage); the Makefile calls
    x86_64-linux-gnu-gcc-16, which gcc-16-x86-64-linux-gnu holds."""
    archive = Archive(recorded=DATA / "indexes")  # recorded: the compilers a base offers do not move under the test
    assert compiler_packages(archive, "x86_64-linux-gnu-gcc-16", "16", "sid") == (("gcc-16-x86-64-linux-gnu",), "gcc-16")
    assert compiler_packages(archive, "gcc-12", "12", "trixie") == (("gcc-12",), "gcc-12")
    assert compiler_packages(archive, "gcc", "14", "trixie") == (("gcc-14",), "gcc-14")
    with pytest.raises(InfraError, match="gcc-16"):
        compiler_packages(archive, "x86_64-linux-gnu-gcc-16", "16", "trixie")
