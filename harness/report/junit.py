"""JUnit XML: one testsuite per cell, one testcase per record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import junitparser

from harness.outcomes import FAILURES, Outcome, Result
from harness.report.escape import xml as xml_safe
from harness.report.grid import build_grid, cell_id, reason


def junit_case(result: Result) -> junitparser.TestCase:
    """Failures are stap's (fail-*, crash, timeout, a known failure that passed); errors are
    infrastructure; xfail, skip and flaky are skipped with their reason (not a failure). Every
    string passes harness/report/escape.py's xml(): a control character would make the file
    unreadable to every JUnit consumer."""
    compile_stage = result.stages.get("compile")
    case = junitparser.TestCase(xml_safe(result.test), xml_safe(cell_id(result)), compile_stage.seconds if compile_stage else 0.0)
    outcome = result.outcome
    entry: junitparser.Failure | junitparser.Error | junitparser.Skipped | None = None
    if outcome in FAILURES or (outcome is Outcome.PASS and result.detail):
        entry = junitparser.Failure(xml_safe(f"{outcome.value}: {reason(result)}"), outcome.value)
    elif outcome is Outcome.ERROR:
        entry = junitparser.Error(xml_safe(reason(result)), outcome.value)
    elif outcome in (Outcome.XFAIL, Outcome.SKIP, Outcome.FLAKY):
        entry = junitparser.Skipped(xml_safe(f"{outcome.value}: {reason(result)}"), outcome.value)
    if entry is not None:
        entry.text = xml_safe("\n\n".join(t for t in (result.detail, result.xfail_reason, "reproduce: " + result.reproduce)
                                     if t))
        case.result = [entry]
    return case


def write_junit(path: Path, results: Sequence[Result]) -> None:
    """One testsuite per cell, one testcase per record."""
    xml = junitparser.JUnitXml("stapmatrix")
    for cell in build_grid(results).cells.values():
        suite = junitparser.TestSuite(xml_safe(cell.id))
        for result in cell.results:
            suite.add_testcase(junit_case(result))
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    path.parent.mkdir(parents=True, exist_ok=True)
    xml.write(str(path), pretty=True)
