"""Running systemtap's examples (harness/examples.py) for one cell: compile where it is fast,
run where it must.

1. The examples tree is copied into the cell's work directory (/work/examples in the cell
   container), so commands that write where they run write there.
2. test_support, then test_check, run as written (`sh -c`, from the example's directory, as
   check.exp does) in a networkless cell container, several at once: `stap` is the column's
   build with `-r KVER` (guest/remote-bin/stap), and stap's own cache is the one the scripts
   use (modules.stap_cache_dir), so a module compiled once is not compiled again. A check's
   verdict is a verdict about the example: it is cached, keyed by the systemtap image's
   content, the kernel, the examples tree and the command; an infrastructure failure is not.
   A failed test_support makes the example untested (skip), as in check.exp.
3. test_installcheck runs as written in the same container with `stap --remote` to a guest
   serving stapsh (harness/stapsh_guest.py): passes 1-4 in the container (cached there when
   the check built the same module), the module in the guest. The tests are shared out among
   the guests the cell may run at once. A guest that dies during a test is a `crash` (the
   console's oops excerpt) and is booted again; a test over its time limit is a `timeout`
   (and the guest is booted again); a console splat or new taint flags while it ran make it
   `fail-load`. A run-time failure is tried again (`reruns`); tries that differ are `flaky`.
   As in check.exp, an example whose check failed is not run.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docker.models.containers import Container

from harness import cache, docker_env
from harness.errors import InfraError
from harness.examples import ExampleCorpus, ExampleTest, example_test_name
from harness.guest import TAINT_ALLOWED, crash_excerpt, guru_mode, new_taint
from harness.judge import splat_lines
from harness.kernel_store import KernelTree
from harness.logs import INFRA_FAILURE_RE, PASS_FAILED_RE, classify_compile_failure, first_error_lines
from harness.modules import (
    STAP_CACHE_IN_CONTAINER,
    cell_container,
    confirm_failed_queries,
    forget_unconfirmed_failed_queries,
    stap_cache_dir,
)
from harness.outcomes import Outcome, over_tries
from harness.progress import Progress, Step
from harness.settings import cache_dir
from harness.stapsh_guest import StapshGuest, deal, in_parallel

logger = logging.getLogger(__name__)

VERDICTS_VERSION = "example-checks-v1"
SUPPORT_LIMIT_S = 300
CHECK_LIMIT_S = 1800  # the first compile for a kernel builds its tracepoint queries: minutes
INSTALLCHECK_LIMIT_S = 600  # a command that does not end by itself (no -T, no -c) is stopped here
RERUN_OUTCOMES = frozenset({Outcome.FAIL_LOAD, Outcome.CRASH, Outcome.TIMEOUT})
EXAMPLES_IN_CONTAINER = "/work/examples"

@dataclass
class ExampleVerdict:
    test: ExampleTest
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0
    cached: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)
    tries: list[tuple[Outcome, str]] = field(default_factory=list)  # each try, when one was tried again


@dataclass(frozen=True)
class ExampleCell:
    """What the examples of one cell run with."""

    cell_image: str
    runner_image: str
    kernel: KernelTree
    corpus: ExampleCorpus
    work_dir: Path  # the cell's guest directory: /work in its containers
    accel: str
    stap_key: str  # harness/images.content_key of the systemtap image
    stap_path: str  # the real stap in that image
    jobs: int  # compiles and guests at once
    reruns: int


def _artifact_dir(cell: ExampleCell, test: ExampleTest) -> Path:
    path = cell.work_dir / "examples-results" / test.example / test.kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def _record(cell: ExampleCell, test: ExampleTest, command: str, output: str, try_number: int = 1,
            console: str | None = None) -> dict[str, str]:
    directory = _artifact_dir(cell, test) / ("" if try_number == 1 else f"try-{try_number}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "command").write_text(f"cd {EXAMPLES_IN_CONTAINER}/{test.directory} && {command}\n")
    (directory / "output").write_text(output)
    files = {"command": str(directory / "command"), "output": str(directory / "output")}
    if console is not None:
        (directory / "console").write_text(console)
        files["console"] = str(directory / "console")
    return files


def stap_options_dir(cell: ExampleCell, name: str, options: list[str]) -> str:
    """A SYSTEMTAP_DIR (in the container) whose `rc` gives every stap `options`, and whose
    cache is the cell's shared one: stap reads $SYSTEMTAP_DIR/rc before its own arguments
    (systemtap PR13520, main.cxx), so the commands run as written with the real stap on PATH.
    A wrapper named `stap` first on PATH would be what `process("stap")`, `-d $(which stap)`
    and `-c "stap ..."` examples find, instead of the stap they mean to probe."""
    directory = cell.work_dir / "stapdirs" / name
    directory.mkdir(parents=True, exist_ok=True)
    # Written whole or not at all: another compile thread's stap may be reading it right now.
    cache.atomic_write_bytes(directory / "rc", (" ".join(shlex.quote(o) for o in options) + "\n").encode())
    link = directory / "cache"
    try:
        link.symlink_to(f"{STAP_CACHE_IN_CONTAINER}/cache")
    except FileExistsError:  # made by an earlier test, or by another compile thread just now
        if not link.is_symlink():
            raise
    return f"/work/stapdirs/{name}"


def _sh(container: Container, test: ExampleTest, command: str, limit_s: float,
        stap_dir: str) -> tuple[int, str, bool, float]:
    started = time.monotonic()
    code, output, timed_out = docker_env.exec_timed(
        container, ["sh", "-c", command], what=f"{test.name} ({command[:80]})", timeout_s=limit_s,
        workdir=f"{EXAMPLES_IN_CONTAINER}/{test.directory}", environment={"SYSTEMTAP_DIR": stap_dir})
    return code, output.decode("utf-8", "replace"), timed_out, time.monotonic() - started


def _prepare_tree(cell: ExampleCell, container: Container) -> None:
    target = cell.work_dir / "examples"
    shutil.rmtree(target, ignore_errors=True)
    if cell.corpus.host_dir:
        shutil.copytree(cell.corpus.host_dir, target, symlinks=True)
        return
    code, output = docker_env.exec_with_limit(container, ["cp", "-a", cell.corpus.image_dir, EXAMPLES_IN_CONTAINER],
                                              what="copying the examples tree", timeout_s=300)
    if code != 0:
        raise InfraError(f"copying {cell.corpus.image_dir} in the systemtap image failed: "
                         f"{output.decode(errors='replace')[-400:]}")


# --- test_support and test_check, in the container ---------------------------------------------

def _verdict_path(cell: ExampleCell, kind: str, test: ExampleTest, command: str) -> Path:
    parts = (VERDICTS_VERSION, kind, cell.stap_key, cell.kernel.key, cell.corpus.key, test.example, command)
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    return cache_dir() / "example-checks" / f"{digest}.json"


def _compile_only(cell: ExampleCell, container: Container, test: ExampleTest, kind: str, command: str,
                  limit_s: float) -> tuple[int, str, bool, float, bool]:
    """(exit code, output, timed out, seconds, cached) of a compile-only command: a verdict
    about the example, cached by its inputs unless the machine decided it (out of time,
    killed, out of memory or disk)."""
    entry = _verdict_path(cell, kind, test, command)
    known = cache.read_entry(entry)
    if isinstance(known, dict) and {"code", "output"} <= set(known) \
            and not docker_env.runtime_exec_failed(int(known["code"]), str(known["output"])):  # cached before that was caught
        return int(known["code"]), str(known["output"]), False, 0.0, True
    stap_dir = stap_options_dir(cell, "local", ["-r", cell.kernel.release])
    code, output, timed_out, seconds = _sh(container, test, command, limit_s, stap_dir)
    stap_cache = stap_cache_dir(cell.stap_key, cell.kernel)
    retried = forget_unconfirmed_failed_queries(stap_cache, output) if code != 0 and not timed_out else []
    if retried:  # see modules.UNRESOLVED_PROBE_RE: a failed tracepoint query may have been transient
        code, output, timed_out, more = _sh(container, test, command, limit_s, stap_dir)
        seconds += more
        confirm_failed_queries(stap_cache, retried)
    if not timed_out and code not in (137, 139) and not INFRA_FAILURE_RE.search(output):
        cache.write_entry(entry, {"code": code, "output": output})
    return code, output, timed_out, seconds, False


def _machine_failure(code: int, output: str) -> str:
    """Why a command failed for a reason outside the example, or ""."""
    found = INFRA_FAILURE_RE.search(output)
    if found:
        return found.group(0)
    return {137: "killed (SIGKILL: out of memory, or by hand)", 139: "crashed (SIGSEGV)"}.get(code, "")


def _support(cell: ExampleCell, container: Container, test: ExampleTest) -> ExampleVerdict | None:
    """None when the example may run (no test_support, or it passed); else the skip (or the
    error) that each of its tests gets."""
    if not test.support:
        return None
    code, output, timed_out, seconds, cached = _compile_only(cell, container, test, "support", test.support,
                                                             SUPPORT_LIMIT_S)
    if code == 0:
        return None
    artifacts = _record(cell, test, test.support, output)
    machine = "timed out" if timed_out else _machine_failure(code, output)
    if machine:
        return ExampleVerdict(test, Outcome.ERROR, f"test_support `{test.support}` failed for a reason outside the "
                              f"example ({machine})", seconds, cached, artifacts)
    detail = f"untested: test_support `{test.support}` failed (exit {code}), as check.exp leaves the example untested"
    return ExampleVerdict(test, Outcome.SKIP, detail + (f"\n{first_error_lines(output)}" if output.strip() else ""),
                          seconds, cached, artifacts)


def _support_told(cell: ExampleCell, container: Container, test: ExampleTest,
                  progress: Progress) -> ExampleVerdict | None:
    """_support, with a progress line for each example that has a test_support (46 of 5.6-1's
    examples, some of them full compiles: minutes before the first check)."""
    started = time.monotonic()
    verdict = _support(cell, container, test)
    if test.support:
        said = ("passes" if verdict is None else "fails: the example is untested" if verdict.outcome is Outcome.SKIP
                else f"{verdict.outcome.value}: {verdict.detail.splitlines()[0]}")
        took = "cached" if verdict is not None and verdict.cached else f"{time.monotonic() - started:.0f} s"
        progress(Step(f"{cell.kernel.release}: examples/{test.example}: test_support {said} ({took})"))
    return verdict


def _check(cell: ExampleCell, container: Container, test: ExampleTest) -> ExampleVerdict:
    code, output, timed_out, seconds, cached = _compile_only(cell, container, test, "check", test.command,
                                                             CHECK_LIMIT_S)
    artifacts = _record(cell, test, test.command, output)
    if code == 0:
        return ExampleVerdict(test, Outcome.PASS, "", seconds, cached, artifacts)
    if timed_out:
        return ExampleVerdict(test, Outcome.TIMEOUT, f"still compiling after {CHECK_LIMIT_S} s; stopped\n"
                              + first_error_lines(output), seconds, cached, artifacts)
    machine = _machine_failure(code, output)
    if machine:
        return ExampleVerdict(test, Outcome.ERROR, f"failed for a reason outside the example ({machine}); not cached",
                              seconds, cached, artifacts)
    return ExampleVerdict(test, classify_compile_failure(output), first_error_lines(output), seconds, cached, artifacts)


# --- test_installcheck, in the guests -----------------------------------------------------------

# What stap --remote prints when its own machinery fails, not the example (systemtap remote.cxx;
# "Failed reading staprun_args_stapsh": sending the module or its command line to stapsh
# failed, and pass 5 went on without them, since main.cxx drops pass_5_1's status (PR30321,
# commit be7e131bd); seen about 1 in 60 runs here, and always for a module over stapsh's
# 32 MB limit before harness/stapsh_relay.py sent such modules in parts).
REMOTE_FAILURE_MARKS = ("error connecting to socket", "error sending hello to stapsh",
                        "error receiving hello from stapsh", "stapsh file ERROR: no reply",
                        "stapsh run ERROR: no reply", "invalid data command from stapsh",
                        "Failed reading staprun_args_stapsh", "Failed writing staprun_args_stapsh")
REMOTE_RETRIES = 2  # tries lost to the remote machinery before the test is an error
# systemtap's overload guard (runtime STP_OVERLOAD): a module whose probes use too large a share
# of the CPU is stopped. Under TCG every probe costs 10-50 times what it costs on hardware.
OVERLOAD_RE = re.compile(r"probe overhead \([0-9]+ cycles\) exceeded threshold")


def remote_failure(output: str) -> str:
    return next((mark for mark in REMOTE_FAILURE_MARKS if mark in output), "")


def _judge_run(code: int, output: str, timed_out: bool, console: str, taint: str, guest_died: bool,
               limit_s: float, accel: str) -> tuple[Outcome, str]:
    if guest_died:
        return Outcome.CRASH, crash_excerpt(console) or "the guest ended during this test; console tail:\n" + \
            "\n".join(console.splitlines()[-25:])
    if timed_out:
        return Outcome.TIMEOUT, f"still running after {limit_s:.0f} s; stopped\n" + first_error_lines(output)
    if code != 0:
        failed = PASS_FAILED_RE.search(output)
        if failed and failed.group(1) != "5":
            return classify_compile_failure(output), first_error_lines(output)
        if accel == "tcg" and OVERLOAD_RE.search(output):
            return Outcome.ERROR, ("systemtap's overload guard stopped the module: under TCG the guest runs its "
                                   "probes 10-50 times slower than hardware, so this says nothing about the "
                                   "example; run under KVM for a verdict\n" + first_error_lines(output))
        return Outcome.FAIL_LOAD, f"exit {code}:\n" + first_error_lines(output)
    splat = splat_lines(console, [])
    if splat:
        return Outcome.FAIL_LOAD, "kernel splat while the example ran:\n" + splat
    if taint:
        return Outcome.FAIL_LOAD, f"the example left new kernel taint flags {taint} ({TAINT_ALLOWED})"
    return Outcome.PASS, ""


EVALUATE_WAIT_S = 60.0  # the guest runs the substitution within 10 s; TCG and a busy host add to it


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []


# `$$` as a word of its own (`-x $$`, `plimit.stp $$`): the PID of the shell check.exp starts
# for the command on the machine under test, a process alive while the example runs.
SHELL_PID_RE = re.compile(r"(?<![\w$\\])\$\$(?![\w$])")
GUEST_SHELL_PID = "1"  # the guest's init: a busybox sh that lives as long as the guest


def guest_command(test: ExampleTest) -> str:
    """The installcheck command as it runs under stap --remote. Its shell is the container's,
    so a `$$` it passes as an argument would name a process of the container, which the guest's
    kernel does not have; it names the guest's shell instead, PID 1 (process/pfiles, plimit,
    psig: `-x $$`). The record's command file shows the command as run."""
    if "$$" not in _words(test.command):
        return test.command
    return SHELL_PID_RE.sub(GUEST_SHELL_PID, test.command)


# A command substitution that reads /proc (`...` or $(...), not nested): check.exp's shell
# evaluates it on the machine under test (io/mbrwatch: the first disk of /proc/partitions).
SUBSTITUTION_RE = re.compile(r"`(?P<backticks>[^`]*/proc/[^`]*)`|\$\((?P<dollar>[^()]*/proc/[^()]*)\)")
Evaluate = Callable[[str], str | None]


def _quoting_at(command: str, end: int) -> str:
    """The shell quoting in force at `end`: "", "'" or '"'."""
    state, escaped = "", False
    for char in command[:end]:
        if escaped:
            escaped = False
        elif char == "\\" and state != "'":
            escaped = True
        elif char in "'\"" and state in ("", char):
            state = "" if state == char else char
    return state


def _as_written(printed: str, quoting: str) -> str:
    """What the shell put in the substitution's place, written so that the container's shell
    puts it there again: trailing newlines dropped, as a substitution does; unquoted, split
    into words (not globbed)."""
    text = printed.rstrip("\n")
    if quoting == '"':
        return re.sub(r'([\\$`"])', r"\\\1", text)
    return " ".join(shlex.quote(word) for word in text.split()) or "''"


def in_guest(command: str, evaluate: Evaluate) -> tuple[str, str]:
    """The command with each substitution that reads /proc replaced by what it printed in
    the guest (`evaluate`: GuestControl.evaluate), and why it cannot run, or "". Under stap
    --remote the command's shell is the container's, whose /proc is the host's."""
    why: list[str] = []

    def replace(match: re.Match[str]) -> str:
        quoting = _quoting_at(command, match.start())
        if quoting == "'":
            return match[0]  # a literal, not a substitution
        inner = match["backticks"] or match["dollar"]
        printed = evaluate(inner)
        if printed is None:
            why.append(f"the guest did not evaluate its command substitution `{inner}`")
        elif not printed.strip():
            why.append(f"its command substitution `{inner}` printed nothing in the guest")
        return _as_written(printed or "", quoting)

    resolved = SUBSTITUTION_RE.sub(replace, command)
    return resolved, "; ".join(why)


def _install_try(cell: ExampleCell, guest: StapshGuest, container: Container, test: ExampleTest, command: str,
                 try_number: int) -> tuple[Outcome, str, float, dict[str, str], str]:
    """One run of the command: (outcome, detail, seconds, its files, why the remote machinery
    failed or "")."""
    mark = guest.console_mark()
    seq, before = guest.taint()
    stap_dir = stap_options_dir(cell, guest.name, ["-r", cell.kernel.release,
                                                   f"--remote=unix:/work/{guest.socket.name}"])
    started = time.monotonic()
    code, raw, ended = docker_env.exec_watched(
        container, ["sh", "-c", command], what=test.name, timeout_s=INSTALLCHECK_LIMIT_S,
        stop_when=lambda text: bool(remote_failure(text)),
        workdir=f"{EXAMPLES_IN_CONTAINER}/{test.directory}", environment={"SYSTEMTAP_DIR": stap_dir})
    seconds, output = time.monotonic() - started, raw.decode("utf-8", "replace")
    died = not guest.alive()
    console = guest.console_since(mark)
    files = _record(cell, test, command, output, try_number, console)
    lost = remote_failure(output) if not died else ""
    if lost:
        guest.boot()  # stapsh may be stuck in the session stap left
        return Outcome.ERROR, f"stap --remote failed on its own: {lost}", seconds, files, lost
    taint = ""
    if not died and ended != "timeout":
        _, after = guest.taint(seq)
        taint = new_taint(before, after, guru_mode(_words(test.command)))
        # stap --remote exits 0 whatever staprun did (systemtap remote.cxx: stapsh::finish()
        # returns 0); the guest's stapsh exits with staprun's status and init logs it.
        failed = [n for n in guest.stapsh_exits(mark, 0.0 if PASS_FAILED_RE.search(output) else 5.0) if n]
        if code == 0 and failed:
            code = failed[-1]
            output += f"\n(staprun exited {code} in the guest; stap --remote does not pass that on)\n"
        console = guest.console_since(mark)
    outcome, detail = _judge_run(code, output, ended == "timeout", console, taint, died, INSTALLCHECK_LIMIT_S,
                                 cell.accel)
    if died or ended == "timeout" or taint:
        # A fresh guest for the tests after it, and for its own retry: a taint flag is sticky,
        # so in the same guest a retry (or the next test doing the same) could not show it.
        guest.boot()
    return outcome, detail, seconds, files, ""


def _installcheck(cell: ExampleCell, guest: StapshGuest, container: Container, test: ExampleTest) -> ExampleVerdict:
    command = guest_command(test)
    if SUBSTITUTION_RE.search(command):
        control = guest.relay.control if guest.relay else None
        if control is None:
            raise InfraError(f"{test.name}: the guest has no control port to evaluate the command's substitution")
        command, why = in_guest(command, lambda inner: control.evaluate(inner, EVALUATE_WAIT_S))
        if why:
            return ExampleVerdict(test, Outcome.SKIP, f"not run: {why}", artifacts=_record(cell, test, command, ""))
    tries: list[tuple[Outcome, str]] = []
    lost: list[str] = []
    seconds = 0.0
    artifacts: dict[str, str] = {}
    try_number = 0
    while len(tries) < cell.reruns + 1:
        try_number += 1
        outcome, detail, took, files, remote = _install_try(cell, guest, container, test, command, try_number)
        seconds += took
        artifacts = artifacts or files
        if remote:
            lost.append(remote)
            if len(lost) > REMOTE_RETRIES:
                return ExampleVerdict(test, Outcome.ERROR, f"stap --remote failed on its own in {len(lost)} tries "
                                      f"({remote}): no verdict about the example", seconds, False, artifacts)
            continue  # not a try of the example: its module never ran
        tries.append((outcome, detail))
        if outcome not in RERUN_OUTCOMES:
            break
    outcome, detail = over_tries(tries, "runs")
    if lost:
        detail = (detail + "\n" if detail else "") + f"(and {len(lost)} run(s) lost to stap --remote itself: {lost[0]})"
    return ExampleVerdict(test, outcome, detail, seconds, False, artifacts, tries if len(tries) > 1 else [])


def _run_in_guests(cell: ExampleCell, tests: list[ExampleTest], progress: Progress,
                   build_ids: list[str]) -> dict[str, ExampleVerdict]:
    verdicts: dict[str, ExampleVerdict] = {}

    def serve(index: int, share: list[ExampleTest]) -> None:
        guest = StapshGuest(cell.runner_image, cell.work_dir, f"stapsh-examples-{index}", cell.accel)
        try:
            with cell_container(cell.cell_image, cell.work_dir, cell.kernel, stap_cache_dir(cell.stap_key, cell.kernel),
                                {"LANG": "C"}) as container:
                guest.boot()
                build_ids.append(guest.build_id)
                for number, test in enumerate(share, 1):
                    progress(Step(f"{cell.kernel.release}: {test.name} (guest {index}, {number} of {len(share)})"))
                    verdicts[test.name] = _installcheck(cell, guest, container, test)
        finally:
            guest.stop()

    in_parallel(serve, deal(tests, cell.jobs))
    return verdicts


def run_examples(cell: ExampleCell, tests: tuple[ExampleTest, ...], progress: Progress,
                 before_guests: Callable[[], None] = lambda: None) -> tuple[list[ExampleVerdict], str]:
    """A verdict for every test, in the order given, and the build-id the guests' kernel
    reported ("" when no guest booted). `before_guests` runs once the compiles are done and
    before the first guest boots (the caller packs the stapsh initramfs there)."""
    verdicts: dict[str, ExampleVerdict] = {}
    first_of = {t.example: t for t in reversed(tests)}  # the example's first test runs its test_support
    with cell_container(cell.cell_image, cell.work_dir, cell.kernel, stap_cache_dir(cell.stap_key, cell.kernel),
                        {"LANG": "C"}) as container:
        _prepare_tree(cell, container)
        progress(Step(f"{cell.kernel.release}: {len(tests)} example test(s) from {cell.corpus.origin}; "
                      f"compiling {cell.jobs} at a time"))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, cell.jobs))
        try:
            unsupported = dict(zip(first_of, pool.map(lambda t: _support_told(cell, container, t, progress),
                                                      first_of.values()), strict=True))
            checks = [t for t in tests if t.kind == "check" and unsupported[t.example] is None]
            # Told as each one ends, not in order: one check can compile for minutes
            # (errsnoop.stp probes every syscall's return: 8 min of cc1 here).
            futures = [pool.submit(_check, cell, container, t) for t in checks]
            for future in concurrent.futures.as_completed(futures):
                verdict = future.result()
                verdicts[verdict.test.name] = verdict
                progress(Step(f"{cell.kernel.release}: {verdict.test.name}: {verdict.outcome.value} "
                              f"({'cached' if verdict.cached else f'{verdict.seconds:.0f} s'})"))
        finally:
            # On Ctrl-C or an error, don't wait for the compiles in flight (up to their time
            # limit): leaving the container's block removes it, which ends them.
            pool.shutdown(wait=False, cancel_futures=True)
    to_run = []
    for test in tests:
        reason = unsupported[test.example]
        if reason is not None:
            verdicts[test.name] = ExampleVerdict(test, reason.outcome, reason.detail, 0.0, reason.cached,
                                                 reason.artifacts)
        elif test.kind == "installcheck":
            check = verdicts.get(example_test_name(test.example, "check"))
            if check is not None and check.outcome is not Outcome.PASS:
                first = check.detail.splitlines()[0] if check.detail else ""
                verdicts[test.name] = ExampleVerdict(
                    test, Outcome.SKIP, f"not run: its check is {check.outcome.value} ({first}); check.exp runs an "
                    "example only after its build passed", artifacts=_record(cell, test, test.command, ""))
            else:
                to_run.append(test)
    build_ids: list[str] = []
    if to_run:
        before_guests()
        verdicts.update(_run_in_guests(cell, to_run, progress, build_ids))
    return [verdicts[t.name] for t in tests], next((b for b in build_ids if b), "")
