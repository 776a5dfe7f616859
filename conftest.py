"""Fixtures shared by the project's own tests (selftests/), and the root that makes the
`selftests` helpers importable (pytest puts a rootdir conftest's directory on sys.path).

The tests marked `real` build real images, compile real modules and boot real kernels. The
Debian kernel and systemtap package they use are chosen from the archive when they run
(selftests/archive_choice.py): the newest complete build of a series, never a version
Debian's next point release would take away. The matrix items (harness/matrix_items.py)
need nothing from here: an installed stapmatrix runs them from any directory.

In CI (CI=true, as GitHub sets it) a selftest that skips fails instead, unless the skip is
expected there and says why: STAPMATRIX_EXPECTED_SKIPS="TEST=why;TEST=why" (TEST a test's
name or node id). A browser test that quietly skipped on a runner without Chromium tested
nothing while CI stayed green.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from selftests.archive_choice import newest_kernel, systemtap_of
from selftests.cells import CellRun, stapmatrix_run

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "selftests" / "data"
# The selftests' kernel and systemtap: trixie's newest 6.12 build, sid's systemtap (5.6 today).
KERNEL_SERIES, KERNEL_RELEASE, STAP_SUITE = "6.12", "trixie", "sid"


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


def expected_skips() -> dict[str, str]:
    """STAPMATRIX_EXPECTED_SKIPS as {test: why}; an entry without its reason is refused."""
    expected = {}
    for entry in filter(None, (e.strip() for e in os.environ.get("STAPMATRIX_EXPECTED_SKIPS", "").split(";"))):
        test, _, why = entry.partition("=")
        if not test.strip() or not why.strip():
            raise pytest.UsageError(f"STAPMATRIX_EXPECTED_SKIPS: {entry!r} is not TEST=why (say why the skip is expected)")
        expected[test.strip()] = why.strip()
    return expected


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI, a skipped selftest is a failure unless STAPMATRIX_EXPECTED_SKIPS names it."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("CI") != "true" or hasattr(report, "wasxfail"):
        return
    if not Path(str(item.fspath)).resolve().is_relative_to(ROOT / "selftests"):
        return  # the matrix items' skips (DejaGnu UNTESTED) are results, not missing tests
    expected = expected_skips()
    if item.name in expected or item.nodeid in expected or item.originalname in expected:  # type: ignore[attr-defined]
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr).removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid} skipped in CI ({reason}); a selftest that does not run tests nothing. Fix "
                       f"the runner, or if the skip is expected there, say why: "
                       f"STAPMATRIX_EXPECTED_SKIPS=\"{item.name}=why\"")
