"""Fixtures shared by the project's own tests (selftests/), and the root that makes the
`selftests` helpers importable (pytest puts a rootdir conftest's directory on sys.path).

The tests marked `real` build real images, compile real modules and boot real kernels. The
Debian kernel and systemtap package they use are chosen from the archive when they run
(selftests/archive_choice.py): the newest complete build of a series, never a version
Debian's next point release would take away. The matrix items (harness/matrix_items.py)
need nothing from here: an installed stapmatrix runs them from any directory.

In CI a selftest that skips fails instead, unless expected (selftests/conftest.py).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.settings import cache_dir
from selftests.archive_choice import newest_kernel, systemtap_of
from selftests.cells import CellRun, stapmatrix_run

DATA = Path(__file__).resolve().parent / "selftests" / "data"
# The selftests' kernel and systemtap: trixie's newest 6.12 build, sid's systemtap (5.6 today).
KERNEL_SERIES, KERNEL_RELEASE, STAP_SUITE = "6.12", "trixie", "sid"


@pytest.fixture(autouse=True)
def local_images_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Real tests share the host's images (one base, runner and systemtap image for every
    cell); a test marked `removes_local_images` takes them away to make a cell pull them, so it
    runs alone: it holds this lock exclusively, every other real test holds it shared (xdist
    workers are processes; flock is across them). Once, a kernel-source cell on the other
    worker found its runner image removed and Docker tried to pull it from outside."""
    if request.node.get_closest_marker("real") is None:
        yield
        return
    exclusive = request.node.get_closest_marker("removes_local_images") is not None
    path = cache_dir() / "locks" / "selftests-local-images.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def data() -> Path:
    """Recorded real outputs: guest logs, compile logs, results of real runs."""
    return DATA


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """A file under tmp_path with the given text (parents made)."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


@pytest.fixture(scope="session")
def deb_kernel() -> str:
    """The ABI name of the selftests' Debian kernel (6.12.118+deb13-amd64 on 2026-12-02)."""
    return newest_kernel(KERNEL_SERIES, KERNEL_RELEASE)


@pytest.fixture(scope="session")
def deb_stap() -> str:
    """The selftests' systemtap package, as a spec (deb:5.6-1 on 2026-12-02)."""
    return systemtap_of(STAP_SUITE)


@pytest.fixture
def run_cell(tmp_path: Path, deb_kernel: str, deb_stap: str) -> CellRun:
    """`run_cell(NAME, SCRIPT..., kernel=..., stap=..., args=(...))`: `stapmatrix run` of one
    cell (the selftests' kernel and systemtap unless given), in this process; its exit code,
    its results by test name and its wall time."""

    def run(name: str, *scripts: Path | str, kernel: str = "", stap: str = "",
            args: tuple[str, ...] = ()) -> tuple[int, dict[str, object], float]:
        return stapmatrix_run(tmp_path / f"{name}.json", kernel or deb_kernel, stap or deb_stap, *scripts, args=args)

    return run

