"""The diff of two runs, matched by (kernel_name, stap_name, test), as text, markdown and JSON.
Two runs of one kernel row each (or one systemtap column each) are compared row with row
whatever the rows are called: that is `run` on the old kernel, then on the new one.

A regression is a test that passed (or failed as known, xfail) before and now does anything
else. Two outcomes are not regressions but are reported in groups of their own: `flaky` now
(the test passed in one try), and `error` now (infrastructure: the run says nothing about
stap). Only regressions make `stapmatrix diff` exit 1.

A regression between two rows (or columns) that are `git:` refs of one repository, the other
side the same, comes with the `stapmatrix bisect` command that finds the commit.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

from harness.outcomes import Outcome, Result
from harness.report.escape import markdown_block, terminal_line
from harness.report.grid import identity, needs_attention, reason
from harness.report.load import CellKey, Key, key
from harness.report.markdown import md_cell

GROUPS = ("regressions", "errors", "flaky", "changes", "fixes", "appeared", "vanished")
GROUP_TITLES = {
    "regressions": "regressions (passed or known-failed before, fail now)",
    "errors": "infrastructure errors now (not counted as regressions)",
    "flaky": "flaky now (not counted as regressions)",
    "changes": "other outcome changes",
    "fixes": "fixes (did not pass before, pass now)",
    "appeared": "tests that appeared",
    "vanished": "tests that vanished",
}


@dataclass
class Change:
    key: Key
    before: Result | None
    after: Result | None

    @property
    def summary(self) -> str:
        before = self.before.outcome.value if self.before else "(absent)"
        after = self.after.outcome.value if self.after else "(absent)"
        if self.before and self.before.outcome is Outcome.XFAIL:
            before += f" ({self.before.actual})"
        if self.after and self.after.outcome is Outcome.XFAIL:
            after += f" ({self.after.actual})"
        return f"{before} -> {after}"

    @property
    def reason(self) -> str:
        """The new result's reason; for a fix, what it was."""
        if self.after and needs_attention(self.after):
            return reason(self.after)
        return f"was: {reason(self.before)}" if self.before and needs_attention(self.before) else ""

    def as_json(self) -> dict[str, object]:
        return {"kernel_name": self.key[0], "stap_name": self.key[1], "test": self.key[2],
                "before": self.before.outcome.value if self.before else None,
                "after": self.after.outcome.value if self.after else None, "reason": self.reason,
                "reproduce": self.after.reproduce if self.after else ""}


@dataclass
class Diff:
    groups: dict[str, list[Change]] = field(default_factory=lambda: {g: [] for g in GROUPS})
    cells_appeared: list[CellKey] = field(default_factory=list)
    cells_vanished: list[CellKey] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)  # "column NAME: OLD -> NEW"
    compared: int = 0

    @property
    def regressed(self) -> bool:
        return bool(self.groups["regressions"])


def classify(before: Result, after: Result) -> str | None:
    """The group a matched pair belongs to, or None when nothing changed."""
    b, a = before.outcome, after.outcome
    if b is a and before.actual == after.actual:
        return None
    if a is Outcome.FLAKY:
        return "flaky"
    if a is Outcome.ERROR:
        return "errors"
    if b in (Outcome.PASS, Outcome.XFAIL) and a not in (Outcome.PASS, Outcome.XFAIL):
        return "regressions"
    if a is Outcome.PASS and b is not Outcome.ERROR:
        return "fixes"
    return "changes"  # fail-pass4 -> fail-load, pass -> xfail, error -> anything, ...


def _identities(base: Sequence[Result], new: Sequence[Result]) -> list[str]:
    """Rows and columns present in both runs whose spec or identity differs."""
    lines = []
    for what, name_of, spec_of in (("kernel", lambda r: r.kernel_name, lambda r: identity(r.kernel, r.kernel_identity)),
                                   ("systemtap", lambda r: r.stap_name, lambda r: identity(r.stap, r.stap_identity))):
        before: dict[str, set[str]] = {}
        after: dict[str, set[str]] = {}
        for results, specs in ((base, before), (new, after)):
            for result in results:
                specs.setdefault(name_of(result), set()).add(spec_of(result))
        for name in [n for n in before if n in after and before[n] != after[n]]:
            lines.append(f"{what} {name}: {', '.join(sorted(before[name]))} -> {', '.join(sorted(after[name]))}")
    return lines


def _paired_rows(base: Sequence[Result], new: Sequence[Result]) -> tuple[list[Result], list[str]]:
    """The baseline with its only kernel row (systemtap column) named as the new run's only
    one, when each run has one and their names differ: `run --kernel 6.12...` before and `run
    --kernel 7.3...` after is the before-and-after question, not two unrelated cells."""
    said = []
    for what, field_name in (("kernel row", "kernel_name"), ("systemtap column", "stap_name")):
        before_names = {getattr(r, field_name) for r in base}
        after_names = {getattr(r, field_name) for r in new}
        if len(before_names) == 1 and len(after_names) == 1 and before_names != after_names:
            (old,), (now,) = before_names, after_names
            base = [dataclasses.replace(r, **{field_name: now}) for r in base]
            said.append(f"{what} {old} compared with {now} (each run has only this one)")
    return list(base), said


def diff_results(base: Sequence[Result], new: Sequence[Result]) -> Diff:
    base, paired = _paired_rows(base, new)
    diff = Diff(identities=paired + _identities(base, new))
    before = {key(r): r for r in base}
    after = {key(r): r for r in new}
    cells_before = {k[:2] for k in before}
    cells_after = {k[:2] for k in after}
    diff.cells_appeared = [c for c in dict.fromkeys(k[:2] for k in after) if c not in cells_before]
    diff.cells_vanished = [c for c in dict.fromkeys(k[:2] for k in before) if c not in cells_after]
    for test_key, result in after.items():
        if test_key in before:
            diff.compared += 1
            group = classify(before[test_key], result)
            if group:
                diff.groups[group].append(Change(test_key, before[test_key], result))
        elif test_key[:2] in cells_before:  # whole new cells are listed as cells, not test by test
            diff.groups["appeared"].append(Change(test_key, None, result))
    for test_key, result in before.items():
        if test_key not in after and test_key[:2] in cells_after:
            diff.groups["vanished"].append(Change(test_key, result, None))
    return diff


IDENTITY_COMMIT_RE = re.compile(r"^commit ([0-9a-f]{40})$")


def _git_parts(spec: str) -> tuple[str, str] | None:
    """(repository, ref) of a `git:REPO@REF` spec."""
    if not spec.startswith("git:") or "@" not in spec:
        return None
    repo, _, ref = spec[4:].rpartition("@")
    return (repo, ref) if repo and ref else None


def _commit(identity: str, ref: str) -> str:
    """The exact commit a record ran (its identity), else the ref it named."""
    match = IDENTITY_COMMIT_RE.match(identity)
    return match.group(1) if match else ref


def _test_words(result: Result, side: str) -> list[str]:
    """The test as bisect takes it, and the kernel config, from the record's reproducer."""
    try:
        words = shlex.split(result.reproduce)
    except ValueError:
        return []
    config = [w for i, w in enumerate(words) if i and words[i - 1] == "--kernel-config"] if side == "kernel" else []
    config_words = [word for item in config for word in ("--kernel-config", item)]
    scripts = [w for w in words if w.endswith(".stp") and PurePath(w).stem == result.test]
    if scripts:
        return config_words + scripts[:1]
    if result.test.startswith("testsuite:"):
        return config_words + ["--testsuite", result.test.split(":")[1]]
    if result.test.startswith("examples/"):
        return config_words + ["--testsuite", "examples", f"--testsuite-include={result.test}"]
    return []


def bisect_command(before: Result, after: Result) -> str:
    """`stapmatrix bisect ...` for a change between two git: refs of one repository (kernel
    or systemtap), the other side unchanged; "" otherwise."""
    sides = (("kernel", "--stap", before.kernel, after.kernel, before.kernel_identity, after.kernel_identity,
              before.stap, after.stap),
             ("stap", "--kernel", before.stap, after.stap, before.stap_identity, after.stap_identity,
              before.kernel, after.kernel))
    for side, other_option, old_spec, new_spec, old_identity, new_identity, old_other, new_other in sides:
        old, new = _git_parts(old_spec), _git_parts(new_spec)
        if not old or not new or old[0] != new[0] or old_other != new_other:
            continue
        good, bad = _commit(old_identity, old[1]), _commit(new_identity, new[1])
        test = _test_words(after, side)
        if good == bad or not test:
            continue
        return shlex.join(["stapmatrix", "bisect", f"--{side}", f"git:{new[0]}", "--good", good, "--bad", bad,
                           other_option, new_other, *test])
    return ""


def bisect_commands(diff: Diff) -> list[str]:
    """One bisect command per regression that has one, without repeats."""
    commands: list[str] = []
    for change in diff.groups["regressions"]:
        command = bisect_command(change.before, change.after) if change.before and change.after else ""
        if command and command not in commands:
            commands.append(command)
    return commands


def _change_line(change: Change) -> str:
    kernel, stap, test = change.key
    return f"{kernel} x {stap} {test}: {change.summary}" + (f": {change.reason}" if change.reason else "")


def _cell_lines(diff: Diff) -> list[tuple[str, list[str]]]:
    return [("cells that appeared", [f"{k} x {s}" for k, s in diff.cells_appeared]),
            ("cells that vanished", [f"{k} x {s}" for k, s in diff.cells_vanished]),
            ("identity changes (same name, another build)", diff.identities)]


def diff_counts(diff: Diff) -> str:
    parts = [f"{len(diff.groups[g])} {g}" for g in GROUPS]
    return f"{diff.compared} test(s) compared: " + ", ".join(parts)


def render_diff_text(diff: Diff) -> str:
    """For a terminal: every line from record text with its control characters shown escaped
    (a test name holding ESC ] 52 would write the reader's clipboard)."""
    out = []
    for title, lines in _cell_lines(diff):
        if lines:
            out += [f"{title}:"] + [f"  {terminal_line(line)}" for line in lines]
    for group in GROUPS:
        changes = diff.groups[group]
        if changes:
            out += [f"{GROUP_TITLES[group]} ({len(changes)}):"] + [f"  {terminal_line(_change_line(c))}" for c in changes]
    commands = bisect_commands(diff)
    if commands:
        out += ["to find the commit that changed it:"] + [f"  {terminal_line(c)}" for c in commands]
    out.append(diff_counts(diff))
    out.append("REGRESSED" if diff.regressed else "no regressions")
    return "\n".join(out) + "\n"


def render_diff_markdown(diff: Diff) -> str:
    out = ["## stapmatrix diff", ""]
    for title, lines in _cell_lines(diff):
        if lines:
            out += [f"**{title}**", ""] + [f"- {md_cell(line)}" for line in lines] + [""]
    for group in GROUPS:
        changes = diff.groups[group]
        if not changes:
            continue
        out += [f"### {GROUP_TITLES[group]} ({len(changes)})", "", "| kernel | systemtap | test | change | reason |",
                "| --- | --- | --- | --- | --- |"]
        out += [f"| {md_cell(c.key[0])} | {md_cell(c.key[1])} | {md_cell(c.key[2])} | {md_cell(c.summary)} | "
                f"{md_cell(c.reason)} |" for c in changes]
        out.append("")
    commands = bisect_commands(diff)
    if commands:
        out += ["### to find the commit that changed it", "", markdown_block("\n".join(commands)), ""]
    out += [diff_counts(diff), "", "**regressed**" if diff.regressed else "no regressions"]
    return "\n".join(out) + "\n"


def render_diff_json(diff: Diff) -> str:
    document = {
        "regressed": diff.regressed,
        "compared": diff.compared,
        "cells_appeared": [list(c) for c in diff.cells_appeared],
        "cells_vanished": [list(c) for c in diff.cells_vanished],
        "identity_changes": diff.identities,
        **{group: [c.as_json() for c in diff.groups[group]] for group in GROUPS},
        "bisect": bisect_commands(diff),
    }
    return json.dumps(document, indent=2) + "\n"


DIFF_FORMATS = {"text": render_diff_text, "markdown": render_diff_markdown, "json": render_diff_json}
