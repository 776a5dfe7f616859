"""The HTML report of a real run (selftests/data/run-6.12-deb5.6-deb5.1) in a real browser:
Chromium (Debian's package, or the build GitHub's Ubuntu runners have at /usr/bin/chromium),
headless, with no network features. The DOM Chromium built is the
assertion: the grid and a failing test's reason must be on the page. The screenshot is kept
under pytest's tmp directory (its path is printed) for a human to look at."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.outcomes import read_results
from harness.report.html import write_run_reports

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Texts(HTMLParser):
    """The text inside the grid table and inside each `reason` element of a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.grid: list[str] = []
        self.reasons: list[str] = []
        self._grid_depth = 0  # > 0 while inside <table id="grid">
        self._reason_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if self._grid_depth or (tag == "table" and values.get("id") == "grid"):
            self._grid_depth += tag == "table"
        if self._reason_depth or "reason" in (values.get("class") or "").split():
            self._reason_depth += 1
            if self._reason_depth == 1:
                self.reasons.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._grid_depth and tag == "table":
            self._grid_depth -= 1
        if self._reason_depth:
            self._reason_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._grid_depth:
            self.grid.append(data.strip())
        if self._reason_depth:
            self.reasons[-1] += data


def find_browser() -> str | None:
    """A Chromium that starts. Ubuntu's chromium-browser package is a stub asking for the
    snap (which containers and CI runners lack): it is on PATH but does not answer --version."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is None:
            continue
        try:
            if subprocess.run([path, "--version"], capture_output=True, timeout=60, check=False).returncode == 0:
                return path
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


BROWSER = find_browser()


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = BROWSER
    assert browser is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.skipif(BROWSER is None,
                    reason="no Chromium that starts: ./sm setup installs Debian's chromium package; Ubuntu has "
                           "only a stub for the snap (install Chromium or Google Chrome another way)")
def test_html_report_in_headless_chromium(tmp_path: Path, data: Path) -> None:
    write_run_reports(tmp_path, read_results(data / "run-6.12-deb5.6-deb5.1"))
    url = (tmp_path / "report.html").as_uri()
    screenshot = tmp_path / "report.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1400,1000", url)
    print(f"screenshot of the report: {screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page = Texts()
    page.feed(chromium("--dump-dom", url).stdout)
    grid = [text for text in page.grid if text]
    assert grid[:3] == ["kernel \\ systemtap", "deb:5.1-5", "deb:5.6-1"]
    assert grid[3:6] == ["6.12.117+deb13-amd64", "0/0/3/0", "419 s"] and "3/0/0/0" in grid
    assert "staprun exited 1: ERROR: Can't resolve uprobe_unregister!" in page.reasons


def _browser_test_without_a_browser(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """This file's browser test in a pytest of its own, with CI=true and a PATH on which no
    Chromium is found."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k != "STAPMATRIX_EXPECTED_SKIPS"}
    environment.update(PATH=str(empty), CI="true", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                           f"{__file__}::test_html_report_in_headless_chromium"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_skip_in_ci_fails_unless_expected(tmp_path: Path) -> None:
    """A runner without Chromium must not pass CI by skipping the only browser test."""
    failed = _browser_test_without_a_browser(tmp_path)
    assert failed.returncode == 1 and "1 error" in failed.stdout, failed.stdout  # skipif skips at setup
    assert "skipped in CI (no Chromium that starts" in failed.stdout
    assert 'STAPMATRIX_EXPECTED_SKIPS="test_html_report_in_headless_chromium=why"' in failed.stdout
    expected = _browser_test_without_a_browser(
        tmp_path, STAPMATRIX_EXPECTED_SKIPS="test_html_report_in_headless_chromium=this runner has no Chromium")
    assert expected.returncode == 0 and "1 skipped" in expected.stdout, expected.stdout
    unexplained = _browser_test_without_a_browser(tmp_path, STAPMATRIX_EXPECTED_SKIPS="test_html_report_in_headless_chromium")
    assert unexplained.returncode == 4 and "is not TEST=why" in unexplained.stderr, unexplained.stderr
