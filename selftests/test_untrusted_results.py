"""Results are untrusted input (issue 18, items 1-3): a CI run merges results files that jobs
for pull requests uploaded and publishes the report. Each case is a real results file (the
records of a real run, selftests/data/run-6.12-deb5.6-deb5.1, altered as an attacker or a
careless user would) given to the real `stapmatrix report` or `diff`: one line and exit 2 for
bad input, and no output that carries another file's contents, markup or escape sequences.
Nothing here reads outside the test's own directory (the "secrets" are files of the test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from harness import cache

ROOT = Path(__file__).resolve().parent.parent
RUN = "run-6.12-deb5.6-deb5.1"
SECRET = "SECRET-TOKEN-d41d8cd98f00"


def stapmatrix(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a process of its own (a hang is a failed test, not a stuck run)."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def one_line_error(completed: subprocess.CompletedProcess[str]) -> str:
    """The error of a refused run: exit 2, one line on stderr, no traceback."""
    assert completed.returncode == 2, completed.stdout + completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr
    return lines[0]


@pytest.fixture
def run(tmp_path: Path, data: Path) -> Path:
    """A copy of the real run, as downloaded from a CI job."""
    shutil.copytree(data / RUN, tmp_path / RUN)
    return tmp_path / RUN


def records(run: Path) -> list[dict[str, Any]]:
    return list(json.loads((run / "results.json").read_text()))


def save(run: Path, changed: list[dict[str, Any]]) -> Path:
    (run / "results.json").write_text(json.dumps(changed))
    return run / "results.json"


class Page(HTMLParser):
    """Every tag, and every href, of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.metas: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("href") is not None:
            self.hrefs.append(str(values["href"]))
        if tag == "meta":
            self.metas.append(values)


def page_of(path: Path) -> tuple[str, Page]:
    text = path.read_text()
    page = Page()
    page.feed(text)
    return text, page


# --- 1. containment ---------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["absolute", "dot-dot", "symlink out", "symlinked directory out"])
def test_report_never_reads_a_file_outside_the_run(run: Path, tmp_path: Path, where: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    changed = records(run)
    cell_dir = Path(changed[0]["artifacts"]["dir"])
    path = {"absolute": str(secret), "dot-dot": f"{cell_dir}/../../secret.txt",
            "symlink out": f"{cell_dir}/leak.log", "symlinked directory out": f"{cell_dir}/up/secret.txt"}[where]
    if where == "symlink out":
        (run / cell_dir / "leak.log").symlink_to(secret)
    if where == "symlinked directory out":
        (run / cell_dir / "up").symlink_to(tmp_path)
    for record in changed:
        record["artifacts"]["compile_log"] = path
    save(run, changed)
    out = tmp_path / "published"
    completed = stapmatrix("report", str(run), "--html", str(out / "report.html"), "--json", str(out / "results.json"),
                           "--markdown", str(out / "report.md"), "--junit", str(out / "junit.xml"))
    assert completed.returncode == 0, completed.stderr
    for name in ("report.html", "results.json", "report.md", "junit.xml"):
        assert SECRET not in (out / name).read_text(), name
        assert "secret.txt" not in (out / name).read_text() or name == "report.html"
    text, page = page_of(out / "report.html")
    assert "outside the run directory its results file is in" in text
    assert all(not href.endswith("secret.txt") for href in page.hrefs)


def test_the_environment_never_reaches_the_page(run: Path, tmp_path: Path) -> None:
    """/proc/self/environ of the reporting process (in CI: the job's secrets)."""
    changed = records(run)
    for record in changed:
        record["artifacts"].update(stdout="/proc/self/environ", stderr="/proc/self/cmdline")
    save(run, changed)
    env = dict(os.environ, STAPMATRIX_TEST_SECRET=SECRET)
    completed = stapmatrix("report", str(run), "--html", str(tmp_path / "r.html"), env=env)
    assert completed.returncode == 0, completed.stderr
    assert SECRET not in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_an_artifact_that_is_not_a_regular_file(run: Path, tmp_path: Path, kind: str) -> None:
    """A FIFO in the run (reading would wait for a writer forever), a symlink in the run to
    /dev/zero (reading never ends) or a directory: "not available", saying why."""
    changed = records(run)
    cell_dir = run / changed[0]["artifacts"]["dir"]
    odd = cell_dir / "odd.log"
    if kind == "fifo":
        os.mkfifo(odd)
    elif kind == "dev-zero":
        odd.symlink_to("/dev/zero")
    else:
        odd.mkdir()
    for record in changed:
        record["artifacts"]["console"] = str(odd.relative_to(run))
    save(run, changed)
    completed = stapmatrix("report", str(run), "--html", str(tmp_path / "r.html"), timeout=60)
    assert completed.returncode == 0, completed.stderr
    said = {"fifo": "is a FIFO, not a regular file", "dev-zero": "outside the run directory",
            "directory": "is a directory, not a regular file"}[kind]
    assert said in (tmp_path / "r.html").read_text()


def test_a_huge_artifact_shows_its_end_and_its_size(run: Path, tmp_path: Path) -> None:
    changed = records(run)
    huge = run / changed[0]["artifacts"]["dir"] / "huge.log"
    with huge.open("wb") as stream:  # 3 GiB, sparse: no disk is used
        stream.truncate(3 * 1024**3 - 12)
        stream.seek(0, os.SEEK_END)
        stream.write(b"\nTHE-LAST-LINE")
    for record in changed:
        record["artifacts"]["stdout"] = str(huge.relative_to(run))
    save(run, changed)
    completed = stapmatrix("report", str(run), "--html", str(tmp_path / "r.html"), timeout=120)
    assert completed.returncode == 0, completed.stderr
    text = (tmp_path / "r.html").read_text()
    assert "the last 256.0 KiB of 3.0 GiB" in text and "THE-LAST-LINE" in text
    assert (tmp_path / "r.html").stat().st_size < 8 * 1024 * 1024


def test_a_results_file_that_is_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "results.json")
    line = one_line_error(stapmatrix("report", str(tmp_path), timeout=60))
    assert "results.json: is a FIFO, not a regular file" in line
    line = one_line_error(stapmatrix("diff", str(tmp_path), str(tmp_path), timeout=60))
    assert "is a FIFO, not a regular file" in line


def test_a_results_file_that_is_a_device(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").symlink_to("/dev/zero")
    line = one_line_error(stapmatrix("report", str(tmp_path / "run"), timeout=60))
    assert "is a character device, not a regular file" in line


def test_a_cache_entry_that_is_a_fifo_is_discarded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entry = tmp_path / "entry.json"
    os.mkfifo(entry)
    assert cache.read_entry(entry) is None  # returns at once instead of waiting for a writer
    assert not entry.exists() and any("is a FIFO" in r.getMessage() for r in caplog.records)


def test_json_writes_only_contained_relative_paths(run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    changed = records(run)
    changed[0]["artifacts"]["console"] = str(secret)
    changed[1]["artifacts"]["console"] = "../../secret.txt"
    save(run, changed)
    merged = tmp_path / "results.json"
    completed = stapmatrix("report", str(run), "--json", str(merged))
    assert completed.returncode == 0, completed.stderr
    assert "2 artifact path(s) lie outside" in completed.stderr
    for record in json.loads(merged.read_text()):
        for path in record["artifacts"].values():
            assert not os.path.isabs(path) and ".." not in Path(path).parts, path
            assert (tmp_path / path).resolve().is_relative_to(tmp_path)


# --- 2. one escaper per output kind -----------------------------------------------------------

HOSTILE_TEST = "t<img src=x onerror=alert(1)>\r| a | row |\n# heading ![i](http://127.0.0.1:9/i.png) \x1b]52;c;cHduZWQ=\x07"
HOSTILE_DETAIL = ("staprun exited 1: <script>alert(1)</script> [click](javascript:alert(1))\n"
                  "![tracker](http://127.0.0.1:9/t.png)\r\n## heading\n<details open>raw</details> ``` \x00\x1b[2J")


def make_hostile(run: Path, names_too: bool) -> Path:
    """The run's non-pass records with hostile test names and details (and, `names_too`,
    hostile cell ids and row names)."""
    changed = records(run)
    for record in changed:
        if record["outcome"] != "pass":
            record.update(test=record["test"] + HOSTILE_TEST, detail=HOSTILE_DETAIL)
            if names_too:
                record.update(cell=record["cell"] + "<b>cell</b>\r|x|", kernel_name=record["kernel_name"] + "<i>k</i>")
    # An artifact whose name makes a relative link that a browser would read as a scheme.
    link = run / changed[0]["artifacts"]["dir"] / "javascript:alert(1)"
    link.write_text("text\n")
    changed[0]["artifacts"]["console"] = str(link.relative_to(run))
    save(run, changed)
    return run


@pytest.fixture
def hostile(run: Path) -> Path:
    return make_hostile(run, names_too=True)


@pytest.fixture
def hostile_tests(run: Path) -> Path:
    """Only the test names and details: a diff against the real run pairs the cells."""
    return make_hostile(run, names_too=False)


def test_html_escapes_everything_and_loads_nothing(hostile: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "report.html"
    completed = stapmatrix("report", str(hostile), "--html", str(out))
    assert completed.returncode == 0, completed.stderr
    text, page = page_of(out)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags and "i" not in page.tags
    assert page.tags.count("details") == len({r["cell"] for r in records(hostile)}) + len(records(hostile))
    assert all(href.startswith(("#", "./")) for href in page.hrefs), page.hrefs
    policy = next(m["content"] for m in page.metas if m.get("http-equiv") == "Content-Security-Policy")
    assert policy is not None and "default-src 'none'" in policy and "script-src" not in policy
    assert "\x1b" not in text and "\x00" not in text


def test_html_links_stay_next_to_the_page(hostile: Path, tmp_path: Path) -> None:
    """The page next to the run links its files, `./`-relative and percent-encoded."""
    out = hostile.parent / "report.html"
    completed = stapmatrix("report", str(hostile), "--html", str(out))
    assert completed.returncode == 0, completed.stderr
    _, page = page_of(out)
    files = [href for href in page.hrefs if not href.startswith("#")]
    assert files and all(href.startswith(f"./{RUN}/") for href in files)
    assert any(href.endswith("/javascript%3Aalert%281%29") for href in files)


def rendered_markdown(text: str) -> Page:
    """What GitHub would make of a step summary: CommonMark with tables and raw HTML."""
    html = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)
    page = Page()
    page.feed(html)
    return page


def test_markdown_summary_has_no_markup_from_records(hostile: Path, tmp_path: Path) -> None:
    completed = stapmatrix("report", str(hostile), "--markdown", str(tmp_path / "r.md"))
    assert completed.returncode == 0, completed.stderr
    text = (tmp_path / "r.md").read_text()
    page = rendered_markdown(text)
    assert not {"img", "script", "a", "b", "i"} & set(page.tags), page.tags
    # ours: "## stapmatrix", "### Where the time went", "### Not passed"; a detail's "## heading" is code
    assert [h for h in page.tags if re.fullmatch("h[1-6]", h)] == ["h2", "h3", "h3"]
    non_pass = sum(1 for r in records(hostile) if r["outcome"] != "pass")
    assert page.tags.count("details") == non_pass  # each non-pass folds its detail; no record adds one
    rows = len({r["kernel_name"] for r in records(hostile)})
    cells = len({(r["kernel_name"], r["stap_name"]) for r in records(hostile)})
    assert page.tags.count("tr") == 1 + rows + 1 + cells  # the grid and the times table: no row from a record
    assert "\r" not in text and "\x1b" not in text and "\x00" not in text


def test_diff_markdown_has_no_markup_from_records(hostile_tests: Path, data: Path) -> None:
    completed = stapmatrix("diff", str(data / RUN), str(hostile_tests), "--format", "markdown")
    assert completed.returncode == 0, completed.stderr  # renamed tests: appeared and vanished, no regression
    assert "tests that vanished" in completed.stdout
    page = rendered_markdown(completed.stdout)
    assert not {"img", "script", "a", "b", "i", "details"} & set(page.tags), page.tags
    assert "h1" not in page.tags and page.tags.count("h2") == 1 and page.tags.count("h3") == 2
    assert page.tags.count("tr") == 2 * (1 + 3)  # appeared and vanished: a header and the three tests each


def test_terminal_output_shows_control_characters_escaped(hostile_tests: Path, data: Path) -> None:
    for completed in (stapmatrix("report", str(hostile_tests)), stapmatrix("diff", str(data / RUN), str(hostile_tests))):
        assert completed.returncode == 0, completed.stderr
        output = completed.stdout + completed.stderr
        assert "\x1b" not in output and "\x07" not in output and "\r" not in output
    assert "\\x1b]52;c;cHduZWQ=\\x07" in completed.stdout  # the report's line is cut to the width before it


def test_diff_can_fail_on_vanished_tests_and_cells(hostile_tests: Path, data: Path) -> None:
    completed = stapmatrix("diff", str(data / RUN), str(hostile_tests), "--fail-on-vanished")
    assert completed.returncode == 1
    assert "3 cell(s) or test(s) of" in completed.stderr and "begin_end" in completed.stderr


def test_junit_of_control_characters_is_valid_xml(hostile: Path, tmp_path: Path) -> None:
    completed = stapmatrix("report", str(hostile), "--junit", str(tmp_path / "j.xml"))
    assert completed.returncode == 0, completed.stderr
    cases = ET.parse(tmp_path / "j.xml").getroot().findall(".//testcase")
    assert len(cases) == len(records(hostile))
    assert any("\\x1b]52" in str(case.get("name")) for case in cases)


# --- 3. records checked before use ------------------------------------------------------------

@pytest.mark.parametrize(("change", "said"), [
    (lambda r: r.update(detail={"a": 1}), "record 1 (test 'begin_end'): 'detail' is an object, not a string"),
    (lambda r: r.update(kernel=None), "record 1 (test 'begin_end'): 'kernel' is null, not a string"),
    (lambda r: r.update(test=["a"]), "record 1: 'test' is a list, not a string"),
    (lambda r: r.update(outcome="passed"), "outcome 'passed' is none of"),
    (lambda r: r.update(stages={"run": 3}), "stage 'run' is not"),
    (lambda r: r.update(stages={"run": {"seconds": "1", "cached": False}}), "stage 'run' is not"),
    (lambda r: r.update(artifacts={"console": 5}), "'artifacts' is not an object of paths"),
    (lambda r: r.update(tries=[{"outcome": 1}]), "a try is not"),
    (lambda r: r.pop("outcome"), "has no 'outcome'"),
])
def test_a_record_of_the_wrong_types(run: Path, change: Any, said: str) -> None:
    changed = records(run)
    change(changed[0])
    path = save(run, changed)
    line = one_line_error(stapmatrix("report", str(run)))
    assert f"{path}: " in line and said in line
    assert said in one_line_error(stapmatrix("diff", str(run), str(run)))


def test_a_record_that_is_null(run: Path) -> None:
    changed: list[Any] = records(run)
    changed.insert(2, None)
    path = save(run, changed)
    assert f"{path}: record 3 is null, not an object" in one_line_error(stapmatrix("report", str(run)))


def test_brackets_in_a_path_are_not_markup(tmp_path: Path) -> None:
    """Error messages are plain text: `[/]` in a name once crashed rich's markup parser."""
    odd = tmp_path / "[/]" / "[bold]x[/bold]"
    odd.mkdir(parents=True)
    line = one_line_error(stapmatrix("report", str(odd)))
    assert f"{odd}/results.json: no such results file" in line


def test_brackets_in_a_test_name_are_shown_as_they_are(run: Path) -> None:
    changed = records(run)
    changed[0].update(test="[/][red]x", outcome="fail-load", detail="[/] [bold]y")
    save(run, changed)
    completed = stapmatrix("report", str(run))
    assert completed.returncode == 0, completed.stderr
    assert "[/][red]x" in completed.stdout and "[/] [bold]y" in completed.stdout


@pytest.mark.parametrize("option", ["--html", "--markdown", "--json", "--junit"])
def test_an_output_path_that_is_a_directory(run: Path, tmp_path: Path, option: str) -> None:
    line = one_line_error(stapmatrix("report", str(run), option, str(tmp_path)))
    assert f"{option} {tmp_path} is a directory: give a file name" in line
