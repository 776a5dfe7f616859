"""What `stapmatrix bisect` prints and writes, and the bisect command `diff` suggests, on
recorded data (no Docker): the step table, the JSON document, the markdown for a CI summary,
git bisect's answers parsed, the command line checked before anything runs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from harness import bisect
from harness.cli import main
from harness.errors import MatrixError
from harness.outcomes import Outcome, Result
from harness.report import diff as report_diff

GOOD, MIDDLE, FIRST, BAD = ("1" * 40, "2" * 40, "3" * 40, "4" * 40)
BROKEN = "5" * 40


def recorded() -> bisect.BisectReport:
    """The shape of a real kernel bisection (selftests/test_bisect.py): two ends, a skipped
    commit, the first changed one."""
    steps = [
        bisect.StepRecord(1, BAD, "bad end", "pass", "", 612.0, True, False, 95.0, f"./sm run --kernel git:/r@{BAD}"),
        bisect.StepRecord(2, GOOD, "good end", "fail-pass2",
                          "semantic error: while resolving probe point: identifier 'kernel' at marker.stp:6:7",
                          48.0, True, True, 30.0, ""),
        bisect.StepRecord(3, BROKEN, "bisect", "skip", "building kernel ... failed (exit 2):", 20.0, True, True, 0.0),
        bisect.StepRecord(4, MIDDLE, "bisect", "fail-pass2", "semantic error: ...", 40.0, True, True, 28.0),
        bisect.StepRecord(5, FIRST, "bisect", "pass", "", 41.0, True, True, 33.0),
    ]
    report = bisect.BisectReport("kernel", "/r", GOOD, "history", "marker", "pass", steps)
    report.first_changed = bisect.CommitInfo(FIRST, "kernel/sys.c: add stapmatrix_marker()",
                                             "stapmatrix <stapmatrix@localhost>", "2026-01-01T00:00:00+00:00")
    report.parent, report.before, report.after = MIDDLE, steps[3], steps[4]
    report.reproduce_commit = f"./sm run --kernel git:/r@{FIRST} --stap deb:5.6-1 marker.stp"
    report.reproduce_parent = f"./sm run --kernel git:/r@{MIDDLE} --stap deb:5.6-1 marker.stp"
    report.seconds = 1234.0
    return report


def test_text_names_the_commit_the_outcomes_and_every_step() -> None:
    text = bisect.render_text(recorded())
    print(text)
    assert f"first changed commit: {FIRST}" in text
    assert "before (222222222222): fail-pass2: semantic error" in text
    assert "after: pass" in text
    assert "not judged (did not build): 555555555555" in text
    rows = [line.split() for line in text.splitlines() if line[:1].isdigit() and "step(s)" not in line]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[2][1:4] == ["555555555555", "bisect", "skip"]
    assert "5 step(s), 5 build(s), 1234 s in all" in text
    assert text.rstrip().endswith(recorded().reproduce_parent)


def test_json_has_first_changed_steps_and_skipped() -> None:
    document = recorded().as_json()
    json.dumps(document)
    assert document["first_changed"]["commit"] == FIRST  # type: ignore[index]
    assert document["first_changed"]["outcome_before"] == "fail-pass2"  # type: ignore[index]
    assert document["skipped"] == [BROKEN]
    assert [s["commit"] for s in document["steps"]] == [BAD, GOOD, BROKEN, MIDDLE, FIRST]  # type: ignore[attr-defined]
    assert document["builds"] == 5


def test_markdown_renders_as_a_table_without_markup_from_records() -> None:
    report = recorded()
    report.first_changed = dataclasses.replace(report.first_changed, subject="<img src=x> *bold*")  # type: ignore[arg-type]
    text = bisect.render_markdown(report)
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<img" not in html and "<em>" not in html
    assert html.count("<tr>") == 6  # the header and five steps


def test_candidates_when_skips_hide_the_answer() -> None:
    report = recorded()
    report.first_changed, report.candidates = None, [bisect.CommitInfo(BROKEN, "broken", "a", "d"),
                                                     bisect.CommitInfo(FIRST, "marker", "a", "d")]
    assert f"the first changed commit is one of {BROKEN} (broken), {FIRST} (marker)" in bisect.render_text(report)


def test_git_bisect_answers_are_parsed(tmp_path: Path) -> None:
    """Real git bisect output in a bare clone: the next step, the answer, the candidates."""
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for number in range(6):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q",
                        "--allow-empty", "-m", f"c{number}"], check=True)
    clone = bisect.PrivateClone(str(repo))
    try:
        commits = clone.git("rev-list", "--reverse", "HEAD", what="list").split()
        output = clone.bisect("start", "--no-checkout", commits[-1], commits[0])
        assert bisect.steps_left(output) >= 2
        while bisect.FIRST_RE.search(output) is None and bisect.CANDIDATES_HEADER not in output:
            head = clone.head()
            verdict = "skip" if head == commits[3] else "bad" if commits.index(head) >= 3 else "good"
            output = clone.bisect(verdict, head)
        assert set(bisect.parse_candidates(output)) == {commits[3], commits[4]} or \
            bisect.FIRST_RE.search(output).group(1) == commits[4]  # type: ignore[union-attr]
    finally:
        clone.remove()
    assert not clone.path.exists()
    assert not list((repo / ".git").glob("BISECT_*")) and not (repo / ".git" / "refs" / "bisect").exists()


def test_command_line_is_checked_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "t.stp"
    script.write_text("probe begin { exit() }\n")
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    both = ["bisect", "--kernel", "6.12.118+deb13-amd64", "--stap", "deb:5.6-1", "--good", "a", "--bad", "b",
            str(script)]
    assert main(both) == 2
    assert "give exactly one of --kernel git:REPO or --stap git:REPO" in capsys.readouterr().err
    assert main(["bisect", "--kernel", f"git:{repo}", "--stap", "deb:5.6-1", "--good", "a", "--bad", "b"]) == 2
    assert "give one SCRIPT or --testsuite sets" in capsys.readouterr().err
    with pytest.raises(MatrixError):
        main_args = ["bisect", "--kernel", f"git:{repo}", "--stap", "deb:5.6-1", "--good", "a", "--bad", "b",
                     str(script), str(script)]
        from harness.cli import bisect_request, join_option_values, parser
        bisect_request(parser().parse_args(join_option_values(main_args)))


def _record(kernel: str, identity: str, outcome: Outcome) -> Result:
    return Result(kernel=kernel, stap="deb:5.6-1", test="marker", outcome=outcome, kernel_name="linux",
                  kernel_identity=identity, reproduce=f"./sm run --kernel {kernel} --stap deb:5.6-1 "
                  "--kernel-config tinyconfig tests/stap/kernel/marker.stp")


def test_diff_of_two_git_refs_suggests_the_bisect() -> None:
    before = _record("git:/src/linux@v1", f"commit {GOOD}", Outcome.PASS)
    after = _record("git:/src/linux@v2", f"commit {BAD}", Outcome.FAIL_PASS2)
    diff = report_diff.diff_results([before], [after])
    assert report_diff.bisect_commands(diff) == [
        (f"stapmatrix bisect --kernel git:/src/linux --good {GOOD} --bad {BAD} --stap deb:5.6-1 "
         "--kernel-config tinyconfig tests/stap/kernel/marker.stp")]
    assert "to find the commit that changed it:" in report_diff.render_diff_text(diff)
    assert json.loads(report_diff.render_diff_json(diff))["bisect"] == report_diff.bisect_commands(diff)
    other_repo = _record("git:/src/other@v2", f"commit {BAD}", Outcome.FAIL_PASS2)
    assert report_diff.bisect_commands(report_diff.diff_results([before], [other_repo])) == []
    debian = _record("6.12.118+deb13-amd64", "6.12.118-1 (trixie)", Outcome.FAIL_PASS2)
    assert report_diff.bisect_commands(report_diff.diff_results([before], [debian])) == []


def test_a_recorded_systemtap_bisection_renders_again(data: Path) -> None:
    """selftests/data/bisect/stap-history.json: the real systemtap-side run of test_bisect.py."""
    document = json.loads((data / "bisect" / "stap-history.json").read_text())
    report = bisect.report_from_json(document)
    assert report.as_json() == document
    text = bisect.render_text(report)
    assert "first changed commit: 7b9ec0493b6c6cbc744011c99ccd7dc88ee83431" in text
    assert "before (ceee3356151a): fail-output: expected a line 'answer 42'" in text
    assert "5 step(s), 4 build(s)" in text
    with pytest.raises(MatrixError):
        bisect.report_from_json({"steps": []})
