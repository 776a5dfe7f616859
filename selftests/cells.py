"""Running one real cell the way a developer does (`stapmatrix run`), for the selftests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.cli import main
from harness.outcomes import Result, read_results

# run_cell(NAME, SCRIPT..., kernel=..., stap=..., args=(...)) -> (exit code, results by test, seconds)
CellRun = Callable[..., tuple[int, dict[str, Result], float]]


def stapmatrix_run(json_path: Path, kernel: str, stap: str, *scripts: Path | str,
                   args: tuple[str, ...] = ()) -> tuple[int, dict[str, Result], float]:
    """`stapmatrix run` in this process: its exit code, its results by test name, its wall time."""
    started = time.monotonic()
    code = main(["run", "--kernel", kernel, "--stap", stap, "--json", str(json_path), *args, *map(str, scripts)])
    results = {r.test: r for r in read_results(json_path)} if json_path.exists() else {}
    return code, results, time.monotonic() - started
