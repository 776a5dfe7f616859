"""Turning what happened to one test (compile, guest run) into one outcome with its reason.

The order of the checks is the order of the stages: a compile failure wins over everything,
then a crash, then a hang, then staprun's exit, then kernel splats and new taint, then the
output. A known failure from the matrix turns any non-pass into xfail (keeping the real
outcome in `actual`), and a pass of a known failure into a failure, so a stale entry is seen.
"""

from __future__ import annotations

import re

from harness.guest import SPLAT_RE, TAINT_ALLOWED, TIMEOUT_SCALE, GuestRun, guru_mode
from harness.modules import Compiled
from harness.outcomes import Outcome
from harness.scripts import TestScript
from harness.specs import Rule


def _first_lines(text: str, limit: int = 8) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])


def splat_lines(console: str, allow: list[str]) -> str:
    allowed = [re.compile(p) for p in allow]
    lines = console.splitlines()
    for index, line in enumerate(lines):
        if SPLAT_RE.search(line) and not any(a.search(line) for a in allowed):
            return "\n".join(lines[index : index + 12])
    return ""


def judge(script: TestScript, compiled: Compiled, guest: GuestRun | None, allow_splats: list[str]) -> tuple[Outcome, str]:
    """The outcome of one test and its reason (empty for a pass)."""
    if not compiled.ok:
        assert compiled.outcome is not None
        return compiled.outcome, compiled.detail
    if guest is not None and script.name in guest.garbled:
        return Outcome.ERROR, f"the guest's result channel held a line that does not parse: {guest.garbled[script.name]!r}"
    if guest is None or script.name not in guest.runs:
        why = guest.boot_failure if guest and guest.boot_failure else "the guest never started this test"
        return Outcome.ERROR, why
    run = guest.runs[script.name]
    if not run.ended:
        if run.guest_hung and not run.crash:
            return Outcome.TIMEOUT, "the guest stopped answering during this test and was killed after its limit"
        return Outcome.CRASH, run.crash or "the guest ended during this test without a crash message"
    if run.timed_out:
        limit = script.timeout_s * TIMEOUT_SCALE.get(guest.accel, 1)
        return Outcome.TIMEOUT, f"still running after {limit} s ({script.timeout_s} s x{limit // script.timeout_s} under {guest.accel.upper()}); stopped" + (
            "\n" + _first_lines(run.stderr) if run.stderr.strip() else "")
    if run.status is None:  # END without RC: the record was lost on the way
        return Outcome.ERROR, "the guest's result channel has no exit status for this test (a lost record)"
    if run.status != 0:
        return Outcome.FAIL_LOAD, f"staprun exited {run.status}: " + (_first_lines(run.stderr) or "(no message)")
    splat = splat_lines(run.console, allow_splats)
    if splat:
        return Outcome.FAIL_LOAD, "kernel splat while the module ran:\n" + splat
    taint = run.new_taint(guru_mode(list(script.stap_args)))
    if taint:
        return Outcome.FAIL_LOAD, f"the module left new kernel taint flags {taint} ({TAINT_ALLOWED})"
    problem = script.output_problem(run.stdout)
    if problem:
        return Outcome.FAIL_OUTPUT, problem + "; output began:\n" + (_first_lines(run.stdout) or "(empty)")
    return Outcome.PASS, ""


def apply_known_failure(outcome: Outcome, detail: str, rule: Rule | None) -> tuple[Outcome, str, str]:
    """(outcome, detail, actual): xfail when a listed failure fails; a pass keeps a note."""
    if rule is None or outcome is Outcome.ERROR:
        return outcome, detail, ""
    if outcome is Outcome.PASS:
        return outcome, f"listed as a known failure ({rule.reason}) but it passed: remove the xfail entry", ""
    return Outcome.XFAIL, detail, outcome.value
