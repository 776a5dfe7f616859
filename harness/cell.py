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
import os
import re
import shlex
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests.exceptions

from harness import bases, images, kernels, resources
from harness.archive import Archive
from harness.errors import InfraError, MatrixError, StapmatrixError
from harness.example_run import ExampleCell, run_examples
from harness.examples import target_programs
from harness.guest import TIMEOUT_SCALE, GuestRun, choose_accel, run_guest
from harness.judge import apply_known_failure, judge
from harness.kernel_store import KernelTree
from harness.modules import Compiled, compile_cell, lazy_container, pack_guest
from harness.outcomes import Outcome, Result, Stage, Try, over_tries
from harness.plan import Cell
from harness.progress import Event, ImageBuilt, KernelReady, Progress, Step
from harness.scripts import TestScript
from harness.specs import KernelSpec, Rule, StapSpec
from harness.suites import provided_compilers
from harness.testsuite import FileRun, file_verdicts, run_testsuite

logger = logging.getLogger(__name__)
T = TypeVar("T")

RERUN_OUTCOMES = frozenset({Outcome.FAIL_LOAD, Outcome.FAIL_OUTPUT, Outcome.CRASH, Outcome.TIMEOUT})


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
    for test_set in cell.test_sets:
        if test_set.path:
            command += ["--testsuite-path", test_set.path]
        command += ["--testsuite", test_set.selector]
        command += [f"--testsuite-include={pattern}" for pattern in test_set.include]
        command += [f"--testsuite-exclude={pattern}" for pattern in test_set.exclude]
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

    def errors(self, detail: str, names: list[str] | None = None) -> list[Result]:
        """`error` records for `names` (default: every test of the cell)."""
        if names is None:
            names = ([t.name for t in self.cell.tests] + [t.name for t in self.cell.examples]
                     + [f"testsuite:{f.path}" for f in self.cell.dejagnu])
        return [self.result(name, Outcome.ERROR, detail) for name in names]


class _Watched:
    """A Progress that passes every event on and remembers whether anything was made."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.made: list[Event] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, (ImageBuilt, KernelReady)):
            self.made.append(event)
        self.progress(event)


class _KernelImages:
    """The images a kernel is made in (harness/kernel_build.py KernelImages), built on first use."""

    def __init__(self, base_suite: str, progress: Progress) -> None:
        self.base_suite = base_suite
        self.progress = progress

    def base(self) -> str:
        return images.base_image(self.base_suite, self.progress)

    def kernel_build(self) -> str:
        return images.kernel_build_image(self.progress)


class CellImages:
    """Every image one cell needs, and its kernel tree, found or made in dependency order,
    with the seconds and cache state of each stage: `images` (base, systemtap, cell and
    runner images) and `kernel` (the kernel tree in the store)."""

    def __init__(self, cell: Cell, archive: Archive, progress: Progress) -> None:
        self.stages: dict[str, Stage] = {}
        self._progress = progress
        self.base = self._stage("images", lambda p: images.base_image(cell.base_suite, p))
        self.kernel: KernelTree = self._stage(
            "kernel", lambda p: kernels.materialize(cell.kernel, archive, _KernelImages(cell.base_suite, p), p))
        self.stap = self._stage("images", lambda p: images.stap_image(cell.base_suite, cell.stap, p))
        self.stap_key = images.content_key(self.stap)  # what the compile and initramfs caches are keyed by
        compilers, _ = bases.compiler_packages(archive, self.kernel.cc, self.kernel.cc_version, cell.base_suite)
        if set(compilers) <= provided_compilers(cell.base_suite):
            self.cell = self.stap
        else:
            self.cell = self._stage("images", lambda p: images.cell_image(self.stap, compilers, self.kernel.cc, p))
        self.runner = self._stage("images", images.runner_image)

    def _stage(self, stage: str, make: Callable[[Progress], T]) -> T:
        """Run one step of `stage`, adding its seconds; the stage is cached when none of its
        steps made anything."""
        watched = _Watched(self._progress)
        started = time.monotonic()
        result = make(watched)
        earlier = self.stages.get(stage, Stage(0.0, True))
        self.stages[stage] = Stage(earlier.seconds + time.monotonic() - started, earlier.cached and not watched.made)
        return result

    @property
    def built(self) -> bool:
        """Whether anything (an image, the kernel tree) was made for this cell just now."""
        return not all(stage.cached for stage in self.stages.values())


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
    started = time.monotonic()
    try:
        cell_images = CellImages(cell, archive, progress)
    except InfraError as error:
        run.stages["images"] = Stage(time.monotonic() - started, False)
        return run.errors(f"image build failed: {error}")
    run.stages.update(cell_images.stages)
    run.release = cell_images.kernel.release
    run.image = cell_images.cell
    guest_dir = cell_dir / "guest"
    guest_dir.mkdir(parents=True, exist_ok=True)
    try:
        accel, why = choose_accel(cell_images.runner, guest_dir)
    except InfraError as error:
        return run.errors(f"running the guest failed: {error}")
    run.accel = accel
    progress(Step(f"{cell.id}: guests boot under {accel.upper()} ({why})"))
    results: list[Result] = []
    if cell.tests:
        results += _scripts(cell, context, cell_images, guest_dir, run, progress)
    if cell.examples:
        results += _examples(cell, context, cell_images, guest_dir, run, progress)
    if cell.dejagnu:
        results += _testsuite_results(cell, context, cell_images, guest_dir, run, progress)
    return results


def _scripts(cell: Cell, context: CellContext, cell_images: CellImages, guest_dir: Path, run: CellRun,
             progress: Progress) -> list[Result]:
    """The matrix's own scripts: compiled (cached by content), then one boot runs them all."""
    progress(Step(f"{cell.id}: compiling {len(cell.tests)} script(s)"))
    started = time.monotonic()
    names = [t.name for t in cell.tests]
    try:
        compiled = compile_cell(cell_images.cell, cell.tests, cell_images.kernel, guest_dir,
                                cell_images.stap_key, progress)
    except InfraError as error:
        run.stages["compile"] = Stage(time.monotonic() - started, False)
        return run.errors(f"compiling failed: {error}", names)
    run.stages["compile"] = Stage(time.monotonic() - started, all(c.cached for c in compiled.values()))

    # The guest boots even when nothing compiled: that proves the kernel boots and gives the
    # build-id the image check compares with the debuginfo.
    runnable = [t.name for t in cell.tests if compiled[t.name].ok]
    started = time.monotonic()
    accel = run.accel
    try:
        progress(Step(f"{cell.id}: booting {run.release} under {accel.upper()}"))
        timeouts = {t.name: t.timeout_s * TIMEOUT_SCALE[accel] for t in cell.tests}
        guest = run_guest(cell_images.runner, guest_dir, runnable, timeouts, accel)
        tries = {t.name: [_judge(t, compiled[t.name], guest, context, guest_dir, 1)] for t in cell.tests}
        guest_boots = guest.boots
        for attempt in range(2, context.reruns + 2):
            again = [name for name in runnable if tries[name][-1][0] in RERUN_OUTCOMES]
            if not again:
                break
            progress(Step(f"{cell.id}: trying {', '.join(again)} again in a fresh boot (try {attempt})"))
            retry = run_guest(cell_images.runner, guest_dir, runnable, timeouts, accel, selected=again,
                              first_boot=guest_boots + 1)
            guest_boots += retry.boots
            for test in cell.tests:
                if test.name in again:
                    tries[test.name].append(_judge(test, compiled[test.name], retry, context, guest_dir, attempt))
    except InfraError as error:
        run.stages["run"] = Stage(time.monotonic() - started, False)
        return run.errors(f"running the guest failed: {error}", names)
    run.stages["run"] = Stage(time.monotonic() - started, False)
    if guest.build_id:
        run.guest_build_id = guest.build_id
    mismatch = kernel_mismatch(guest, cell_images.kernel)
    if mismatch:
        return run.errors(mismatch, names)
    return [_final(script, compiled[script.name], tries[script.name], context, run, guest_dir)
            for script in cell.tests]


def _pack_stapsh(cell_images: CellImages, guest_dir: Path, programs: tuple[str, ...] = ()) -> None:
    """The initramfs of a guest serving stapsh (this build's stapsh, staprun and stapio, and
    the programs the tests start in the guest)."""
    if not (guest_dir / "list").exists():  # no scripts ran: an empty test list
        (guest_dir / "modules").mkdir(exist_ok=True)
        (guest_dir / "list").write_text("")
    with lazy_container(cell_images.cell, guest_dir, cell_images.kernel) as packer:
        pack_guest(packer, cell_images.kernel, guest_dir, cell_images.stap_key, with_stapsh=True, programs=programs)


def test_jobs() -> int:
    """How many compiles, and guests, one cell's systemtap tests use at once: what this
    machine's cores and memory allow (harness/resources.py), or STAPMATRIX_TEST_JOBS."""
    value = os.environ.get("STAPMATRIX_TEST_JOBS", "")
    if re.fullmatch(r"[1-9][0-9]?", value):
        return int(value)
    return resources.workers()[0]


def _examples(cell: Cell, context: CellContext, cell_images: CellImages, guest_dir: Path, run: CellRun,
              progress: Progress) -> list[Result]:
    """systemtap's examples: one Result per test_check and test_installcheck command."""
    corpus = cell.work.corpus
    assert corpus is not None
    names = [t.name for t in cell.examples]
    examples_cell = ExampleCell(cell_images.cell, cell_images.runner, cell_images.kernel, corpus, guest_dir, run.accel,
                                cell_images.stap_key, cell.stap.stap_path, test_jobs(), context.reruns)
    try:
        programs = tuple(sorted({p for t in cell.examples if t.kind == "installcheck"
                                 for p in target_programs(t.command)}
                                | ({"stapbpf"} if any("--bpf" in t.command or "--runtime=bpf" in t.command
                                                      for t in cell.examples) else set())))
        verdicts, build_id = run_examples(examples_cell, cell.examples, progress,
                                          before_guests=lambda: _pack_stapsh(cell_images, guest_dir, programs))
    except InfraError as error:
        return run.errors(f"running the examples failed: {error}", names)
    run.guest_build_id = run.guest_build_id or build_id
    mismatch = booted_mismatch(build_id, cell_images.kernel) if build_id else ""
    if mismatch:
        return run.errors(mismatch, names)
    results = []
    for verdict in verdicts:
        test = verdict.test
        outcome, detail, actual = verdict.outcome, verdict.detail, ""
        rule = context.known_failure(cell.kernel.spec, cell.stap.spec, test.name)
        if outcome is not Outcome.FLAKY and outcome is not Outcome.SKIP:
            outcome, detail, actual = apply_known_failure(outcome, detail, rule)
        stages = dict(_shared_stages(run))
        stages[test.kind] = Stage(round(verdict.seconds, 1), verdict.cached)
        results.append(run.result(
            test.name, outcome, detail, stages, dict(run.artifacts, **verdict.artifacts),
            xfail_reason=rule.reason if rule and outcome is Outcome.XFAIL else "", actual=actual,
            tries=[Try(o.value, d) for o, d in verdict.tries]))
    return results


def kernel_mismatch(guest: GuestRun, kernel: KernelTree) -> str:
    """Why the tests' outcomes say nothing, when the kernel that booted is not the build whose
    vmlinux the modules were compiled against (a path: tree rebuilt with `make vmlinux` alone
    keeps its old bzImage: the old kernel would be tested as the new one); "" when they match
    or the guest never booted (its tests already say so)."""
    if guest.boot_failure or guest.boots == 0:
        return ""
    return booted_mismatch(guest.build_id, kernel)


def booted_mismatch(build_id: str, kernel: KernelTree) -> str:
    """kernel_mismatch for a guest that booted and reported `build_id`."""
    if not kernel.build_id or build_id == kernel.build_id:
        return ""
    booted = f"build-id {build_id}" if build_id else "no build-id (/sys/kernel/notes held no GNU note)"
    return (f"the guest booted a kernel with {booted}, but the modules were compiled against "
            f"{kernel.root / kernel.vmlinux} with build-id {kernel.build_id}: {kernel.vmlinuz} and vmlinux are "
            "not one build, so no test here says anything about it. For a path: tree, run `make` (bzImage and "
            "vmlinux), not `make vmlinux` alone; for a kernel store entry, `stapmatrix clean --kernels`")


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
    files = tries[0][2]
    outcome, detail = over_tries([(o, d) for o, d, _ in tries], "boots")
    rule = context.known_failure(run.cell.kernel.spec, run.cell.stap.spec, script.name)
    if outcome is not Outcome.FLAKY:
        outcome, detail, actual = apply_known_failure(outcome, detail, rule)
    else:
        actual = ""
    artifacts = dict(run.artifacts, compile_log=str(compiled.log_path), **files)
    stages = dict(_shared_stages(run), compile=Stage(compiled.seconds, compiled.cached), run=run.stages["run"])
    recorded = [Try(o.value, d) for o, d, _ in tries] if len(tries) > 1 else []
    return run.result(script.name, outcome, detail, stages, artifacts, xfail_reason=rule.reason if rule else "",
                      actual=actual, tries=recorded)


def _shared_stages(run: CellRun) -> dict[str, Stage]:
    """The stages every test of the cell shares before its own: images and the kernel."""
    return {name: run.stages[name] for name in ("images", "kernel") if name in run.stages}


def _testsuite_results(cell: Cell, context: CellContext, cell_images: CellImages, guest_dir: Path, run: CellRun,
                       progress: Progress) -> list[Result]:
    """One Result per DejaGnu line, test = `testsuite:EXP:NAME`, and one `testsuite:EXP` for
    a file that crashed or hung the guest, or left a splat or new taint; a file that does
    part of its work outside the guest is one `skip` (harness/dejagnu_sets.py); an
    infrastructure failure is one `error` record per file."""
    started = time.monotonic()
    stage = dict(_shared_stages(run), testsuite=Stage(0.0, False))
    results = [run.result(f"testsuite:{f.path}", Outcome.SKIP,
                          f"not run under stap --remote (the DejaGnu machine is not the kernel under test): "
                          f"this test {f.host_bound}",
                          stage) for f in cell.dejagnu if f.host_bound]
    try:
        _pack_stapsh(cell_images, guest_dir, tuple(sorted({p for f in cell.dejagnu if not f.host_bound
                                                           for p in f.programs})))
        runs = run_testsuite(cell_images.cell, cell_images.runner, cell_images.kernel, cell.dejagnu, guest_dir,
                             run.accel, cell_images.stap_key, cell.stap.stap_path, test_jobs(), context.reruns,
                             progress)
    except InfraError as error:
        return results + run.errors(f"running the testsuite failed: {error}",
                                    [f"testsuite:{f.path}" for f in cell.dejagnu if not f.host_bound])
    stage["testsuite"] = Stage(time.monotonic() - started, False)
    for file_run in runs:
        results += _file_results(file_run, cell, context, run, stage)
    return results


def _file_results(file_run: FileRun, cell: Cell, context: CellContext, run: CellRun,
                  stage: dict[str, Stage]) -> list[Result]:
    """The records of one DejaGnu file over its tries, with the matrix's known failures."""
    artifacts = dict(run.artifacts, **file_run.artifacts)
    for number, again in enumerate(file_run.retries, 2):
        artifacts.update({f"try{number}_{name}": path for name, path in again.artifacts.items()})
    results = []
    for verdict in file_verdicts(file_run):
        rule = context.known_failure(cell.kernel.spec, cell.stap.spec, verdict.test) if verdict.is_line else None
        outcome, detail, actual = verdict.outcome, verdict.detail, ""
        if outcome is not Outcome.FLAKY:
            outcome, detail, actual = apply_known_failure(outcome, detail, rule)
        recorded = [Try(o.value, d) for o, d in verdict.tries]
        results.append(run.result(verdict.test, outcome, detail, stage, artifacts, actual=actual, tries=recorded,
                                  xfail_reason=rule.reason if rule else ""))
    return results
