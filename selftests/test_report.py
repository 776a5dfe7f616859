"""Reports and diffs on a real run: selftests/data/run-6.12-deb5.6-deb5.1 is a trimmed copy of
`pytest -n 2 --matrix=M` with kernel 6.12.117+deb13-amd64, systemtap deb:5.6-1 and deb:5.1-5,
tests begin_end, uprobes and timer and no xfail entries (results.json, compile logs, console
logs, stdout/stderr; no modules or kernel images). 5.6-1 passes everything; 5.1-5 fails
uprobes in pass 4 and the others at load ("Can't resolve uprobe_unregister").

run-6.12-stap-a and run-6.12-stap-b are that run split in two: the deb:5.6-1 records and the
deb:5.1-5 records, both with stap_name "stap" (a matrix column `name: stap` that was deb:5.6-1
in one run and deb:5.1-5 in the next). Their artifact paths point into the real run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from io import StringIO
from pathlib import Path

import junitparser
import pytest
from rich.console import Console

from harness.cli import main
from harness.errors import MatrixError
from harness.outcomes import Outcome, Result, Stage, Try, read_results
from harness.report import diff as report_diff
from harness.report import grid as report_grid
from harness.report import history, html, junit, load, markdown, terminal

RUN = "run-6.12-deb5.6-deb5.1"
CELL_51 = "6.12.117+deb13-amd64-stap5.1-5"


@pytest.fixture
def real(data: Path) -> list[Result]:
    return read_results(data / RUN)


def render(results: list[Result], width: int = 100) -> str:
    buffer = StringIO()
    terminal.render_terminal(results, Console(file=buffer, width=width, force_terminal=False))
    return buffer.getvalue()


def grid_3x4(results: list[Result]) -> list[Result]:
    """The real records spread over 3 kernels x 4 systemtap builds with long real-world names."""
    kernels = ["6.1.0-50-amd64", "6.12.117+deb13-amd64", "7.2.13+deb14-amd64"]
    staps = ["deb:5.6-1", "deb:5.1-5", "git:https://sourceware.org/git/systemtap.git@release-5.5",
             "path:/home/dev/src/systemtap-uprobes-rework"]
    spread = []
    for k, kernel in enumerate(kernels):
        for s, stap in enumerate(staps):
            source = [r for r in results if r.stap == ("deb:5.1-5" if (k + s) % 2 else "deb:5.6-1")]
            spread += [dataclasses.replace(r, kernel=kernel, kernel_name=kernel, stap=stap, stap_name=stap, cell="")
                       for r in source]
    return spread


# --- loading and merging


def test_load_run_dir_and_file(data: Path, real: list[Result]) -> None:
    assert load.load_runs([data / RUN / "results.json"]) == real
    assert {(r.stap, r.test): r.outcome.value for r in real} == {
        ("deb:5.1-5", "begin_end"): "fail-load", ("deb:5.1-5", "uprobes"): "fail-pass4",
        ("deb:5.1-5", "timer"): "fail-load", ("deb:5.6-1", "begin_end"): "pass",
        ("deb:5.6-1", "uprobes"): "pass", ("deb:5.6-1", "timer"): "pass"}


def test_merge_shards(tmp_path: Path, real: list[Result]) -> None:
    """Shards bring different cells; the same run given twice (or copied) merges to itself."""
    for index, stap in enumerate(("deb:5.6-1", "deb:5.1-5")):
        load.write_merged(tmp_path / f"shard{index}" / "results.json", [r for r in real if r.stap == stap])
    merged = load.load_runs([tmp_path / "shard0", tmp_path / "shard1", tmp_path / "shard1" / "results.json"])
    assert sorted(map(load.key, merged)) == sorted(map(load.key, real))


def test_merge_conflict_names_both_files(tmp_path: Path, real: list[Result]) -> None:
    load.write_merged(tmp_path / "a" / "results.json", real)
    changed = [dataclasses.replace(r, outcome=Outcome.PASS, detail="") for r in real]
    load.write_merged(tmp_path / "b" / "results.json", changed)
    with pytest.raises(MatrixError, match=r"begin_end .* in both .*a/results.json and .*b/results.json"):
        load.load_runs([tmp_path / "a", tmp_path / "b"])


def test_bad_input_is_a_matrix_error(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"not": "a list"}')
    with pytest.raises(MatrixError, match="not a stapmatrix results file"):
        load.load_runs([tmp_path])
    with pytest.raises(MatrixError, match="no such results file"):
        load.load_runs([tmp_path / "missing"])


def test_merged_json_points_at_the_artifacts_from_its_new_place(tmp_path: Path, data: Path) -> None:
    """A merged file in a directory that holds the runs points into them, by contained
    relative paths; one elsewhere leaves the paths out (and says how many), never `..`."""
    shutil.copytree(data / RUN, tmp_path / "merged" / "shards" / RUN)
    real = read_results(tmp_path / "merged" / "shards" / RUN)
    target = tmp_path / "merged" / "results.json"
    assert load.write_merged(target, real) == 0
    again = read_results(target)
    assert [r.test for r in again] == [r.test for r in real]
    assert all(Path(r.artifacts["compile_log"]).read_text() == Path(s.artifacts["compile_log"]).read_text()
               for r, s in zip(again, real, strict=True))
    written = json.loads(target.read_text())
    assert all(p.startswith(f"shards/{RUN}/") for r in written for p in r["artifacts"].values())
    elsewhere = tmp_path / "elsewhere" / "results.json"
    assert load.write_merged(elsewhere, real) == sum(len(r.artifacts) for r in real)
    assert all(r["artifacts"] == {} for r in json.loads(elsewhere.read_text()))


# --- the grid


def test_grid_counts_and_stages_once_per_cell(real: list[Result]) -> None:
    grid = report_grid.build_grid(real)
    assert grid.rows == ["6.12.117+deb13-amd64"]
    assert grid.columns == ["deb:5.1-5", "deb:5.6-1"]
    failing = grid.cell("6.12.117+deb13-amd64", "deb:5.1-5")
    passing = grid.cell("6.12.117+deb13-amd64", "deb:5.6-1")
    assert failing is not None and passing is not None
    assert (failing.summary(), failing.status, failing.id) == ("0/0/3/0", "fail", CELL_51)
    assert (passing.summary(), passing.status) == ("3/0/0/0", "pass")
    seconds = failing.seconds()
    # run and images are shared by the cell's tests: once, not three times; compile is per test
    assert seconds["run"] == failing.results[0].stages["run"].seconds
    assert seconds["images"] == failing.results[0].stages["images"].seconds
    assert seconds["compile"] == pytest.approx(sum(r.stages["compile"].seconds for r in failing.results))


def test_flaky_and_skip_are_counted_apart(real: list[Result]) -> None:
    flaky = dataclasses.replace(real[0], outcome=Outcome.FLAKY, tries=[Try("fail-load", "staprun exited 1"), Try("pass")])
    skip = dataclasses.replace(real[1], outcome=Outcome.SKIP, detail="DejaGnu UNSUPPORTED: x")
    passing = dataclasses.replace(real[2], outcome=Outcome.PASS, detail="")
    cell = report_grid.build_grid([flaky, skip, passing]).cells[(real[0].kernel_name, real[0].stap_name)]
    assert (cell.summary(), cell.extras(), cell.status) == ("1/0/0/0", "+1 flaky +1 skip", "flaky")
    assert report_grid.reason(flaky) == "tries: fail-load, pass: staprun exited 1"


# --- terminal


def test_terminal_real_run(real: list[Result]) -> None:
    text = render(real)
    assert re.search(r"6\.12\.117\+deb13-amd64\s+0/0/3/0\s+3/0/0/0", text)
    assert "fail-load   begin_end, timer: staprun exited 1: ERROR: Can't resolve uprobe_unregister!" in text
    assert "fail-pass4  uprobes: " in text
    assert "reproduce: ./sm run --kernel 6.12.117+deb13-amd64 --stap deb:5.1-5 " in text
    assert re.search(r"time summed over cells: images \d+ s; compile \d+ s; run \d+ s", text)
    assert f"slowest cell {CELL_51.replace('5.1-5', '5.6-1')}: 423 s, mostly images" in text
    assert "\x1b[" not in text, "no colour codes when the console is not a terminal"


def test_terminal_3x4_fits_100_columns(real: list[Result]) -> None:
    text = render(grid_3x4(real))
    print(text)
    grid_lines = text.split("\n\n")[0].splitlines()
    assert max(len(line.rstrip()) for line in grid_lines) <= 100
    assert "release-5.5 = git:https://sourceware.org/git/systemtap.git@release-5.5" in text
    assert re.search(r"^7\.2\.13\+deb14-amd64 ", text, re.MULTILINE)
    assert all(len(line) <= 100 for line in text.splitlines() if not line.lstrip().startswith("reproduce:"))


# --- markdown


def test_markdown_real_run(real: list[Result]) -> None:
    text = markdown.render_markdown(real)
    assert "| 6.12.117+deb13-amd64 | ❌ 0/0/3/0 · " in text
    assert "`fail-load` **6.12.117+deb13-amd64-stap5.1-5** begin\\_end: staprun exited 1: ERROR: Can't resolve" in text
    assert "<details><summary>detail</summary>" in text  # the multi-line pass-4 errors are folded
    assert "### Where the time went" in text


def test_markdown_is_shortened_to_its_limit(real: list[Result]) -> None:
    many = [dataclasses.replace(r, test=f"{r.test}{i}") for i in range(300) for r in real]
    full = markdown.render_markdown(many)
    short = markdown.render_markdown(many, limit_bytes=20_000)
    assert len(full.encode()) > 20_000 >= len(short.encode())
    assert "| 6.12.117+deb13-amd64 |" in short and "Shortened to fit 20000 bytes" in short
    assert "<details>" not in short


# --- HTML


def test_html_real_run(real: list[Result]) -> None:
    page = html.render_html(real)
    assert 'id="grid"' in page and '<a href="#cell-6.12.117+deb13-amd64-stap5.1-5">' in page
    assert "staprun exited 1: ERROR: Can&#39;t resolve uprobe_unregister!" in page
    assert "error: &#39;uprobe_unregister&#39; undeclared here" in page  # the compile log excerpt
    assert "stapmatrix: start begin_end" in page  # the console excerpt of that test
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"<script|<link|<img|@import|url\(|src=", page)


def test_html_escapes_and_survives_missing_artifacts(real: list[Result]) -> None:
    hostile = dataclasses.replace(real[0], test="<script>alert(1)</script>", detail="<b>x</b> & y",
                                  artifacts={"compile_log": "/nonexistent/compile.log"})
    page = html.render_html([hostile])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page
    assert "not available (/nonexistent/compile.log: outside the run directory its results file is in)" in page
    # The one log the record names is not shown; logs it does not name are not listed (an
    # example's record names its command and output, a script's its compile log and console).
    assert page.count("not available") == 1


def test_run_reports_are_written(tmp_path: Path, real: list[Result]) -> None:
    html.write_run_reports(tmp_path, real)
    assert "0/0/3/0" in (tmp_path / "report.html").read_text()
    assert "0/0/3/0" in (tmp_path / "report.md").read_text()


# --- JUnit


def test_junit(tmp_path: Path, real: list[Result]) -> None:
    xfail = dataclasses.replace(real[3], test="xf", outcome=Outcome.XFAIL, xfail_reason="known", actual="fail-load")
    error = dataclasses.replace(real[4], test="err", outcome=Outcome.ERROR, detail="image build failed: x")
    junit.write_junit(tmp_path / "junit.xml", [*real, xfail, error])
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    cases = {(case.classname, case.name): case for suite in xml for case in suite}
    assert len(cases) == 8
    begin_end = cases[(CELL_51, "begin_end")].result
    assert isinstance(begin_end[0], junitparser.Failure) and begin_end[0].type == "fail-load"
    assert "Can't resolve uprobe_unregister" in (begin_end[0].message or "")
    assert cases[("6.12.117+deb13-amd64-stap5.6-1", "begin_end")].is_passed
    assert isinstance(cases[("6.12.117+deb13-amd64-stap5.6-1", "xf")].result[0], junitparser.Skipped)
    assert isinstance(cases[("6.12.117+deb13-amd64-stap5.6-1", "err")].result[0], junitparser.Error)


# --- diff


def test_diff_renamed_column_regresses_with_reasons(data: Path) -> None:
    """The done-when case: column `stap` is deb:5.6-1, then deb:5.1-5, on 6.12."""
    diff = report_diff.diff_results(read_results(data / "run-6.12-stap-a"), read_results(data / "run-6.12-stap-b"))
    assert diff.identities == ["systemtap stap: deb:5.6-1 -> deb:5.1-5"]
    regressions = {c.key[2]: (c.summary, c.reason) for c in diff.groups["regressions"]}
    assert regressions["begin_end"] == ("pass -> fail-load", "staprun exited 1: ERROR: Can't resolve uprobe_unregister!")
    assert regressions["timer"][0] == "pass -> fail-load"
    assert regressions["uprobes"][0] == "pass -> fail-pass4" and "'uprobe_unregister' undeclared" in regressions["uprobes"][1]
    text = report_diff.render_diff_text(diff)
    assert "6.12.117+deb13-amd64 x stap begin_end: pass -> fail-load: staprun exited 1: ERROR: Can't resolve " \
           "uprobe_unregister!" in text
    back = report_diff.diff_results(read_results(data / "run-6.12-stap-b"), read_results(data / "run-6.12-stap-a"))
    assert not back.regressed and len(back.groups["fixes"]) == 3
    assert back.groups["fixes"][0].reason.startswith("was: staprun exited 1")


def test_diff_pairs_runs_of_one_kernel_each(data: Path) -> None:
    """`run --kernel OLD` then `run --kernel NEW`: one row each, compared row with row."""
    before = read_results(data / "run-6.12-stap-a")
    after = [dataclasses.replace(r, kernel_name="7.3-amd64", kernel="7.3-amd64", outcome=Outcome.FAIL_PASS4,
                                 detail="task_finder2.c:941: error: implicit declaration of function 'task_euid'")
             if r.test == "begin_end" else dataclasses.replace(r, kernel_name="7.3-amd64", kernel="7.3-amd64")
             for r in before]
    diff = report_diff.diff_results(before, after)
    assert not diff.cells_appeared and not diff.cells_vanished
    assert diff.identities[0] == "kernel row 6.12.117+deb13-amd64 compared with 7.3-amd64 (each run has only this one)"
    assert [(c.key, c.summary) for c in diff.groups["regressions"]] == [
        (("7.3-amd64", "stap", "begin_end"), "pass -> fail-pass4")]
    assert diff.compared == len(before)


def test_diff_classes(real: list[Result]) -> None:
    passing = [r for r in real if r.outcome is Outcome.PASS]
    base = passing + [dataclasses.replace(r, test="gone") for r in passing[:1]]
    new = [
        dataclasses.replace(passing[0], outcome=Outcome.FLAKY, tries=[Try("fail-load", "x"), Try("pass")]),
        dataclasses.replace(passing[1], outcome=Outcome.ERROR, detail="image build failed: apt"),
        passing[2],
        dataclasses.replace(passing[2], test="new"),
    ]
    diff = report_diff.diff_results(base, new)
    assert not diff.regressed, "flaky and infrastructure errors are not regressions"
    assert [c.key[2] for c in diff.groups["flaky"]] == ["begin_end"]
    assert [c.key[2] for c in diff.groups["errors"]] == ["uprobes"]
    assert [c.key[2] for c in diff.groups["appeared"]] == ["new"]
    assert [c.key[2] for c in diff.groups["vanished"]] == ["gone"]


def test_diff_change_between_failures_and_whole_cells(real: list[Result]) -> None:
    failing = [r for r in real if r.stap == "deb:5.1-5"]
    moved = [dataclasses.replace(r, outcome=Outcome.FAIL_LOAD, detail="staprun exited 1: y") if r.test == "uprobes" else r
             for r in failing]
    other_cell = [dataclasses.replace(r, stap_name="deb:9.9-1", stap="deb:9.9-1") for r in real if r.stap == "deb:5.6-1"]
    diff = report_diff.diff_results(failing, moved + other_cell)
    assert [(c.key[2], c.summary) for c in diff.groups["changes"]] == [("uprobes", "fail-pass4 -> fail-load")]
    assert diff.cells_appeared == [("6.12.117+deb13-amd64", "deb:9.9-1")] and not diff.groups["appeared"]
    assert not diff.regressed


def test_diff_stage_and_identity_fields_from_records() -> None:
    before = [Result("k", "git:R@main", "t", Outcome.PASS, stap_name="s", stap_identity="commit aaaa",
                     stages={"run": Stage(1.0)})]
    after = [dataclasses.replace(before[0], stap_identity="commit bbbb")]
    diff = report_diff.diff_results(before, after)
    assert diff.identities == ["systemtap s: git:R@main (commit aaaa) -> git:R@main (commit bbbb)"]


# --- the commands


def test_cli_report_writes_every_format(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(data / RUN, tmp_path / RUN)  # the run downloaded next to where the report goes
    code = main(["report", str(tmp_path / RUN), "--html", str(tmp_path / "r.html"), "--markdown", str(tmp_path / "r.md"),
                 "--json", str(tmp_path / "out" / "results.json"), "--junit", str(tmp_path / "j.xml")])
    assert code == 0
    said = capsys.readouterr()
    assert "0/0/3/0" in said.out
    assert all((tmp_path / name).stat().st_size > 0 for name in ("r.html", "r.md", "out/results.json", "j.xml"))
    assert "artifact path(s) lie outside" in said.err  # out/ does not hold the run
    assert all(r["artifacts"] == {} for r in json.loads((tmp_path / "out" / "results.json").read_text()))
    assert main(["report", str(tmp_path / RUN), "--json", str(tmp_path / "results.json")]) == 0
    paths = [r["artifacts"]["compile_log"] for r in json.loads((tmp_path / "results.json").read_text())]
    assert paths and all(p.startswith(f"{RUN}/") for p in paths), "relative to the merged file's place"


def test_cli_diff_exit_codes(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(data / "run-6.12-stap-a"), str(data / "run-6.12-stap-b")]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert main(["diff", str(data / "run-6.12-stap-b"), str(data / "run-6.12-stap-a"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["regressed"] is False
    assert main(["diff", str(data / "run-6.12-stap-a"), str(tmp_path / "nothing")]) == 2


def test_terminal_caps_expected_lines_per_cell(real: list[Result]) -> None:
    """A systemtap testsuite brings many UNSUPPORTED lines; failures are never cut."""
    skips = [dataclasses.replace(real[0], test=f"testsuite:x.exp:t{i}", outcome=Outcome.SKIP,
                                 detail=f"DejaGnu UNSUPPORTED: t{i}") for i in range(40)]
    text = render([*skips, *real[:3]])
    assert text.count("skip        testsuite:x.exp:") == terminal.EXPECTED_LINES
    assert f"… {40 - terminal.EXPECTED_LINES} more xfail/skip line(s)" in text
    assert "fail-load   begin_end, timer: staprun exited 1" in text


def test_report_fails_naming_a_planned_cell_without_results(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report job of the workflow: a cell whose job uploaded nothing is named, exit 1."""
    planned = {"include": [{"cell": CELL_51}, {"cell": "6.12.117+deb13-amd64-stap5.6-1"},
                           {"cell": "6.12.117+deb13-amd64-stap9.9-1"}]}
    assert main(["report", str(data / RUN), "--expect-cells", json.dumps(planned)]) == 1
    said = capsys.readouterr().err
    assert "1 of 3 planned cell(s) brought no results: 6.12.117+deb13-amd64-stap9.9-1" in said
    assert main(["report", str(data / RUN), "--expect-cells", f"{CELL_51}, 6.12.117+deb13-amd64-stap5.6-1"]) == 0
    assert main(["report", str(data / RUN), "--expect-cells", '{"include": 5}']) == 2
    assert main(["report", str(data / RUN), "--expect-cells", "a;b"]) == 2


# --- nightly history


def night(real: list[Result], outcomes: dict[str, Outcome]) -> list[Result]:
    """The deb:5.6-1 cell (everything passed) with some tests' outcomes changed."""
    return [dataclasses.replace(r, outcome=outcomes[r.test], detail="x") if r.test in outcomes else r
            for r in real if r.stap == "deb:5.6-1"]


def test_history_dates_a_failure_from_its_first_night_to_its_fix(real: list[Result]) -> None:
    nights = [night(real, {}), night(real, {"timer": Outcome.FAIL_LOAD}),
              night(real, {"timer": Outcome.FAIL_OUTPUT, "uprobes": Outcome.FAIL_PASS4}),
              night(real, {"timer": Outcome.ERROR, "uprobes": Outcome.FAIL_PASS4}),
              night(real, {"uprobes": Outcome.FAIL_PASS4})]
    dates = ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-05"]
    previous = history.advance(None, [], nights[0], dates[0])
    assert previous.failing == {}
    seen = []
    for base, new, date in zip(nights, nights[1:], dates[1:], strict=False):
        tonight = history.advance(previous, base, new, date)
        diff = report_diff.diff_results(base, new)
        seen.append(([c.key[2] for c in diff.groups["regressions"]],
                     sorted((f.key[2], f.since) for f in history.still_failing(previous, base, tonight)),
                     [c.key[2] for c in diff.groups["fixes"]]))
        previous = tonight
    assert seen == [
        (["timer"], [], []),                                                 # new on the 2nd: fails the job
        (["uprobes"], [("timer", "2026-12-02")], []),                        # another way, still since the 2nd
        ([], [("timer", "2026-12-02"), ("uprobes", "2026-12-03")], []),      # an error night carries it
        ([], [("uprobes", "2026-12-03")], []),                               # error -> pass: not a "fix" of stap
    ]
    assert set(previous.failing) == {("6.12.117+deb13-amd64", "deb:5.6-1", "uprobes")}


def test_history_without_a_previous_file(real: list[Result]) -> None:
    base = night(real, {"timer": Outcome.CRASH})
    tonight = history.advance(None, base, night(real, {"timer": Outcome.CRASH}), "2026-12-02")
    (row,) = history.still_failing(None, base, tonight)
    assert row.since is None and "since before the history began" in history.render_still_failing_text([row])


def test_cli_diff_with_history(real: list[Result], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, outcomes in (("n1", {}), ("n2", {"timer": Outcome.FAIL_LOAD}), ("n3", {"timer": Outcome.FAIL_LOAD})):
        load.write_merged(tmp_path / name / "results.json", night(real, outcomes))
    assert main(["diff", str(tmp_path / "n1"), str(tmp_path / "n2"), "--history", str(tmp_path / "n1/history.json"),
                 "--write-history", str(tmp_path / "n2/history.json"), "--date", "2026-12-02"]) == 1
    said = capsys.readouterr()
    assert "no history at" in said.err and "still failing: none" in said.out
    assert json.loads((tmp_path / "n2/history.json").read_text())["failing"][0]["since"] == "2026-12-02"
    assert main(["diff", str(tmp_path / "n2"), str(tmp_path / "n3"), "--history", str(tmp_path / "n2/history.json"),
                 "--write-history", str(tmp_path / "n3/history.json"), "--format", "markdown",
                 "--date", "2026-12-03"]) == 0, "only new regressions fail"
    out = capsys.readouterr().out
    assert "### still failing, not new (1)" in out and "| timer | fail-load | since 2026-12-02 |" in out
    assert main(["diff", str(tmp_path / "n2"), str(tmp_path / "n3"), "--history", str(tmp_path / "n2/history.json"),
                 "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["regressed"] is False and document["still_failing"][0]["since"] == "2026-12-02"
    (tmp_path / "bad.json").write_text('{"format": "stapmatrix-history-v1", "date": "yesterday", "failing": []}')
    assert main(["diff", str(tmp_path / "n2"), str(tmp_path / "n3"), "--history", str(tmp_path / "bad.json")]) == 2
    assert "'yesterday' is not a date" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "n2"), str(tmp_path / "n3"), "--write-history", str(tmp_path / "h.json"),
                 "--date", "12/03"]) == 2
