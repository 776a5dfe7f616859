"""What a run is doing, while it does it: typed progress events.

Every long step reports through a `Progress` callback that takes an `Event`: a record with
its own fields (an image built and how long it took, a package downloaded so far, a kernel
ready in the store, a script compiled or taken from the cache). Code that needs to know what
happened (was any image built? how many?) looks at the events' types and fields, never at
their text; the text is for people.

Every process of a run (the pytest controller, each xdist worker, `stapmatrix run`) appends
its events to RUN/progress.log, one timestamped line each, and to RUN/events.jsonl, one JSON
object each (`{"time", "worker", "event": CLASS, ...fields}`). A first run of the default
matrix takes tens of minutes; nobody should have to guess what it is doing.

The pytest controller relays progress.log to its terminal (xdist workers cannot write there):
every event as a plain timestamped line, and every STATUS_EVERY_S a status line saying what
each worker is on and how many cells are left. `stapmatrix run` shows the same events, with a
live spinner naming the current step when its output is a terminal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

STATUS_EVERY_S = 30.0
POLL_S = 1.0


class Event(ABC):
    """One thing a run did or is doing. Subclasses are frozen dataclasses."""

    @abstractmethod
    def text(self) -> str:
        """The event for people: one line."""

    def fields(self) -> dict[str, object]:
        return asdict(self)  # type: ignore[call-overload,no-any-return]


Progress = Callable[[Event], None]


@dataclass(frozen=True)
class Step(Event):
    """A step that needs no fields of its own: "booting 6.12... under TCG"."""

    message: str

    def text(self) -> str:
        return self.message


@dataclass(frozen=True)
class ImageBuildStarted(Event):
    tag: str
    log: str

    def text(self) -> str:
        return f"building {self.tag} (log: {self.log})"


@dataclass(frozen=True)
class ImageBuildStep(Event):
    tag: str
    step: str  # Docker's "Step N/M : ..." line

    def text(self) -> str:
        return f"{self.tag}: {self.step}"


@dataclass(frozen=True)
class ImageBuildFailed(Event):
    tag: str
    attempt: int
    error: str

    def text(self) -> str:
        return f"{self.tag}: build attempt {self.attempt} failed: {self.error}"


@dataclass(frozen=True)
class ImageBuilt(Event):
    tag: str
    seconds: float

    def text(self) -> str:
        return f"built {self.tag} in {self.seconds:.0f} s"


@dataclass(frozen=True)
class ImagePulled(Event):
    """An image taken from the registry (harness/registry.py) instead of built."""

    tag: str
    remote: str
    seconds: float

    def text(self) -> str:
        return f"pulled {self.tag} from {self.remote} in {self.seconds:.0f} s"


@dataclass(frozen=True)
class ImagePullFailed(Event):
    """Not in the registry, or the registry could not be read: the image is built here."""

    tag: str
    remote: str
    reason: str

    def text(self) -> str:
        return f"{self.tag}: not pulled from {self.remote} ({self.reason}): building it"


@dataclass(frozen=True)
class ImagePullRefused(Event):
    """The registry's image is not what its tag says: removed again, and built here."""

    tag: str
    remote: str
    reason: str

    def text(self) -> str:
        return f"{self.tag}: refused the image pulled from {self.remote}: {self.reason}; building it"


@dataclass(frozen=True)
class ImagePushed(Event):
    tag: str
    remote: str
    seconds: float

    def text(self) -> str:
        return f"pushed {self.tag} to {self.remote} in {self.seconds:.0f} s"


@dataclass(frozen=True)
class ImagePushFailed(Event):
    tag: str
    remote: str
    reason: str

    def text(self) -> str:
        return f"{self.tag}: not pushed to {self.remote} ({self.reason}); the run goes on"


@dataclass(frozen=True)
class Download(Event):
    """A download under way (every few seconds) or done (`finished`)."""

    name: str
    done_bytes: int
    total_bytes: int
    seconds: float
    finished: bool = False

    def text(self) -> str:
        mib = 1024 * 1024
        rate = self.done_bytes / mib / max(self.seconds, 0.1)
        if self.finished:
            return f"downloaded {self.name}: {self.done_bytes // mib} MiB in {self.seconds:.0f} s ({rate:.0f} MiB/s)"
        return (f"downloading {self.name}: {self.done_bytes // mib} of {self.total_bytes // mib} MiB "
                f"({rate:.0f} MiB/s)")


@dataclass(frozen=True)
class KernelBuildProgress(Event):
    what: str
    files: int
    expected: int  # files an earlier build of the same directory compiled, 0 when unknown
    seconds: float
    last: str

    def text(self) -> str:
        of = f" of about {self.expected}" if self.expected > self.files else ""
        rate = self.files / max(self.seconds, 1)
        return f"{self.what}: {self.files}{of} files built in {self.seconds:.0f} s ({rate:.1f}/s), last {self.last}"


@dataclass(frozen=True)
class KernelBuilt(Event):
    what: str
    seconds: float
    files: int
    incremental: bool = False  # on top of an earlier build in the same build directory

    def text(self) -> str:
        how = ", incremental" if self.incremental else ""
        return f"built {self.what} in {self.seconds:.0f} s ({self.files} files compiled{how})"


@dataclass(frozen=True)
class StapSourceBuildStarted(Event):
    """A systemtap source build (git: or path:) starts in its kept build directory."""

    what: str
    log: str
    incremental: bool  # an earlier build of the same directory is there to build on

    def text(self) -> str:
        how = "incrementally, on the kept build directory" if self.incremental else "from scratch"
        return f"building {self.what} {how} (log: {self.log})"


@dataclass(frozen=True)
class StapSourceBuilt(Event):
    what: str
    seconds: float
    incremental: bool
    configured: bool  # configure ran (its inputs changed, or the directory was new)
    changed_files: int  # source files that differed from what the build directory held

    def text(self) -> str:
        how = "incremental" if self.incremental else "cold"
        again = ", configure run" if self.configured else ""
        return f"built {self.what} in {self.seconds:.0f} s ({how}, {self.changed_files} file(s) changed{again})"


@dataclass(frozen=True)
class KernelReady(Event):
    """A kernel was extracted, built or packaged into the store just now."""

    release: str
    what: str
    seconds: float

    def text(self) -> str:
        return f"kernel {self.release} ready in the store ({self.what}) after {self.seconds:.0f} s"


@dataclass(frozen=True)
class ScriptCompiled(Event):
    release: str
    test: str
    verdict: str  # ok, fail-pass2, fail-pass4, ...
    seconds: float
    cached: bool

    def text(self) -> str:
        return f"{self.release}: {self.test}: {self.verdict} ({'cached' if self.cached else f'{self.seconds:.0f} s'})"


@dataclass(frozen=True)
class CellStarted(Event):
    cell: str
    tests: int

    def text(self) -> str:
        return f"{self.cell}: starting ({self.tests} test(s))"


@dataclass(frozen=True)
class CellFinished(Event):
    cell: str
    counts: str  # "3 pass, 1 fail-load"

    def text(self) -> str:
        return f"{self.cell}: done: {self.counts}"


@dataclass(frozen=True)
class BisectStep(Event):
    """One step of `stapmatrix bisect`: a commit about to be tested (`outcome` empty) or judged."""

    step: int
    steps_estimate: int  # steps git bisect expects in all (its "roughly N steps" plus those done)
    commit: str
    outcome: str = ""  # the test's outcome, "skip" (does not build) or "" (starting)
    seconds: float = 0.0

    def text(self) -> str:
        where = f"bisect step {self.step} of ~{max(self.step, self.steps_estimate)}: {self.commit[:12]}"
        if not self.outcome:
            return f"{where}: building and testing"
        return f"{where}: {self.outcome} ({self.seconds:.0f} s)"


@dataclass(frozen=True)
class BisectDone(Event):
    first_changed: str  # the commit, or "" when skipped commits leave several candidates
    candidates: int  # commits that could be the first changed one (1 when found)
    steps: int
    builds: int
    seconds: float

    def text(self) -> str:
        found = f"first changed commit {self.first_changed[:12]}" if self.first_changed else \
            f"the first changed commit is one of {self.candidates}"
        return f"bisect done: {found} after {self.steps} step(s), {self.builds} build(s), {self.seconds:.0f} s"


def worker_name() -> str:
    """gw0, gw1, ... in an xdist worker; "main" elsewhere."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def discard(event: Event) -> None:
    """A Progress that drops every event (a caller with nobody to tell)."""


class ProgressLog:
    """A Progress that appends to RUN/progress.log and RUN/events.jsonl (and calls `echo`
    with the event's text, if given)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.events_path = path.with_name("events.jsonl")
        self.echo = echo
        self.worker = worker_name()

    def __call__(self, event: Event) -> None:
        text = event.text()
        line = f"{time.strftime('%H:%M:%S')} {self.worker} {text}"
        record = {"time": time.time(), "worker": self.worker, "event": type(event).__name__, **event.fields()}
        # One write per line with O_APPEND: lines of concurrent workers do not interleave.
        with self.path.open("a") as stream:
            stream.write(line.replace("\n", " | ") + "\n")
        with self.events_path.open("a") as stream:
            stream.write(json.dumps(record, default=str) + "\n")
        if self.echo:
            self.echo(text)


def read_events(path: Path) -> Iterator[dict[str, object]]:
    """The records of a run's events.jsonl (a run directory or the file), oldest first."""
    if path.is_dir():
        path = path / "events.jsonl"
    with path.open() as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


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
