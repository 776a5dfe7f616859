"""One cell, end to end: images -> modules -> guest -> one Result per test.

Both front ends call `run_cell`: the pytest plugin (one xdist group per cell) and
`stapmatrix run`. Everything a developer needs after a failure lands in the cell's artifact
directory: compile logs, console and result-channel logs of each boot, each test's output,
and `reproduce.sh`, one command that runs the cell again.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import images
from harness.errors import InfraError
from harness.guest import TIMEOUT_SCALE, choose_accel, run_guest
from harness.matrix import Rule
from harness.modules import compile_cell
from harness.outcomes import Outcome, Result, Stage
from harness.plan import Cell
from harness.results import apply_known_failure, judge
from harness.testsuite import run_testsuite

logger = logging.getLogger(__name__)


@dataclass
class CellContext:
    """What a cell needs from the matrix besides the cell itself."""

    allow_splats: list[str] = field(default_factory=list)
    known_failure: Callable[[str, str, str], Rule | None] = lambda kernel, stap, test: None


def reproduce_command(cell: Cell) -> str:
    command = ["./sm", "run", "--kernel", cell.kernel.abi, "--stap", cell.stap.spec.spec]
    for exp in cell.testsuite:
        command += ["--testsuite", exp]
    for script in cell.tests:
        command += [str(script.path)]
    return shlex.join(command)


def _error_results(cell: Cell, detail: str, stages: dict[str, Stage], artifacts: dict[str, str]) -> list[Result]:
    return [
        Result(cell.kernel.abi, cell.stap.spec.spec, t.name, Outcome.ERROR, detail, dict(stages),
               dict(artifacts), reproduce=reproduce_command(cell))
        for t in cell.tests
    ]


def run_cell(cell: Cell, context: CellContext, cell_dir: Path, progress: Callable[[str], None]) -> list[Result]:
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "reproduce.sh").write_text("#!/bin/sh\n# Runs this cell again from the repository root.\n"
                                           + reproduce_command(cell) + "\n")
    artifacts = {"dir": str(cell_dir), "reproduce": str(cell_dir / "reproduce.sh")}
    stages: dict[str, Stage] = {}

    built: list[str] = []

    def image_progress(message: str) -> None:
        if message.startswith("building "):
            built.append(message)
        progress(message)

    started = time.monotonic()
    try:
        cell_images = images.CellImages(cell, image_progress)
    except InfraError as error:
        stages["images"] = Stage(time.monotonic() - started, False)
        return _error_results(cell, f"image build failed: {error}", stages, artifacts)
    stages["images"] = Stage(time.monotonic() - started, not built)
    artifacts["image"] = cell_images.cell

    progress(f"{cell.id}: compiling {len(cell.tests)} script(s)")
    started = time.monotonic()
    guest_dir = cell_dir / "guest"
    try:
        compiled = compile_cell(
            cell_images.cell, cell.tests, cell.kernel.abi, guest_dir,
            images.image_id(cell_images.stap), images.image_id(cell_images.kernel), progress,
        )
    except InfraError as error:
        stages["compile"] = Stage(time.monotonic() - started, False)
        return _error_results(cell, f"compiling failed: {error}", stages, artifacts)
    stages["compile"] = Stage(time.monotonic() - started, all(c.cached for c in compiled.values()))

    # The guest boots even when nothing compiled: that proves the kernel boots and gives the
    # build-id the image check compares with the debuginfo.
    runnable = [t.name for t in cell.tests if compiled[t.name].ok]
    started = time.monotonic()
    try:
        accel, why = choose_accel(cell_images.runner, guest_dir)
        progress(f"{cell.id}: booting {cell.kernel.abi} under {accel.upper()} ({why})")
        timeouts = {t.name: t.timeout_s * TIMEOUT_SCALE[accel] for t in cell.tests}
        guest = run_guest(cell_images.runner, guest_dir, runnable, timeouts, accel)
    except InfraError as error:
        stages["run"] = Stage(time.monotonic() - started, False)
        return _error_results(cell, f"running the guest failed: {error}", stages, artifacts)
    stages["run"] = Stage(time.monotonic() - started, False)
    if guest.build_id:
        artifacts["guest_build_id"] = guest.build_id

    results = []
    if cell.testsuite:
        results += _testsuite_results(cell, cell_images, guest_dir, accel, stages, artifacts, progress)
    for script in cell.tests:
        outcome, detail = judge(script, compiled[script.name], guest, context.allow_splats)
        rule = context.known_failure(cell.kernel.abi, cell.stap.spec.spec, script.name)
        outcome, detail, actual = apply_known_failure(outcome, detail, rule)
        test_dir = guest_dir / "tests" / script.name
        test_dir.mkdir(parents=True, exist_ok=True)
        test_artifacts = dict(artifacts, compile_log=str(compiled[script.name].log_path))
        if script.name in guest.runs:
            run = guest.runs[script.name]
            (test_dir / "stdout").write_text(run.stdout)
            (test_dir / "stderr").write_text(run.stderr)
            test_artifacts.update(stdout=str(test_dir / "stdout"), stderr=str(test_dir / "stderr"),
                                  console=str(guest_dir / f"console-{run.boot}.log"))
        results.append(Result(
            cell.kernel.abi, cell.stap.spec.spec, script.name, outcome, detail,
            {"images": stages["images"], "compile": Stage(compiled[script.name].seconds, compiled[script.name].cached),
             "run": stages["run"]},
            test_artifacts, accel, reproduce_command(cell), rule.reason if rule else "", actual,
        ))
    return results


DEJAGNU_OUTCOME = {"pass": Outcome.PASS, "fail": Outcome.FAIL_OUTPUT, "xfail": Outcome.XFAIL, "skip": Outcome.SKIP}


def _testsuite_results(cell: Cell, cell_images: images.CellImages, guest_dir: Path, accel: str,
                       stages: dict[str, Stage], artifacts: dict[str, str],
                       progress: Callable[[str], None]) -> list[Result]:
    """One Result per DejaGnu line, test = `testsuite:EXP:NAME`; an infrastructure failure
    is one `error` record per requested .exp file."""
    started = time.monotonic()
    try:
        lines, testsuite_artifacts = run_testsuite(
            cell_images.cell, cell_images.runner, cell.kernel.abi, cell.testsuite, guest_dir, accel, progress)
    except InfraError as error:
        return [Result(cell.kernel.abi, cell.stap.spec.spec, f"testsuite:{exp}", Outcome.ERROR, str(error),
                       dict(stages), dict(artifacts), accel, reproduce_command(cell)) for exp in cell.testsuite]
    stage = {"images": stages["images"], "testsuite": Stage(time.monotonic() - started, False)}
    return [
        Result(cell.kernel.abi, cell.stap.spec.spec, f"testsuite:{line.exp}:{line.name}",
               DEJAGNU_OUTCOME[line.pytest_outcome], f"DejaGnu {line.status}: {line.name}", dict(stage),
               dict(artifacts, **testsuite_artifacts), accel, reproduce_command(cell))
        for line in lines
    ]
