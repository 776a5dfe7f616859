"""The selftests' one hook: in CI (CI=true, as GitHub sets it) a selftest that skips fails
instead, unless the skip is expected there and says why:
STAPMATRIX_EXPECTED_SKIPS="TEST=why;TEST=why" (TEST a test's name or node id). A browser test
that quietly skipped on a runner without Chromium tested nothing while CI stayed green.

It lives here, not in the repository's conftest.py, so that it applies to these tests only:
the matrix items' skips (DejaGnu UNTESTED lines) are results, not tests that did not run.
"""

from __future__ import annotations

import os

import pytest


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
    expected = expected_skips()
    if item.name in expected or item.nodeid in expected or item.originalname in expected:  # type: ignore[attr-defined]
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr).removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid} skipped in CI ({reason}); a selftest that does not run tests nothing. Fix "
                       f"the runner, or if the skip is expected there, say why: "
                       f"STAPMATRIX_EXPECTED_SKIPS=\"{item.name}=why\"")
