"""DejaGnu lines to outcomes, on a real systemtap.sum: release-5.5's environment_sanity.exp
and kprobes.exp run against Debian's 6.12.117 guest through stap --remote."""

from __future__ import annotations

from harness.testsuite import DejaGnuResult, parse_sum


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
