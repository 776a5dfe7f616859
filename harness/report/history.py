"""Nightly history: since when each failing test has been failing.

A nightly run compares itself with the last nightly (`stapmatrix diff BASE NEW --history
BASE/history.json --write-history NEW/history.json`). What a reader asks of it decides what is
kept: is this failure new since last night (a new regression: the job fails), or has it been
failing for a while (since when), and what passes again since last night (fixed)? The
diff's own groups answer the first and the last; this file answers "since when":

    {"format": "stapmatrix-history-v1", "date": "2026-12-02",
     "failing": [{"kernel_name": ..., "stap_name": ..., "test": ..., "outcome": "fail-load",
                  "since": "2026-11-28"}, ...]}

A failure (fail-*, crash, timeout) is dated by the night it first failed, and keeps its date
while it keeps failing, whatever way; a night it does not fail ends it (as KernelCI's
regressions: active from the first failing run to the next pass). An `error` or `flaky`
night says nothing about stap and neither starts nor ends one: the failure is carried over.
A failure already there in a baseline without history has no date (`since` null: "before
the history began"). History files come from earlier runs' artifacts and are read as
input from outside: bounded, checked field by field, one-line errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.bounded import UnreadableFile, read_bounded
from harness.errors import MatrixError
from harness.outcomes import Outcome, Result
from harness.report.escape import terminal_line
from harness.report.load import Key, key
from harness.report.markdown import md_cell

FORMAT = "stapmatrix-history-v1"
LIMIT = 64 * 1024 * 1024
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
CARRIED = frozenset({Outcome.ERROR, Outcome.FLAKY})  # a night that says nothing about stap


@dataclass(frozen=True)
class Failing:
    key: Key
    outcome: str
    since: str | None  # YYYY-MM-DD of the first night it failed; None: before the history began


@dataclass(frozen=True)
class History:
    date: str
    failing: dict[Key, Failing]


def check_date(text: str, where: str) -> str:
    if not DATE_RE.fullmatch(text):
        raise MatrixError(f"{where}: {text[:40]!r} is not a date: give YYYY-MM-DD")
    return text


def load_history(path: Path) -> History | None:
    """The history file at `path`; None when there is none (the first night, or a baseline
    that is not a nightly)."""
    if not path.exists():
        return None
    try:
        document = json.loads(read_bounded(path, LIMIT, "a history file"))
    except (UnreadableFile, ValueError) as error:
        raise MatrixError(f"--history {path}: not a history file ({str(error)[:200]})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("failing"), list):
        raise MatrixError(f"--history {path}: not a {FORMAT} file (written by `stapmatrix diff --write-history`)")
    date = check_date(str(document.get("date", "")), f"--history {path}: date")
    failing: dict[Key, Failing] = {}
    for number, entry in enumerate(document["failing"]):
        fields = ("kernel_name", "stap_name", "test", "outcome")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) for f in fields) or \
                not (entry.get("since") is None or isinstance(entry.get("since"), str)):
            raise MatrixError(f"--history {path}: entry {number} is not {{kernel_name, stap_name, test, outcome, since}}")
        since = check_date(entry["since"], f"--history {path}: entry {number}") if entry["since"] else None
        test_key = (entry["kernel_name"], entry["stap_name"], entry["test"])
        failing[test_key] = Failing(test_key, entry["outcome"], since)
    return History(date, failing)


def advance(previous: History | None, base: Sequence[Result], new: Sequence[Result], date: str) -> History:
    """Tonight's history: what fails now, each with the night it started failing."""
    before = {key(r): r for r in base}
    failing: dict[Key, Failing] = {}
    for result in new:
        test_key = key(result)
        known = previous.failing.get(test_key) if previous else None
        if result.outcome.is_failure:
            if known:
                since = known.since
            elif test_key in before and before[test_key].outcome.is_failure:
                since = None  # failing in a baseline that kept no history: since before it began
            else:
                since = date
            failing[test_key] = Failing(test_key, result.outcome.value, since)
        elif result.outcome in CARRIED and known:
            failing[test_key] = known
    return History(date, failing)


def still_failing(previous: History | None, base: Sequence[Result], new: History) -> list[Failing]:
    """Failures tonight that were failures last night too: not new, listed with their date."""
    before = {key(r): r for r in base}
    return [f for f in new.failing.values()
            if (f.key in before and before[f.key].outcome.is_failure) or (previous and f.key in previous.failing)]


def write_history(path: Path, history: History) -> None:
    document = {"format": FORMAT, "date": history.date,
                "failing": [{"kernel_name": f.key[0], "stap_name": f.key[1], "test": f.key[2], "outcome": f.outcome,
                             "since": f.since} for f in sorted(history.failing.values(), key=lambda f: f.key)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def _since(failing: Failing) -> str:
    return f"since {failing.since}" if failing.since else "since before the history began"


def render_still_failing_text(rows: Sequence[Failing]) -> str:
    if not rows:
        return "still failing: none\n"
    lines = [f"still failing, not new ({len(rows)}):"]
    lines += [f"  {terminal_line(f'{f.key[0]} x {f.key[1]} {f.key[2]}: {f.outcome} {_since(f)}')}" for f in rows]
    return "\n".join(lines) + "\n"


def render_still_failing_markdown(rows: Sequence[Failing]) -> str:
    if not rows:
        return "### still failing, not new (0)\n\n"
    out = [f"### still failing, not new ({len(rows)})", "", "| kernel | systemtap | test | outcome | failing |",
           "| --- | --- | --- | --- | --- |"]
    out += [f"| {md_cell(f.key[0])} | {md_cell(f.key[1])} | {md_cell(f.key[2])} | {md_cell(f.outcome)} | "
            f"{md_cell(_since(f))} |" for f in sorted(rows, key=lambda f: (f.since or "", f.key))]
    return "\n".join(out) + "\n\n"


def render_still_failing_json(rows: Sequence[Failing]) -> str:
    return json.dumps({"still_failing": [{"kernel_name": f.key[0], "stap_name": f.key[1], "test": f.key[2],
                                          "outcome": f.outcome, "since": f.since} for f in rows]}, indent=2) + "\n"


STILL_FAILING_FORMATS = {"text": render_still_failing_text, "markdown": render_still_failing_markdown,
                         "json": render_still_failing_json}
