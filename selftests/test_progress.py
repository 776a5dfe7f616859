"""Live progress: workers append to RUN/progress.log, the controller relays each line and a
periodic status (real files, a real thread)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness import progress


def test_relay_passes_every_line_and_a_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "STATUS_EVERY_S", 0.3)
    monkeypatch.setattr(progress, "POLL_S", 0.05)
    log = tmp_path / "progress.log"
    shown: list[str] = []
    relay = progress.Relay(log, shown.append, cells_total=3, cells_done=lambda: 1)
    relay.start()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    worker = progress.ProgressLog(log)
    worker(progress.ImageBuildStarted("stapmatrix/base:trixie-abc", "/log"))
    worker(progress.Step("kernel 7.3-amd64: downloading 8 packages, 1258 MiB\nsecond line"))
    time.sleep(0.6)
    relay.stop()
    lines = [line for line in shown if " status: " not in line]
    assert [line.split(" ", 2)[1:] for line in lines] == [
        ["gw1", "building stapmatrix/base:trixie-abc (log: /log)"],
        ["gw1", "kernel 7.3-amd64: downloading 8 packages, 1258 MiB | second line"]]
    status = [line for line in shown if " status: " in line]
    assert status and "1 of 3 cell(s) done, 2 left" in status[-1] and "gw1: kernel 7.3-amd64" in status[-1]


def test_a_half_written_line_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "progress.log"
    shown: list[str] = []
    relay = progress.Relay(log, shown.append, cells_total=1, cells_done=lambda: 0)
    log.write_text("10:00:00 gw0 complete\n10:00:01 gw0 half")
    relay._read()
    assert shown == ["10:00:00 gw0 complete"]
    with log.open("a") as stream:
        stream.write(" done\n")
    relay._read()
    assert shown[-1] == "10:00:01 gw0 half done"


def test_events_are_records_with_their_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code asks the events what happened (how many images were built), never their text."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    log = progress.ProgressLog(tmp_path / "progress.log")
    log(progress.ImageBuilt("stapmatrix/stap:abc", 12.5))
    log(progress.Download("linux-image-7.3-amd64-dbg", 3 * 1024 * 1024, 10 * 1024 * 1024, 1.5))
    log(progress.KernelReady("7.3-amd64", "Debian kernel 7.3-amd64 7.3~rc7-1~exp1", 80.0))
    records = list(progress.read_events(tmp_path))
    assert [r["event"] for r in records] == ["ImageBuilt", "Download", "KernelReady"]
    assert records[0]["tag"] == "stapmatrix/stap:abc" and records[0]["seconds"] == 12.5
    assert records[1]["done_bytes"] == 3 * 1024 * 1024 and records[1]["worker"] == "gw0"
    assert (tmp_path / "progress.log").read_text().splitlines()[1].endswith(
        "downloading linux-image-7.3-amd64-dbg: 3 of 10 MiB (2 MiB/s)")
