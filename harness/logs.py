"""What a compile or build log says: the lines that name the cause, which pass of stap gave
up, and whether the machine (not the code) was to blame. Read by the compile step, the kernel
build and the reports alike."""

from __future__ import annotations

import re

from harness.outcomes import Outcome

# stap prints "Pass N: ... failed." when a pass gives up (also without -v).
PASS_FAILED_RE = re.compile(r"^Pass ([1-5]): .*failed", re.MULTILINE)
ERROR_LINE_RE = re.compile(r"(error|ERROR|Error|failed|undefined|No DWARF|WARNING: cannot)")
# A compile or build that failed for one of these reasons says nothing about what was built.
INFRA_FAILURE_RE = re.compile(
    r"(No space left on device|Cannot allocate memory|Killed signal terminated program|"
    r"virtual memory exhausted|out of memory|Read-only file system|Input/output error)",
    re.IGNORECASE,
)


def first_error_lines(log: str, limit: int = 6) -> str:
    lines = [line for line in log.splitlines() if ERROR_LINE_RE.search(line)]
    return "\n".join((lines or log.splitlines()[-limit:])[:limit])


def classify_compile_failure(log: str) -> Outcome:
    """Passes 1-3 (parse, elaborate, translate) are the front end: a probe point or variable
    that no longer resolves. Pass 4 is the kernel build of the generated C."""
    match = PASS_FAILED_RE.search(log)
    if match and match.group(1) == "4":
        return Outcome.FAIL_PASS4
    if match:
        return Outcome.FAIL_PASS2
    if "make: ***" in log or "error: " in log and ".c:" in log:
        return Outcome.FAIL_PASS4
    return Outcome.FAIL_PASS2
