"""`stapmatrix bisect`: the first commit between two refs at which one test's outcome became
what it is at the newer ref, for kernel commits (a fixed systemtap build) or systemtap
commits (a fixed kernel).

Each step is a real cell, run through the session like `stapmatrix run` runs one: the
bisected side at that commit, built incrementally on the previous step's build (the kept
kernel build directory and ccache of harness/kernel_git.py, the kept systemtap tree of
harness/stap_source_build.py). The commits come from `git bisect --no-checkout` in a private
bare clone (`clone --bare --shared` into the cache), so the user's repository is only ever
read: no checkout, no refs/bisect, no HEAD moved.

    outcome at --bad           the target: "bad" in git's terms is "gives the target outcome"
    a commit that fails to build (BuildVerdictError: a compile error, an option that did
        not take)              `git bisect skip`; the result says which commits it could be
    an infrastructure error    stops, with the reason
    tries that disagree        the step is flaky: stops, and says so (never guessed)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import gitrepo, kernels, staps
from harness.archive import Archive
from harness.cell import CellContext, CellImages, reproduce_command
from harness.errors import BuildVerdictError, InfraError, MatrixError
from harness.outcomes import Outcome, Result
from harness.plan import Cell, Plan, make_cell, stap_tests
from harness.progress import BisectDone, BisectStep, Event, KernelBuilt, Progress, StapSourceBuilt
from harness.report.escape import markdown_inline, terminal_line
from harness.scripts import TestScript
from harness.session import Session
from harness.settings import cache_dir
from harness.specs import KernelSpec, StapSpec
from harness.testsets import TestSet

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
NEXT_RE = re.compile(r"^Bisecting: (\d+) revisions? left to test after this \(roughly (\d+) steps?\)", re.MULTILINE)
FIRST_RE = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.MULTILINE)
CANDIDATES_HEADER = "The first bad commit could be any of:"
MAX_STEPS = 64  # git needs ~log2(commits): 64 covers any history; more means git misbehaves
PASSING = frozenset({Outcome.PASS, Outcome.SKIP, Outcome.XFAIL})


@dataclass(frozen=True)
class BisectRequest:
    """What to bisect: `side` ("kernel" or "stap") is the one at `good`..`bad` of `repo`; the
    other side is fixed (`kernel` or `stap`). One script, or test sets judged as one."""

    side: str
    repo: str  # as the user gave it (URL or absolute directory)
    good: str
    bad: str
    kernel: KernelSpec  # the kernel (for side "kernel": a template whose ref each step replaces)
    stap: StapSpec  # likewise
    scripts: tuple[TestScript, ...] = ()
    test_sets: tuple[TestSet, ...] = ()
    reruns: int = 1

    @property
    def test(self) -> str:
        return self.scripts[0].name if self.scripts else "testsuite " + " ".join(s.selector for s in self.test_sets)


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    subject: str
    author: str
    date: str


@dataclass
class StepRecord:
    """One commit tested (or that could not be)."""

    step: int
    commit: str
    role: str  # "bad end", "good end" or "bisect"
    outcome: str  # the test's outcome, or "skip" (did not build)
    detail: str  # the first line of the outcome's reason (or the build's error)
    build_seconds: float
    built: bool  # the bisected side was built now (not found in a cache)
    incremental: bool  # built on an earlier build of the same build directory
    run_seconds: float
    reproduce: str = ""


@dataclass
class BisectReport:
    side: str
    repo: str
    good: str
    bad: str
    test: str
    target: str  # the outcome at --bad
    steps: list[StepRecord] = field(default_factory=list)
    first_changed: CommitInfo | None = None
    candidates: list[CommitInfo] = field(default_factory=list)  # when skips leave several
    before: StepRecord | None = None  # the parent's step (or the good end's)
    after: StepRecord | None = None
    parent: str = ""
    reproduce_commit: str = ""
    reproduce_parent: str = ""
    stopped: str = ""  # why it stopped before an answer (flaky step, infrastructure)
    seconds: float = 0.0

    @property
    def builds(self) -> int:
        return sum(1 for s in self.steps if s.built or s.outcome == "skip")

    @property
    def skipped(self) -> list[str]:
        return [s.commit for s in self.steps if s.outcome == "skip"]

    def as_json(self) -> dict[str, object]:
        first = None
        if self.first_changed:
            first = dict(asdict(self.first_changed), parent=self.parent,
                         outcome_before=self.before.outcome if self.before else "",
                         detail_before=self.before.detail if self.before else "",
                         outcome_after=self.after.outcome if self.after else "",
                         detail_after=self.after.detail if self.after else "")
        return {"side": self.side, "repository": gitrepo.mask(self.repo), "good": self.good, "bad": self.bad,
                "test": self.test, "target": self.target, "first_changed": first,
                "candidates": [asdict(c) for c in self.candidates], "steps": [asdict(s) for s in self.steps],
                "skipped": self.skipped, "builds": self.builds, "seconds": round(self.seconds, 1),
                "reproduce": {"commit": self.reproduce_commit, "parent": self.reproduce_parent},
                "stopped": self.stopped}


def report_from_json(document: dict[str, object]) -> BisectReport:
    """A report read back from its `--json` file (to render it again); every field checked."""
    try:
        steps = [StepRecord(**step) for step in document["steps"]]  # type: ignore[attr-defined]
        report = BisectReport(str(document["side"]), str(document["repository"]), str(document["good"]),
                              str(document["bad"]), str(document["test"]), str(document["target"]), steps)
        first = document["first_changed"]
        if isinstance(first, dict):
            report.first_changed = CommitInfo(str(first["commit"]), str(first["subject"]), str(first["author"]),
                                              str(first["date"]))
            report.parent = str(first["parent"])
            by_commit = {s.commit: s for s in steps}
            report.after, report.before = by_commit.get(report.first_changed.commit), by_commit.get(report.parent)
        report.candidates = [CommitInfo(**c) for c in document["candidates"]]  # type: ignore[attr-defined]
        reproduce = document["reproduce"]
        assert isinstance(reproduce, dict)
        report.reproduce_commit, report.reproduce_parent = str(reproduce["commit"]), str(reproduce["parent"])
        report.stopped, report.seconds = str(document["stopped"]), float(document["seconds"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise MatrixError(f"not a bisect result ({type(error).__name__}: {error}): give a file `bisect --json` "
                          "wrote") from None
    return report


# --- the private clone and git bisect ---------------------------------------------------------

class PrivateClone:
    """A bare `--shared` clone of the user's repository in the cache: git bisect writes its
    refs and state here, never into the user's repository. Removed when done."""

    def __init__(self, repo: str) -> None:
        source = gitrepo.repository(repo, "--kernel/--stap")
        name = hashlib.sha256(repo.encode()).hexdigest()[:12]
        self.path = cache_dir() / "bisect" / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        gitrepo.run("clone", "--bare", "--shared", "--quiet", "--", source, str(self.path),
                    what=f"making a private clone of {repo}")

    def git(self, *args: str, what: str) -> str:
        return gitrepo.run(*args, cwd=str(self.path), what=what)

    def bisect(self, *args: str) -> str:
        """git bisect ARGS: its output, whatever its exit status (it exits non-zero when only
        skipped commits are left, and says so)."""
        completed = subprocess.run(["git", "bisect", *args], cwd=self.path, capture_output=True, text=True,
                                   timeout=gitrepo.GIT_LIMIT_S, env=gitrepo.environment(), check=False)
        output = completed.stdout + completed.stderr
        if completed.returncode not in (0, 2) and not FIRST_RE.search(output) and CANDIDATES_HEADER not in output:
            raise InfraError(f"git bisect {args[0]}: {gitrepo.mask(gitrepo.git_said(completed.stderr, completed.returncode))}")
        return output

    def commit(self, ref: str, option: str) -> str:
        try:
            found = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
                             what=f"{option} {ref}").strip()
        except InfraError:
            raise MatrixError(f"{option} {ref}: the repository has no such commit; give a branch, tag or commit "
                              "id") from None
        return checked_commit(found, f"{option} {ref}")

    def is_ancestor(self, older: str, newer: str) -> bool:
        completed = subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=self.path,
                                   capture_output=True, text=True, timeout=gitrepo.GIT_LIMIT_S,
                                   env=gitrepo.environment(), check=False)
        if completed.returncode not in (0, 1):
            raise InfraError(f"git merge-base: {gitrepo.git_said(completed.stderr, completed.returncode)}")
        return completed.returncode == 0

    def count(self, good: str, bad: str) -> int:
        text = self.git("rev-list", "--count", f"{good}..{bad}", what="counting the commits").strip()
        return int(text) if text.isdigit() else 0

    def info(self, commit: str) -> CommitInfo:
        text = self.git("log", "-1", "--format=%H%x00%s%x00%an <%ae>%x00%aI", commit, "--",
                        what=f"reading commit {commit[:12]}")
        parts = text.rstrip("\n").split("\0")
        if len(parts) != 4:
            raise InfraError(f"git log of {commit[:12]} gave {len(parts)} fields, not 4")
        return CommitInfo(checked_commit(parts[0], "git log"), parts[1][:200], parts[2][:200], parts[3][:40])

    def parent(self, commit: str) -> str:
        text = self.git("rev-parse", "--verify", "--quiet", f"{commit}^1", what=f"the parent of {commit[:12]}")
        return checked_commit(text.strip(), f"the parent of {commit[:12]}")

    def head(self) -> str:
        return checked_commit(self.git("rev-parse", "BISECT_HEAD", what="git bisect's next commit").strip(),
                              "BISECT_HEAD")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def checked_commit(text: str, what: str) -> str:
    """git's output as a full commit id, or an error: output from outside is checked."""
    if not COMMIT_RE.match(text):
        raise InfraError(f"{what}: git gave {text[:60]!r}, not a commit id")
    return text


def parse_candidates(output: str) -> list[str]:
    """The commits git bisect names after "The first bad commit could be any of:"."""
    _, _, rest = output.partition(CANDIDATES_HEADER)
    return [line.strip() for line in rest.splitlines() if COMMIT_RE.match(line.strip())]


def steps_left(output: str) -> int:
    match = NEXT_RE.search(output)
    return int(match.group(2)) + 1 if match else 0


# --- one step ---------------------------------------------------------------------------------

class _BuildWatch:
    """A Progress that passes events on and notes whether the bisected side was built, and how."""

    def __init__(self, progress: Progress, side: str) -> None:
        self.progress, self.side = progress, side
        self.built = False
        self.incremental = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, KernelBuilt) and self.side == "kernel" or \
                isinstance(event, StapSourceBuilt) and self.side == "stap":
            self.built = True
            self.incremental = bool(event.incremental)
        self.progress(event)


class Bisection:
    """The steps of one bisection, run in one session (one run directory)."""

    def __init__(self, request: BisectRequest, run_dir: Path, archive: Archive, progress: Progress,
                 echo: Callable[[str], None] | None = None) -> None:
        self.request = request
        self.archive = archive
        self.progress = progress
        self.run_dir = run_dir
        self.echo = echo
        self.session: Session | None = None

    def cell_at(self, commit: str) -> Cell:
        request = self.request
        if request.side == "kernel":
            kernel = kernels.resolve(replace(request.kernel, ref=commit), "--kernel", self.archive)
            stap = staps.resolve(request.stap, "--stap", self.archive)
        else:
            kernel = kernels.resolve(request.kernel, "--kernel", self.archive)
            stap = staps.resolve(replace(request.stap, ref=commit), "--stap", self.archive)
        work = stap_tests(stap, request.test_sets, self.archive, "--testsuite")
        return make_cell(kernel, stap, request.scripts, work)

    def _session(self, cell: Cell) -> Session:
        if self.session is None:
            plan = Plan((cell.kernel,), (cell.stap,), (cell,))
            self.session = Session(plan, self.run_dir, CellContext(reruns=self.request.reruns), self.archive,
                                   self.echo)
        return self.session

    def test(self, number: int, commit: str, role: str) -> StepRecord:
        """Build the bisected side at `commit` (timed apart), then run the cell."""
        cell = self.cell_at(commit)
        watch = _BuildWatch(self.progress, self.request.side)
        started = time.monotonic()
        try:
            CellImages(cell, self.archive, watch)
        except BuildVerdictError as error:
            return StepRecord(number, commit, role, "skip", first_line(str(error)),
                              round(time.monotonic() - started, 1), True, watch.incremental, 0.0,
                              reproduce_command(cell))
        build_seconds = round(time.monotonic() - started, 1)
        started = time.monotonic()
        results = self._session(cell).run(cell)
        run_seconds = round(time.monotonic() - started, 1)
        outcome, detail = judge_step(results, commit)
        return StepRecord(number, commit, role, outcome, detail, build_seconds, watch.built, watch.incremental,
                          run_seconds, reproduce_command(cell))


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def judge_step(results: list[Result], commit: str) -> tuple[str, str]:
    """The outcome a step is compared by, and its reason: one script's outcome; for test
    sets, "pass" or the failing tests and their outcomes. An error stops the bisection; so
    does a flaky test (its tries disagreed)."""
    errors = [r for r in results if r.outcome is Outcome.ERROR]
    if errors:
        raise InfraError(f"commit {commit[:12]}: {errors[0].test} is an infrastructure error, so the bisection "
                         f"stops: {first_line(errors[0].detail)}")
    flaky = [r for r in results if r.outcome is Outcome.FLAKY]
    if flaky:
        raise FlakyStep(f"commit {commit[:12]}: {flaky[0].test} is flaky (its tries disagree: "
                        f"{first_line(flaky[0].detail)}); not guessing: run it again with more --reruns, or "
                        "bisect a test that does not flake")
    if len(results) == 1:
        return results[0].outcome.value, first_line(results[0].detail)
    failing = sorted(f"{r.test}: {r.outcome.value}" for r in results if r.outcome not in PASSING)
    if not failing:
        return Outcome.PASS.value, ""
    return "fail: " + ", ".join(failing)[:500], first_line(next(r.detail for r in results if r.outcome not in PASSING))


class FlakyStep(InfraError):
    """A step whose tries gave different outcomes: the bisection stops rather than guess."""


# --- the whole bisection ----------------------------------------------------------------------

def bisect(request: BisectRequest, run_dir: Path, progress: Progress,
           echo: Callable[[str], None] | None = None) -> BisectReport:
    """Run the bisection; the report says what was found, or why it stopped."""
    started = time.monotonic()
    clone = PrivateClone(request.repo)
    try:
        return _bisect(request, clone, Bisection(request, run_dir, Archive(), progress, echo), progress, started)
    finally:
        clone.remove()


def _bisect(request: BisectRequest, clone: PrivateClone, bisection: Bisection, progress: Progress,
            started: float) -> BisectReport:
    good, bad = clone.commit(request.good, "--good"), clone.commit(request.bad, "--bad")
    if good == bad:
        raise MatrixError(f"--good {request.good} and --bad {request.bad} are the same commit ({good[:12]}): give "
                          "two different refs")
    if not clone.is_ancestor(good, bad):
        raise MatrixError(f"--good {request.good} ({good[:12]}) is not an ancestor of --bad {request.bad} "
                          f"({bad[:12]}): give the older ref as --good")
    # Steps in all, as far as known: the two ends and about log2(commits) between them at
    # first, then what git bisect says is left after each step.
    estimate = [math.ceil(math.log2(max(2, clone.count(good, bad)))) + 2]
    report = BisectReport(request.side, request.repo, request.good, request.bad, request.test, "")

    def run_step(commit: str, role: str, left: int = -1) -> StepRecord:
        number = len(report.steps) + 1
        if left >= 0:
            estimate[0] = number - 1 + left
        progress(BisectStep(number, estimate[0], commit))
        step = bisection.test(number, commit, role)
        report.steps.append(step)
        progress(BisectStep(number, estimate[0], commit, step.outcome, step.build_seconds + step.run_seconds))
        return step

    try:
        bad_end = run_step(bad, "bad end")
        if bad_end.outcome == "skip":
            raise MatrixError(f"--bad {request.bad} ({bad[:12]}) does not build, so it has no outcome to look for: "
                              f"{bad_end.detail}")
        report.target = bad_end.outcome
        good_end = run_step(good, "good end")
        if good_end.outcome == "skip":
            raise MatrixError(f"--good {request.good} ({good[:12]}) does not build: {good_end.detail}; give a "
                              "--good that builds")
        if good_end.outcome == bad_end.outcome:
            raise MatrixError(f"--good {request.good} and --bad {request.bad} both give {bad_end.outcome} for "
                              f"{request.test}: there is no change between them to bisect")
        _walk(clone, good, bad, report, run_step)
    except InfraError as error:  # FlakyStep included: stop, say why, keep the steps so far
        report.stopped = str(error)
    _conclude(clone, report, bisection)
    report.seconds = time.monotonic() - started
    progress(BisectDone(report.first_changed.commit if report.first_changed else "",
                        1 if report.first_changed else len(report.candidates), len(report.steps), report.builds,
                        round(report.seconds, 1)))
    return report


def _walk(clone: PrivateClone, good: str, bad: str, report: BisectReport,
          run_step: Callable[[str, str, int], StepRecord]) -> None:
    """git bisect from the two ends to its answer: one step per commit it asks for."""
    output = clone.bisect("start", "--no-checkout", bad, good)
    for _step in range(MAX_STEPS):
        if _answer(clone, output, report):
            return
        commit = clone.head()
        step = run_step(commit, "bisect", steps_left(output))
        verdict = "skip" if step.outcome == "skip" else "bad" if step.outcome == report.target else "good"
        output = clone.bisect(verdict, commit)
    raise InfraError(f"git bisect asked for more than {MAX_STEPS} commits")


def _answer(clone: PrivateClone, output: str, report: BisectReport) -> bool:
    """Whether git bisect's output names the first commit (or the candidates skips leave)."""
    found = FIRST_RE.search(output)
    if found:
        report.first_changed = clone.info(found.group(1))
        return True
    if CANDIDATES_HEADER in output:
        report.candidates = [clone.info(c) for c in parse_candidates(output)[:50]]
        return True
    if not NEXT_RE.search(output):
        raise InfraError(f"git bisect said something unexpected: {first_line(output)[:200]}")
    return False


def _conclude(clone: PrivateClone, report: BisectReport, bisection: Bisection) -> None:
    """The outcomes before and after the first changed commit, and the two reproducers."""
    if not report.first_changed:
        return
    commit = report.first_changed.commit
    report.parent = clone.parent(commit)
    by_commit = {s.commit: s for s in report.steps}
    report.after = by_commit.get(commit)
    report.before = by_commit.get(report.parent) or next((s for s in report.steps if s.role == "good end"), None)
    report.reproduce_commit = reproduce_command(bisection.cell_at(commit))
    report.reproduce_parent = reproduce_command(bisection.cell_at(report.parent))


# --- output -----------------------------------------------------------------------------------

def step_rows(report: BisectReport) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for s in report.steps:
        build = "cached" if not s.built and s.outcome != "skip" else f"{s.build_seconds:.0f}"
        # A build that failed reports no build event: whether it was incremental is unknown.
        rows.append((str(s.step), s.commit[:12], s.role, s.outcome, build,
                     "-" if s.outcome == "skip" or not s.built else "yes" if s.incremental else "no",
                     f"{s.run_seconds:.0f}" if s.outcome != "skip" else "-"))
    return rows


STEP_HEADER = ("step", "commit", "role", "outcome", "build s", "incremental", "run s")


def render_text(report: BisectReport) -> str:
    lines = [(f"bisect {report.side} {gitrepo.mask(report.repo)} {report.good}..{report.bad}, test {report.test}: "
              f"looking for the first commit that gives {report.target or '?'}")]
    lines += _finding_lines(report, terminal_line)
    widths = [max(len(h), *(len(r[i]) for r in step_rows(report))) if report.steps else len(h)
              for i, h in enumerate(STEP_HEADER)]
    lines.append("")
    lines.append("  ".join(h.ljust(w) for h, w in zip(STEP_HEADER, widths, strict=True)))
    for row in step_rows(report):
        lines.append("  ".join(terminal_line(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    lines.append(f"{len(report.steps)} step(s), {report.builds} build(s), {report.seconds:.0f} s in all")
    if report.reproduce_commit:
        lines += ["reproduce:", f"  {report.reproduce_commit}", f"  {report.reproduce_parent}"]
    return "\n".join(lines) + "\n"


def _finding_lines(report: BisectReport, escape: Callable[[str], str]) -> list[str]:
    if report.stopped:
        return [f"stopped: {escape(report.stopped)}"]
    if report.candidates:
        return ["commits that do not build hide the answer: the first changed commit is one of "
                + ", ".join(f"{c.commit} ({escape(c.subject)})" for c in report.candidates)]
    found = report.first_changed
    if not found:
        return ["no answer"]
    lines = [f"first changed commit: {found.commit}", f"  subject: {escape(found.subject)}",
             f"  author: {escape(found.author)}, date {escape(found.date)}"]
    if report.before:
        lines.append(f"  before ({report.parent[:12]}): {report.before.outcome}"
                     + (f": {escape(report.before.detail)}" if report.before.detail else ""))
    if report.after:
        lines.append(f"  after: {report.after.outcome}" + (f": {escape(report.after.detail)}" if report.after.detail
                                                          else ""))
    if report.skipped:
        lines.append(f"  not judged (did not build): {', '.join(c[:12] for c in report.skipped)}")
    return lines


def render_markdown(report: BisectReport) -> str:
    """For a CI step summary: the finding, the step table, the reproducers."""
    lines = [f"## stapmatrix bisect: {markdown_inline(report.test)}", ""]
    lines += [f"- {line.strip()}" if line.startswith("  ") else line
              for line in _finding_lines(report, markdown_inline)]
    lines += ["", "| " + " | ".join(STEP_HEADER) + " |", "| " + " | ".join("---" for _ in STEP_HEADER) + " |"]
    for row in step_rows(report):
        lines.append("| " + " | ".join(markdown_inline(c) for c in row) + " |")
    lines += ["", f"{len(report.steps)} step(s), {report.builds} build(s), {report.seconds:.0f} s in all"]
    if report.reproduce_commit:
        lines += ["", "```sh", report.reproduce_commit, report.reproduce_parent, "```"]
    return "\n".join(lines) + "\n"


def write_json(report: BisectReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_json(), indent=2) + "\n")

