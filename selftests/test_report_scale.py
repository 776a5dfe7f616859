"""The grid at scale (issue 18, item 7): 2,000 cells made of the records of a real run
(selftests/data/run-6.12-deb5.6-deb5.1, its artifacts read for every test) rendered for the
terminal, as markdown and as HTML, all three within 10 s. The grid was quadratic: 2,000
cells of 2,000 kernels and 2,000 systemtap builds took 68 s and 1.4 GB of HTML. A grid too
wide or mostly empty is now listed one cell per line. The limit is on CPU time: on a shared
machine the wall time also measures the neighbours (both are printed)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import TypeVar

import pytest
from rich.console import Console

from harness.outcomes import Result, read_results
from harness.report import html, markdown, terminal

CELLS = 2000
T = TypeVar("T")


def spread(real: list[Result], shape: str) -> list[Result]:
    """CELLS cells, one record each: every cell its own kernel and systemtap build
    ("diagonal", the worst case for a table), or 40 kernels x 50 builds ("dense")."""
    results = []
    for index in range(CELLS):
        if shape == "diagonal":
            kernel, stap = f"6.12.{index}+deb13-amd64", f"deb:5.{index}-1"
        else:
            kernel, stap = f"6.12.{index // 50}+deb13-amd64", f"deb:5.{index % 50}-1"
        record = real[index % len(real)]
        results.append(dataclasses.replace(record, kernel=kernel, kernel_name=kernel, stap=stap, stap_name=stap,
                                           cell=f"{kernel}-stap{stap[4:]}"))
    return results


@pytest.mark.parametrize("shape", ["diagonal", "dense"])
def test_two_thousand_cells_render_in_under_ten_seconds(data: Path, shape: str) -> None:
    results = spread(read_results(data / "run-6.12-deb5.6-deb5.1"), shape)
    wall, cpu = {}, {}  # the CPU time is what the code costs; wall time also says how busy the machine was

    def timed(name: str, render: Callable[[], T]) -> T:
        started, started_cpu = time.monotonic(), time.process_time()
        made = render()
        wall[name], cpu[name] = time.monotonic() - started, time.process_time() - started_cpu
        return made

    buffer = StringIO()
    timed("terminal", lambda: terminal.render_terminal(results, Console(file=buffer, width=160)))
    text = timed("markdown", lambda: markdown.render_markdown(results))
    page = timed("html", lambda: html.render_html(results))
    print(f"{CELLS} cells ({shape}): " + ", ".join(f"{k} {wall[k]:.1f} s (CPU {cpu[k]:.1f} s)" for k in wall)
          + f"; total {sum(wall.values()):.1f} s (CPU {sum(cpu.values()):.1f} s); html {len(page) / 2**20:.1f} MiB, "
          f"markdown {len(text.encode()) / 2**10:.0f} KiB, terminal {len(buffer.getvalue()) / 2**10:.0f} KiB")
    assert sum(cpu.values()) < 10
    assert len(page) < 16 * 2**20 and len(text.encode()) <= 1_000_000
    # every cell is in the page's grid once, and in the summary's grid and times table once each
    assert page.count('<td class="fail"><a href="#cell-') + page.count('<td class="pass"><a href="#cell-') == CELLS
    assert sum(1 for line in text.splitlines() if line.startswith("| 6.12.")) == 2 * CELLS
