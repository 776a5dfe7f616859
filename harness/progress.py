"""What a run is doing, while it does it.

Every process of a run (the pytest controller, each xdist worker, `stapmatrix run`) appends
its progress events to RUN/progress.log, one timestamped line each: image builds (with
download sizes and rates), kernel builds (files compiled, rate), compiles, boots. A first run
of the default matrix takes tens of minutes; nobody should have to guess what it is doing.

The pytest controller relays that file to its terminal (xdist workers cannot write there):
every event as a plain timestamped line, and every STATUS_EVERY_S a status line saying what
each worker is on and how many cells are left. `stapmatrix run` shows the same events, with a
live spinner naming the current step when its output is a terminal.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

STATUS_EVERY_S = 30.0
POLL_S = 1.0


def worker_name() -> str:
    """gw0, gw1, ... in an xdist worker; "main" elsewhere."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class ProgressLog:
    """A progress callback that appends to RUN/progress.log (and calls `echo`, if given)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.echo = echo
        self.worker = worker_name()

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {self.worker} {message}"
        # One write per line with O_APPEND: lines of concurrent workers do not interleave.
        with self.path.open("a") as stream:
            stream.write(line.replace("\n", " | ") + "\n")
        if self.echo:
            self.echo(message)


class Relay:
    """Follows RUN/progress.log in a thread and hands each new line, and a periodic status,
    to `write` (the pytest controller's terminal)."""

    def __init__(self, path: Path, write: Callable[[str], None], cells_total: int, cells_done: Callable[[], int]):
        self.path = path
        self.write = write
        self.cells_total = cells_total
        self.cells_done = cells_done
        self.current: dict[str, str] = {}
        self.offset = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stapmatrix-progress", daemon=True)
        self.last_status = time.monotonic()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self._read()

    def _read(self) -> None:
        try:
            with self.path.open() as stream:
                stream.seek(self.offset)
                text = stream.read()
        except FileNotFoundError:
            return
        complete, _, _ = text.rpartition("\n")
        if not complete:
            return
        self.offset += len(complete.encode()) + 1
        for line in complete.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                self.current[parts[1]] = parts[2]
            self.write(line)

    def status(self) -> str:
        doing = "; ".join(f"{worker}: {what[:80]}" for worker, what in sorted(self.current.items()))
        done = self.cells_done()
        return (f"{time.strftime('%H:%M:%S')} status: {done} of {self.cells_total} cell(s) done, "
                f"{self.cells_total - done} left" + (f"; {doing}" if doing else ""))

    def _run(self) -> None:
        while not self.stopped.wait(POLL_S):
            self._read()
            if time.monotonic() - self.last_status >= STATUS_EVERY_S:
                self.last_status = time.monotonic()
                self.write(self.status())
