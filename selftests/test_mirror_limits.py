"""Bounded network reads (issue 18, item 4), against a real HTTP server on the loopback: a
mirror that streams bytes without end, one that sends a byte a second, one that announces
more than it may send. `check` must stop each with one line naming the mirror (exit 2), and
a package download must stop at the size its signed index lists. The server answers only
this test; the cache is the test's own, so nothing of the real mirror's is read or kept.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import archive, settings
from harness.errors import InfraError

ROOT = Path(__file__).resolve().parent.parent


class Mirror(http.server.BaseHTTPRequestHandler):
    """/endless/...: zeros until the client goes; /slow/...: one byte a second of a promised
    kilobyte; /huge/...: a Content-Length of 100 GiB."""

    def do_GET(self) -> None:
        kind = self.path.split("/")[1]
        self.send_response(200)
        if kind == "huge":
            self.send_header("Content-Length", str(100 * 1024**3))
        elif kind == "slow":
            self.send_header("Content-Length", "1024")
        self.end_headers()
        try:
            if kind == "endless":
                while True:
                    self.wfile.write(bytes(65536))
            elif kind == "slow":
                for _ in range(1024):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def check_with_mirror(url: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "t.stp").write_text("probe begin { exit() }\n")
    matrix = tmp_path / "m.yaml"
    matrix.write_text("kernels: [6.12.118+deb13-amd64]\nstap: ['deb:5.6-1']\ntests: [t.stp]\n")
    env = dict(os.environ, STAPMATRIX_MIRROR=url, STAPMATRIX_SECURITY_MIRROR=url, STAPMATRIX_DOWNLOAD_GRACE="3",
               STAPMATRIX_CACHE=str(tmp_path / "cache"))
    env.pop("STAPMATRIX_OFFLINE", None)
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "harness.cli", "check", "--matrix", str(matrix)], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=300, check=False)
    return completed, time.monotonic() - started


def one_line(completed: subprocess.CompletedProcess[str]) -> str:
    """The error: exit 2, one line (the lines before it are the progress log's)."""
    assert completed.returncode == 2, completed.stdout + completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.startswith("stapmatrix:")]
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert completed.stderr.rstrip().endswith(lines[0]), completed.stderr
    return lines[0]


def test_a_mirror_that_never_stops_sending(mirror: str, tmp_path: Path) -> None:
    completed, seconds = check_with_mirror(f"{mirror}/endless", tmp_path)
    line = one_line(completed)
    assert f"{mirror}/endless/dists/bookworm/InRelease: the mirror sent more than the 16.0 MiB" in line
    print(f"stopped after {seconds:.1f} s")


def test_a_mirror_that_sends_a_byte_a_second(mirror: str, tmp_path: Path) -> None:
    """Each read gets its byte well within any socket timeout: only the overall deadline
    (STAPMATRIX_DOWNLOAD_GRACE=3 here, plus the time the size allows) stops it."""
    completed, seconds = check_with_mirror(f"{mirror}/slow", tmp_path)
    line = one_line(completed)
    assert f"{mirror}/slow/dists/bookworm/InRelease: the mirror sent " in line and "and is not done" in line
    assert "STAPMATRIX_DOWNLOAD_GRACE" in line
    assert seconds < 3 + 4 + 30  # the deadline (grace, 1 MiB at 256 KiB/s), plus start-up
    print(f"stopped after {seconds:.1f} s")


def test_a_mirror_that_announces_too_much(mirror: str, tmp_path: Path) -> None:
    completed, _ = check_with_mirror(f"{mirror}/huge", tmp_path)
    assert "announces 100.0 GiB, more than the 16.0 MiB an InRelease file may be" in one_line(completed)


@pytest.fixture
def package_from(monkeypatch: pytest.MonkeyPatch, mirror: str) -> Iterator[str]:
    monkeypatch.setenv("STAPMATRIX_DOWNLOAD_GRACE", "2")
    yield mirror
    settings.reset_mirrors()


@pytest.mark.parametrize(("kind", "said"), [
    ("endless", "the mirror sent more than the 100.0 KiB linux-image-x-dbg=1 (its signed index lists the size)"),
    ("huge", "announces 100.0 GiB, more than the 100.0 KiB"),
    ("slow", "and is not done (a stalled or very slow mirror)"),
])
def test_a_package_download_stops_at_its_listed_size(package_from: str, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, kind: str, said: str) -> None:
    monkeypatch.setenv("STAPMATRIX_MIRROR", f"{package_from}/{kind}")
    settings.reset_mirrors()
    package = archive.Package("linux-image-x-dbg", "1", "bookworm", size=100 * 1024,
                              filename="pool/main/l/linux/x.deb", sha256="0" * 64)
    started = time.monotonic()
    with pytest.raises(InfraError, match=re.escape(said)):
        archive.download(package, tmp_path, lambda event: None)
    assert not (tmp_path / "x.deb").exists()
    assert time.monotonic() - started < 2 + 1 + 60  # grace, 100 KiB at 256 KiB/s, one stall at most
