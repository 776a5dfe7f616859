"""One cell, end to end: images and kernel tree -> modules -> guest -> one Result per test.

Both front ends call `run_cell`: the pytest plugin (one xdist group per cell) and
`stapmatrix run`. Everything a developer needs after a failure lands in the cell's artifact
directory: compile logs, console and result-channel logs of each boot, each test's output,
and `reproduce.sh`, one command that runs the cell again.

A test that did not pass at run time (fail-load, fail-output, crash, timeout) is tried again
in a fresh boot (`reruns`, default 1). Outcomes that differ between tries make it `flaky`,
with every try in its detail: a result that changes from run to run is reported as such,
never retried until it passes.
"""

from __future__ import annotations

import errno
import logging
import shlex
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests.exceptions

from harness import images
from harness.archive import Archive
from harness.errors import InfraError, MatrixError, StapmatrixError
from harness.guest import TIMEOUT_SCALE, GuestRun, choose_accel, run_guest
from harness.matrix import KernelSpec, Rule, StapSpec
from harness.modules import Compiled, compile_cell
from harness.outcomes import Outcome, Result, Stage, Try
from harness.plan import Cell
from harness.results import apply_known_failure, judge
from harness.scripts import TestScript
from harness.testsuite import run_testsuite

logger = logging.getLogger(__name__)

RERUN_OUTCOMES = frozenset({Outcome.FAIL_LOAD, Outcome.FAIL_OUTPUT, Outcome.CRASH, Outcome.TIMEOUT})
Progress = Callable[[str], None]


def _no_known_failure(kernel: KernelSpec, stap: StapSpec, test: str) -> Rule | None:
    return None


def check_reruns(reruns: int) -> int:
    """`--reruns` of either front end: 0 (no second try) to 10."""
    if not 0 <= reruns <= 10:
        raise MatrixError(f"--reruns {reruns}: give 0 (no second try) to 10")
    return reruns


@dataclass
class CellContext:
    """What a cell needs from the matrix and the command line besides the cell itself."""

    allow_splats: list[str] = field(default_factory=list)
    known_failure: Callable[[KernelSpec, StapSpec, str], Rule | None] = _no_known_failure
    reruns: int = 1


def reproduce_command(cell: Cell) -> str:
    command = ["./sm", "run", "--kernel", cell.kernel.spec.spec, "--stap", cell.stap.spec.spec]
    for item in cell.kernel.spec.config:
        command += ["--kernel-config", item.partition(":")[2]]
    for exp in cell.testsuite:
        command += ["--testsuite", exp]
    for script in cell.tests:
        command += [str(script.path)]
    return shlex.join(command)


class CellRun:
    """The records of one cell: the fields every Result of the cell shares."""

    def __init__(self, cell: Cell, cell_dir: Path) -> None:
        self.cell = cell
        self.stages: dict[str, Stage] = {}
        self.artifacts = {"dir": str(cell_dir), "reproduce": str(cell_dir / "reproduce.sh")}
        self.release = cell.kernel.release
        self.accel = ""
        self.image = ""
        self.guest_build_id = ""

    def result(self, test: str, outcome: Outcome, detail: str, stages: dict[str, Stage] | None = None,
               artifacts: dict[str, str] | None = None, **extra: object) -> Result:
        cell = self.cell
        return Result(
            kernel=cell.kernel.spec.spec, stap=cell.stap.spec.spec, test=test, outcome=outcome, detail=detail,
            stages=dict(stages if stages is not None else self.stages),
            artifacts=dict(artifacts if artifacts is not None else self.artifacts), accel=self.accel,
            reproduce=reproduce_command(cell), cell=cell.id, kernel_name=cell.kernel.spec.display_name,
            stap_name=cell.stap.spec.display_name, kernel_identity=cell.kernel.identity,
            stap_identity=cell.stap.identity, kernel_release=self.release, kernel_origin=cell.kernel.origin,
            image=self.image, guest_build_id=self.guest_build_id, **extra,  # type: ignore[arg-type]
        )

    def errors(self, detail: str) -> list[Result]:
        names = [t.name for t in self.cell.tests] + [f"testsuite:{exp}" for exp in self.cell.testsuite]
        return [self.result(name, Outcome.ERROR, detail) for name in names]


def run_cell(cell: Cell, context: CellContext, cell_dir: Path, progress: Progress,
             archive: Archive | None = None) -> list[Result]:
    """Every test of the cell as a Result. Nothing escapes: an infrastructure failure makes
    the cell's tests `error` with the reason, and so does an unexpected exception (its
    traceback goes to CELL/traceback.log), so the other cells go on."""
    run = CellRun(cell, cell_dir)
    try:
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "reproduce.sh").write_text("#!/bin/sh\n# Runs this cell again from the repository root.\n"
                                               + reproduce_command(cell) + "\n")
        return _run(cell, context, cell_dir, progress, archive or Archive(), run)
    except StapmatrixError as error:
        return run.errors(str(error))
    except requests.exceptions.RequestException as error:  # any Docker call the steps do not wrap themselves
        return run.errors(f"lost the connection to Docker ({error.__class__.__name__}: {error}); is the daemon "
                          "running? `docker info` says")
    except OSError as error:
        if error.errno in MACHINE_ERRNOS:  # the machine's fault, not a bug: no traceback needed
            return run.errors(f"{error.strerror}: {error.filename or cell_dir} (free space or fix the disk, then "
                              "run again)")
        return run.errors(_internal_error(cell, cell_dir, error))
    except Exception as error:  # noqa: BLE001 - a bug must cost one cell, not the run
        return run.errors(_internal_error(cell, cell_dir, error))


# A full or read-only disk, an I/O error, no memory: the machine's state, which a run cannot fix.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM})


def _internal_error(cell: Cell, cell_dir: Path, error: Exception) -> str:
    """The one-line reason of a bug, its traceback kept in CELL/traceback.log when it can be written."""
    log = cell_dir / "traceback.log"
    try:
        log.write_text(traceback.format_exc())
        where = f"traceback: {log}"
    except OSError as write_error:
        where = f"the traceback could not be written to {log} ({write_error.strerror})"
    logger.error("%s: internal error %s: %s (%s)", cell.id, type(error).__name__, error, where)
    return f"internal error in stapmatrix: {type(error).__name__}: {error}; {where}"


def _run(cell: Cell, context: CellContext, cell_dir: Path, progress: Progress, archive: Archive,
         run: CellRun) -> list[Result]:
    built: list[str] = []

    def image_progress(message: str) -> None:
        if message.startswith(("building ", "kernel ")):
            built.append(message)
        progress(message)

    started = time.monotonic()
    try:
        cell_images = images.CellImages(cell, archive, image_progress)
    except InfraError as error:
        run.stages["images"] = Stage(time.monotonic() - started, False)
        return run.errors(f"image build failed: {error}")
    run.stages["images"] = Stage(time.monotonic() - started, not built)
    run.release = cell_images.kernel.release
    run.image = cell_images.cell

    progress(f"{cell.id}: compiling {len(cell.tests)} script(s)")
    started = time.monotonic()
    guest_dir = cell_dir / "guest"
    try:
        compiled = compile_cell(cell_images.cell, cell.tests, cell_images.kernel, guest_dir,
                                cell_images.stap_key, progress)
    except InfraError as error:
        run.stages["compile"] = Stage(time.monotonic() - started, False)
        return run.errors(f"compiling failed: {error}")
    run.stages["compile"] = Stage(time.monotonic() - started, all(c.cached for c in compiled.values()))

    # The guest boots even when nothing compiled: that proves the kernel boots and gives the
    # build-id the image check compares with the debuginfo.
    runnable = [t.name for t in cell.tests if compiled[t.name].ok]
    started = time.monotonic()
    try:
        accel, why = choose_accel(cell_images.runner, guest_dir)
        run.accel = accel
        progress(f"{cell.id}: booting {run.release} under {accel.upper()} ({why})")
        timeouts = {t.name: t.timeout_s * TIMEOUT_SCALE[accel] for t in cell.tests}
        guest = run_guest(cell_images.runner, guest_dir, runnable, timeouts, accel)
        tries = {t.name: [_judge(t, compiled[t.name], guest, context, guest_dir, 1)] for t in cell.tests}
        guest_boots = guest.boots
        for attempt in range(2, context.reruns + 2):
            again = [name for name in runnable if tries[name][-1][0] in RERUN_OUTCOMES]
            if not again:
                break
            progress(f"{cell.id}: trying {', '.join(again)} again in a fresh boot (try {attempt})")
            retry = run_guest(cell_images.runner, guest_dir, runnable, timeouts, accel, selected=again,
                              first_boot=guest_boots + 1)
            guest_boots += retry.boots
            for test in cell.tests:
                if test.name in again:
                    tries[test.name].append(_judge(test, compiled[test.name], retry, context, guest_dir, attempt))
    except InfraError as error:
        run.stages["run"] = Stage(time.monotonic() - started, False)
        return run.errors(f"running the guest failed: {error}")
    run.stages["run"] = Stage(time.monotonic() - started, False)
    if guest.build_id:
        run.guest_build_id = guest.build_id

    results = []
    if cell.testsuite:
        results += _testsuite_results(cell, cell_images, guest_dir, run, progress)
    for script in cell.tests:
        results.append(_final(script, compiled[script.name], tries[script.name], context, run, guest_dir))
    return results


Verdict = tuple[Outcome, str, dict[str, str]]


def _judge(script: TestScript, compiled: Compiled, guest: GuestRun, context: CellContext, guest_dir: Path,
           attempt: int) -> Verdict:
    """One try's outcome, reason and output files (tests/NAME/ for the first try, tests/NAME/try-N/ after)."""
    outcome, detail = judge(script, compiled, guest, context.allow_splats)
    files: dict[str, str] = {}
    if script.name in guest.runs:
        test_run = guest.runs[script.name]
        directory = guest_dir / "tests" / script.name / ("" if attempt == 1 else f"try-{attempt}")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "stdout").write_text(test_run.stdout)
        (directory / "stderr").write_text(test_run.stderr)
        files = {"stdout": str(directory / "stdout"), "stderr": str(directory / "stderr"),
                 "console": str(guest_dir / f"console-{test_run.boot}.log")}
    return outcome, detail, files


def _final(script: TestScript, compiled: Compiled, tries: list[Verdict], context: CellContext, run: CellRun,
           guest_dir: Path) -> Result:
    """The test's record: one outcome from its tries, then the matrix's known failures."""
    outcome, detail, files = tries[0]
    if len({t[0] for t in tries}) > 1:
        outcome = Outcome.FLAKY
        detail = "different outcomes in fresh boots: " + "; ".join(
            f"try {n}: {o.value}" + (f" ({d.splitlines()[0]})" if d else "") for n, (o, d, _) in enumerate(tries, 1))
    rule = context.known_failure(run.cell.kernel.spec, run.cell.stap.spec, script.name)
    if outcome is not Outcome.FLAKY:
        outcome, detail, actual = apply_known_failure(outcome, detail, rule)
    else:
        actual = ""
    artifacts = dict(run.artifacts, compile_log=str(compiled.log_path), **files)
    stages = {"images": run.stages["images"], "compile": Stage(compiled.seconds, compiled.cached),
              "run": run.stages["run"]}
    recorded = [Try(o.value, d) for o, d, _ in tries] if len(tries) > 1 else []
    return run.result(script.name, outcome, detail, stages, artifacts, xfail_reason=rule.reason if rule else "",
                      actual=actual, tries=recorded)


DEJAGNU_OUTCOME = {"pass": Outcome.PASS, "fail": Outcome.FAIL_OUTPUT, "xfail": Outcome.XFAIL, "skip": Outcome.SKIP}


def _testsuite_results(cell: Cell, cell_images: images.CellImages, guest_dir: Path, run: CellRun,
                       progress: Progress) -> list[Result]:
    """One Result per DejaGnu line, test = `testsuite:EXP:NAME`; an infrastructure failure
    is one `error` record per requested .exp file."""
    started = time.monotonic()
    try:
        lines, testsuite_artifacts = run_testsuite(
            cell_images.cell, cell_images.runner, cell_images.kernel, cell.testsuite, guest_dir, run.accel,
            cell_images.stap_key, progress)
    except InfraError as error:
        return [run.result(f"testsuite:{exp}", Outcome.ERROR, str(error)) for exp in cell.testsuite]
    stage = {"images": run.stages["images"], "testsuite": Stage(time.monotonic() - started, False)}
    return [
        run.result(f"testsuite:{line.exp}:{line.name}", DEJAGNU_OUTCOME[line.pytest_outcome],
                   f"DejaGnu {line.status}: {line.name}", stage, dict(run.artifacts, **testsuite_artifacts))
        for line in lines
    ]
