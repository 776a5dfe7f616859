"""DejaGnu lines to outcomes, on a real systemtap.sum: release-5.5's environment_sanity.exp
and kprobes.exp run against Debian's 6.12.117 guest through stap --remote."""

from __future__ import annotations

from harness.outcomes import Outcome
from harness.testsuite import DejaGnuResult, FileRun, file_verdicts, parse_sum


def test_real_sum(data) -> None:  # type: ignore[no-untyped-def]
    results = parse_sum((data / "systemtap-5.5-on-6.12.sum").read_text())
    assert [(r.exp, r.status, r.name) for r in results] == [
        ("systemtap/environment_sanity.exp", "PASS", "environment - compiler"),
        ("systemtap/environment_sanity.exp", "FAIL", "environment - systemtap self-probing"),
        ("systemtap.base/kprobes.exp", "PASS", "kprobes startup"),
        ("systemtap.base/kprobes.exp", "PASS", "kprobes load generation"),
        ("systemtap.base/kprobes.exp", "FAIL", "kprobes unexpected output"),
    ]


def test_every_status_maps() -> None:
    expected = {"PASS": "pass", "FAIL": "fail", "KFAIL": "xfail", "XFAIL": "xfail", "UNTESTED": "skip",
                "UNSUPPORTED": "skip", "UNRESOLVED": "fail", "XPASS": "fail", "KPASS": "pass", "ERROR": "fail"}
    for status, outcome in expected.items():
        assert DejaGnuResult("x.exp", status, "n").pytest_outcome == outcome
    text = "Running /s/testsuite/systemtap.base/a.exp ...\nKFAIL: a one (PRMS: 1)\nUNSUPPORTED: a two\n"
    assert [r.pytest_outcome for r in parse_sum(text)] == ["xfail", "skip"]


def test_a_line_that_differs_between_tries_is_flaky(data) -> None:  # type: ignore[no-untyped-def]
    """Two real tries of kretprobe-vars.exp (release-5.5 on 6.12.118 under TCG, 2026-12-04):
    DejaGnu names the third line by what happened, so each try has a line the other lacks;
    both are `flaky`, with both tries, and the lines that agree keep their outcome."""
    first = FileRun("systemtap.base/kretprobe-vars.exp",
                    parse_sum((data / "dejagnu-tries" / "kretprobe-vars-try1-fail.sum").read_text()))
    first.retries.append(FileRun("systemtap.base/kretprobe-vars.exp",
                                 parse_sum((data / "dejagnu-tries" / "kretprobe-vars-try2-pass.sum").read_text())))
    verdicts = {v.test.rsplit(":", 1)[1]: v for v in file_verdicts(first)}
    assert list(verdicts) == ["kretprobe-vars startup", "kretprobe-vars load generation",
                              "kretprobe-vars unexpected output", "kretprobe-vars shutdown and output"]
    assert verdicts["kretprobe-vars startup"].outcome is Outcome.PASS
    assert verdicts["kretprobe-vars startup"].tries == ((Outcome.PASS, ""), (Outcome.PASS, ""))
    failed, passed = verdicts["kretprobe-vars unexpected output"], verdicts["kretprobe-vars shutdown and output"]
    assert failed.outcome is Outcome.FLAKY and passed.outcome is Outcome.FLAKY
    assert failed.detail == ("different outcomes in fresh boots: try 1: fail-output (DejaGnu FAIL: kretprobe-vars "
                             "unexpected output); try 2: skip (not in this try's systemtap.sum)")
    assert [o for o, _ in passed.tries] == [Outcome.SKIP, Outcome.PASS]


def test_a_file_that_crashed_once_is_flaky_as_a_file() -> None:
    first = FileRun("systemtap.base/x.exp", [DejaGnuResult("systemtap.base/x.exp", "PASS", "x one")],
                    crash="BUG: kernel NULL pointer dereference")
    first.retries.append(FileRun("systemtap.base/x.exp", [DejaGnuResult("systemtap.base/x.exp", "PASS", "x one")]))
    line, whole = file_verdicts(first)
    assert (line.test, line.outcome) == ("testsuite:systemtap.base/x.exp:x one", Outcome.PASS)
    assert (whole.test, whole.outcome, whole.is_line) == ("testsuite:systemtap.base/x.exp", Outcome.FLAKY, False)
    assert first.failed and not first.retries[0].failed


def test_counts_a_line_carries_are_not_its_name(data) -> None:  # type: ignore[no-untyped-def]
    """Two real tries of backtrace.exp (release-5.5 on 6.12.118, 2026-12-04): the failing line
    was `self-unwind-ensure-exact (40)`, then `(36)`. One test that failed twice, not two flaky
    ones; the detail keeps DejaGnu's own line."""
    tries = [parse_sum((data / "dejagnu-tries" / f"backtrace-try{n}.sum").read_text()) for n in (1, 2)]
    first = FileRun("systemtap.base/backtrace.exp", tries[0])
    first.retries.append(FileRun("systemtap.base/backtrace.exp", tries[1]))
    verdicts = {v.test: v for v in file_verdicts(first)}
    assert list(verdicts) == ["testsuite:systemtap.base/backtrace.exp:backtrace",
                              "testsuite:systemtap.base/backtrace.exp:backtrace-unwindsyms",
                              "testsuite:systemtap.base/backtrace.exp:self-unwind-ensure-exact"]
    failed = verdicts["testsuite:systemtap.base/backtrace.exp:self-unwind-ensure-exact"]
    assert failed.outcome is Outcome.FAIL_OUTPUT and failed.detail == "DejaGnu FAIL: self-unwind-ensure-exact (40)"
    assert [d for _, d in failed.tries] == ["DejaGnu FAIL: self-unwind-ensure-exact (40)",
                                            "DejaGnu FAIL: self-unwind-ensure-exact (36)"]
    assert [DejaGnuResult("x.exp", "PASS", n).test for n in ("wakeup (8,2,8,1)", "kprobes (dyninst)", "(3)")] == \
        ["wakeup", "kprobes (dyninst)", "(3)"]
