"""From compile logs and guest runs to outcomes, on real stap output."""

from __future__ import annotations

from pathlib import Path

from harness.guest import GuestRun, TestRun
from harness.judge import apply_known_failure, judge
from harness.logs import classify_compile_failure, first_error_lines
from harness.modules import Compiled
from harness.outcomes import Outcome, Result, read_results, write_results
from harness.scripts import TestScript
from harness.specs import Rule

SCRIPT = TestScript("t", Path("/t.stp"), "", expect=(("line", "hello"),))
OK = Compiled("t", True, None, "", 1.0, False, Path("/log"))


def guest_with(**fields: object) -> GuestRun:
    run = TestRun("t", 1, 1, ended=True, status=0, taint_before=0, taint_after=12288, stdout="hello\n")
    for key, value in fields.items():
        setattr(run, key, value)
    return GuestRun("tcg", {"t": run})


def test_real_pass2_log(data) -> None:  # type: ignore[no-untyped-def]
    log = (data / "compile-pass2-tracepoint.log").read_text()
    assert classify_compile_failure(log) is Outcome.FAIL_PASS2
    assert "semantic error" in first_error_lines(log)


def test_real_pass4_log(data) -> None:  # type: ignore[no-untyped-def]
    log = (data / "compile-pass4-uprobes.log").read_text()
    assert classify_compile_failure(log) is Outcome.FAIL_PASS4
    assert "uprobe_unregister" in first_error_lines(log)


def test_judge_order() -> None:
    assert judge(SCRIPT, OK, guest_with(), []) == (Outcome.PASS, "")
    assert judge(SCRIPT, OK, guest_with(stdout="bye\n"), [])[0] is Outcome.FAIL_OUTPUT
    assert judge(SCRIPT, OK, guest_with(status=1, stderr="ERROR: x\n"), [])[0] is Outcome.FAIL_LOAD
    assert judge(SCRIPT, OK, guest_with(timed_out=True, status=143), [])[0] is Outcome.TIMEOUT
    assert judge(SCRIPT, OK, guest_with(ended=False, crash="Kernel panic - not syncing: x"), [])[0] is Outcome.CRASH
    assert judge(SCRIPT, OK, guest_with(ended=False, guest_hung=True), [])[0] is Outcome.TIMEOUT
    assert judge(SCRIPT, OK, guest_with(taint_after=12288 | 512), [])[0] is Outcome.FAIL_LOAD
    failed = Compiled("t", False, Outcome.FAIL_PASS4, "error: x", 1.0, False, Path("/log"))
    assert judge(SCRIPT, failed, None, []) == (Outcome.FAIL_PASS4, "error: x")
    assert judge(SCRIPT, OK, None, [])[0] is Outcome.ERROR


def test_splats_and_allow_list() -> None:
    splat = "WARNING: CPU: 0 PID: 1 at kernel/foo.c:1 bar+0x1/0x2"
    assert judge(SCRIPT, OK, guest_with(console=splat), [])[0] is Outcome.FAIL_LOAD
    assert judge(SCRIPT, OK, guest_with(console=splat), [r"kernel/foo\.c"])[0] is Outcome.PASS


def test_known_failures() -> None:
    rule = Rule("*", "*", "*", "uprobe API split in 6.12", 3)
    assert apply_known_failure(Outcome.FAIL_LOAD, "x", rule) == (Outcome.XFAIL, "x", "fail-load")
    outcome, detail, _ = apply_known_failure(Outcome.PASS, "", rule)
    assert outcome is Outcome.PASS and "remove the xfail entry" in detail
    assert apply_known_failure(Outcome.ERROR, "docker", rule)[0] is Outcome.ERROR


def test_results_json_round_trip(tmp_path: Path) -> None:
    result = Result("6.1.0-50-amd64", "deb:5.1-5", "t", Outcome.CRASH, "Oops")
    write_results(tmp_path / "results.json", [result])
    assert read_results(tmp_path / "results.json") == [result]
