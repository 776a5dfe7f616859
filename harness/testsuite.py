"""systemtap's own testsuite (DejaGnu) against the guest kernel, for source-built columns.

Why `stap --remote` and not DejaGnu inside the guest: the testsuite compiles every module
with stap and gcc against headers and vmlinux debuginfo, which under TCG would run 10-50
times slower and need a multi-gigabyte guest root. systemtap has its own remote mechanism:
`stap --remote unix:SOCKET` compiles on the host for the kernel that `stapsh` reports and
runs pass 5 through stapsh in the guest (harness/stapsh_guest.py). So DejaGnu runs in a
container of the cell image (native speed) with a `stap` wrapper that adds `--remote`
(guest/remote-bin/stap); tests whose own work would happen in that container instead of the
guest are not run (harness/dejagnu_sets.py says which and why).

The files are shared out among as many guests as the cell may run at once, each guest with
a container of its own (DejaGnu writes its .sum into the source tree). Each file runs on its
own (`make installcheck RUNTESTFLAGS=FILE`) in a freshly booted guest, so a file that panics
or hangs the guest is named, its lines kept, and the next file starts on a clean kernel. Each
DejaGnu result line (`PASS: name`) becomes one outcome; a splat or new taint while a file ran is one more,
`testsuite:FILE: kernel`. A file with a failure is run again in a fresh boot (`reruns`, as
scripts are), and a line whose outcome differs between tries is `flaky` (file_verdicts). The
`.sum` and `.log` files of every try are kept with the cell's artifacts.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from docker.models.containers import Container

from harness import docker_env
from harness.dejagnu_sets import DejaGnuFile
from harness.guest import TAINT_ALLOWED, crash_excerpt, forced_stap_module, new_taint
from harness.judge import splat_lines
from harness.kernel_store import KernelTree
from harness.modules import TESTS_PATH, cell_container, stap_cache_dir, tests_environment
from harness.outcomes import Outcome, over_tries
from harness.progress import Progress, Step
from harness.stapsh_guest import StapshGuest, deal, in_parallel

logger = logging.getLogger(__name__)

SOURCE_TREE = "/usr/local/src/systemtap"
FILE_LIMIT_S = 1800  # one .exp file: a few minutes; a file that takes this long is stopped
SUM_LINE_RE = re.compile(r"^(PASS|FAIL|XPASS|XFAIL|KPASS|KFAIL|UNTESTED|UNSUPPORTED|UNRESOLVED|ERROR): (.*)$")


# What a test adds to its name from its run: counts in parentheses at the end
# ("self-unwind-ensure-exact (40)", then "(36)" in the next try; "backtrace (3 43)",
# "wakeup (8,2,8,1)"). Not part of what the test is: `diff` and the tries match without it.
RUN_COUNTS_RE = re.compile(r"\s*\([0-9][0-9 ,./:-]*\)$")


@dataclass(frozen=True)
class DejaGnuResult:
    exp: str  # the .exp file the line came from
    status: str  # PASS, FAIL, KFAIL, ...
    name: str

    @property
    def test(self) -> str:
        """The name the record goes by: the line's name without the counts of its run."""
        return RUN_COUNTS_RE.sub("", self.name) or self.name

    @property
    def pytest_outcome(self) -> str:
        """pass, fail, xfail or skip."""
        return {
            "PASS": "pass", "XPASS": "fail", "KPASS": "pass",
            "FAIL": "fail", "ERROR": "fail", "UNRESOLVED": "fail",
            "XFAIL": "xfail", "KFAIL": "xfail",
            "UNTESTED": "skip", "UNSUPPORTED": "skip",
        }[self.status]


def parse_sum(text: str) -> list[DejaGnuResult]:
    """Result lines of a DejaGnu .sum file, each with the .exp file it belongs to."""
    results = []
    exp = ""
    for line in text.splitlines():
        if line.startswith("Running ") and line.rstrip().endswith(".exp ..."):
            exp = line.split()[1].split("/testsuite/", 1)[-1]
            continue
        match = SUM_LINE_RE.match(line)
        if match:
            results.append(DejaGnuResult(exp, match.group(1), match.group(2).strip()))
    return results


@dataclass
class FileRun:
    """What one .exp file gave: its DejaGnu lines, and what the guest did meanwhile."""

    exp: str
    lines: list[DejaGnuResult] = field(default_factory=list)
    crash: str = ""  # the guest died while it ran: the console's crash excerpt
    timed_out: bool = False
    make_exit: int = 0
    kernel_problem: str = ""  # a splat or new taint while it ran
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)
    retries: list[FileRun] = field(default_factory=list)  # the file again, each in a fresh boot, after a failure

    @property
    def failed(self) -> bool:
        """A failure at run time, worth a second try: a failing line, a crash, a timeout, a
        splat or new taint (not a file that gave no line at all: that is no verdict)."""
        return bool(self.crash or self.timed_out or self.kernel_problem
                    or any(line.pytest_outcome == "fail" for line in self.lines))


def _run_file(guest: StapshGuest, runner: Container, exp: str, out: Path, attempt: int = 1) -> FileRun:
    run = FileRun(exp)
    mark = guest.console_mark()
    seq, before = guest.taint()
    command = ["make", "-C", f"{SOURCE_TREE}/testsuite", "installcheck",
               f"SYSTEMTAP_PATH={TESTS_PATH.rstrip(':')}:/opt/systemtap/bin", f"RUNTESTFLAGS={exp}"]
    started = time.monotonic()
    run.make_exit, output, run.timed_out = docker_env.exec_timed(
        runner, command, what=f"systemtap's testsuite ({exp})", timeout_s=FILE_LIMIT_S,
        environment={"STAPMATRIX_STAPSH": f"/work/{guest.socket.name}",
                     "STAPMATRIX_CONSOLE": f"/work/{guest.console_path.name}"})
    run.seconds = time.monotonic() - started
    directory = out / (exp.replace("/", "__") + (f".try{attempt}" if attempt > 1 else ""))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "make.log").write_bytes(output)
    run.artifacts["make_log"] = str(directory / "make.log")
    for name in ("systemtap.sum", "systemtap.log"):
        copy_code, copied = docker_env.exec_with_limit(runner, ["cat", f"{SOURCE_TREE}/testsuite/{name}"],
                                                       what=f"reading {name}", timeout_s=120)
        if copy_code == 0:
            (directory / name).write_bytes(copied)
            run.artifacts[name] = str(directory / name)
    console = guest.console_since(mark)
    (directory / "console").write_text(console)
    run.artifacts["console"] = str(directory / "console")
    if (directory / "systemtap.sum").exists():
        run.lines = parse_sum((directory / "systemtap.sum").read_text(errors="replace"))
    if not guest.alive():
        run.crash = crash_excerpt(console) or "the guest ended while this file ran; console tail:\n" + \
            "\n".join(console.splitlines()[-25:])
        return run
    splat = splat_lines(console, [])
    if splat:
        run.kernel_problem = "kernel splat while this file ran:\n" + splat
    elif not run.timed_out:
        _, after = guest.taint(seq)
        taint = new_taint(before, after, guru=forced_stap_module(console))
        if taint:
            run.kernel_problem = f"the kernel gained taint flags {taint} ({TAINT_ALLOWED}) while this file ran"
    return run


def run_testsuite(cell_image: str, runner_image: str, kernel: KernelTree, files: tuple[DejaGnuFile, ...],
                  guest_dir: Path, accel: str, stap_key: str, stap_path: str, guests: int, reruns: int,
                  progress: Progress) -> list[FileRun]:
    """Every runnable file of `files` against guests serving stapsh (their initramfs packed
    already: modules.pack_guest with_stapsh), `guests` at a time; one FileRun each, with the
    file's tries in fresh boots after a failure (up to `reruns` more, as scripts get)."""
    runnable = [f.path for f in files if not f.host_bound]
    out = guest_dir / "testsuite"
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, FileRun] = {}

    def serve(index: int, share: list[str]) -> None:
        guest = StapshGuest(runner_image, guest_dir, f"stapsh-dejagnu-{index}", accel)
        try:
            with cell_container(cell_image, guest_dir, kernel, stap_cache_dir(stap_key, kernel),
                                tests_environment(stap_path, kernel), TESTS_PATH) as runner:
                for exp in share:
                    # A fresh guest for every file: the next file starts on a clean kernel,
                    # whatever the last one left loaded, tainted or stuck. A boot is 10-20 s
                    # under TCG. (Before the relay waited for init's `ready`, this also hid a
                    # stap whose hello a departing stapsh had swallowed: stapsh_relay.py.)
                    guest.boot()
                    progress(Step(f"{kernel.release}: testsuite {exp} (guest {index})"))
                    first = results[exp] = _run_file(guest, runner, exp, out)
                    for attempt in range(2, reruns + 2):
                        if not (first.retries or [first])[-1].failed:
                            break
                        guest.boot()
                        progress(Step(f"{kernel.release}: testsuite {exp} again in a fresh boot (try {attempt}, "
                                      f"guest {index})"))
                        first.retries.append(_run_file(guest, runner, exp, out, attempt))
        finally:
            guest.stop()

    in_parallel(serve, deal(runnable, guests))
    return [results[exp] for exp in runnable if exp in results]


DEJAGNU_OUTCOME = {"pass": Outcome.PASS, "fail": Outcome.FAIL_OUTPUT, "xfail": Outcome.XFAIL, "skip": Outcome.SKIP}
TryVerdict = tuple[Outcome, str]  # one try's outcome of a DejaGnu line or file, and its detail
# A line one try has and another lacks: DejaGnu names a line by what happened ("kretprobe-vars
# unexpected output" in one try, "kretprobe-vars shutdown and output" in the next).
ABSENT = (Outcome.SKIP, "not in this try's systemtap.sum")


@dataclass(frozen=True)
class DejaGnuVerdict:
    """One record's outcome over a file's tries: `testsuite:FILE:NAME` for a line,
    `testsuite:FILE` for what happened to the file as a whole."""

    test: str
    outcome: Outcome
    detail: str
    tries: tuple[TryVerdict, ...]  # every try, when there was more than one
    is_line: bool = True


def _line_verdicts(file_run: FileRun) -> dict[tuple[str, int], TryVerdict]:
    """Each line of one try by (name, occurrence): DejaGnu files may repeat a name."""
    verdicts: dict[tuple[str, int], TryVerdict] = {}
    seen: dict[str, int] = {}
    for line in file_run.lines:
        seen[line.test] = seen.get(line.test, 0) + 1
        # A plain PASS says nothing more; anything else (KPASS too) keeps DejaGnu's word.
        detail = "" if line.status == "PASS" else f"DejaGnu {line.status}: {line.name}"
        verdicts[(line.test, seen[line.test])] = (DEJAGNU_OUTCOME[line.pytest_outcome], detail)
    return verdicts


def _file_verdict(file_run: FileRun) -> TryVerdict | None:
    """What happened to the file as a whole in one try, when something did."""
    if file_run.crash:
        return Outcome.CRASH, file_run.crash
    if file_run.timed_out:
        return Outcome.TIMEOUT, "the file was still running after its limit and was stopped"
    if file_run.kernel_problem:
        return Outcome.FAIL_LOAD, file_run.kernel_problem
    if not file_run.lines:
        return Outcome.ERROR, (f"gave no DejaGnu result line (make exit {file_run.make_exit}); "
                               f"see {file_run.artifacts.get('make_log', 'make.log')}")
    return None


def _combine(test: str, tries: list[TryVerdict], is_line: bool = True) -> DejaGnuVerdict:
    """The first try's outcome, or `flaky` when the tries differ (every try in the detail)."""
    outcome, detail = over_tries(tries, "boots")
    return DejaGnuVerdict(test, outcome, detail, tuple(tries) if len(tries) > 1 else (), is_line)


def file_verdicts(file_run: FileRun) -> list[DejaGnuVerdict]:
    """The records of one DejaGnu file over its tries: each line any try gave (the first
    try's order first), then the file's own record when a try crashed, hung, left a splat or
    new taint, or gave no line."""
    tries = [file_run, *file_run.retries]
    each = [_line_verdicts(t) for t in tries]
    keys = list(dict.fromkeys(key for verdicts in each for key in verdicts))
    verdicts = [_combine(f"testsuite:{file_run.exp}:{key[0]}", [v.get(key, ABSENT) for v in each]) for key in keys]
    whole = [_file_verdict(t) for t in tries]
    if any(whole):
        verdicts.append(_combine(f"testsuite:{file_run.exp}", [w or (Outcome.PASS, "") for w in whole], False))
    return verdicts
