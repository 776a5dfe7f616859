"""Which DejaGnu files of a systemtap source tree a test set names, and which of them can be
believed when they run against a guest.

systemtap's testsuite runs here in a container of the cell image with `stap` adding
`--remote` (harness/testsuite.py): every stap compiles in the container and its module runs
in the guest, the kernel under test. What a test does besides running stap happens in the
container, on the host's kernel: a program it compiles with `target_compile` and runs or
traces, a load it generates with `exec`, `/proc` it reads, `staprun` it calls directly,
commands it runs `as_root`. Such a test would report the host, not the kernel under test
(the release-5.5 testsuite has no notion of a remote target), so its result would be the
harness's, not systemtap's: it is not run, and each is one `skip` record naming what it
does on the DejaGnu machine. `smoke` is chosen from the tests that do nothing of the kind.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness import gitrepo
from harness.errors import MatrixError
from harness.examples import target_programs
from harness.stap_build import StapBuild
from harness.testsets import TestSet

TESTSUITE = "testsuite"
MAX_EXP_BYTES = 512 * 1024
# Quick tests of the kernel-coupled runtime and tapsets, judged by stap's output and exit
# status alone (nothing of theirs runs on the DejaGnu machine). Seconds measured at
# release-5.5 on 6.12 under TCG in the closing note of issue 16.
SMOKE = (
    "systemtap.base/kprobes.exp",  # dwarfless kprobe.function, begin/end, exit()
    "systemtap.base/kretprobe-vars.exp",  # kernel.function().call/.return, $vars in kretprobes, target()
    "systemtap.base/badkprobe.exp",  # kprobe registration failures, optional probes, clean-up
    "systemtap.base/at_var_tracepoint.exp",  # kernel.trace("sched_switch"): tracequery modules, @var
    "systemtap.base/execve.exp",  # syscall tapset (syscall.execve), task_finder through -c
    "systemtap.base/timeout.exp",  # -T: the synthetic exit timer
    "systemtap.base/timeofday.exp",  # kernel.function("do_timer") and time functions in IRQ context
    "systemtap.base/backtrace.exp",  # print_backtrace from several contexts: the kernel unwinder
    "systemtap.base/sigusr2.exp",  # stapio signals, bulk mode (-b: relay per-cpu files)
    "systemtap.base/stap_bufsize.exp",  # -s N: the transport buffer module option
)
# stap --remote does not say how staprun ended: it prints no "WARNING: .../staprun exited with
# status: N" (staputil.cxx stap_waitpid, local runs only) and exits 0 (remote.cxx:
# stapsh::finish returns 0 whatever stapsh's status).
STAPRUN_STATUS = "expects stap to report staprun's exit status, which stap --remote does not"
# Files that count on it without naming it: wakeup.exp wants 3 warnings, "plus the two from
# staprun re. the ERROR exits" (seen on release-5.5: 2, the status one missing).
REMOTE_LIMITS = {"systemtap.base/wakeup.exp": STAPRUN_STATUS}
# What marks a test as doing part of its work on the DejaGnu machine, with why it matters.
HOST_BOUND = (
    (re.compile(r"\btarget_compile\b"), "compiles a program with the DejaGnu machine's gcc and runs it there"),
    (re.compile(r"\bas_root\b"), "runs commands as root on the DejaGnu machine"),
    (re.compile(r"\b(exec|spawn)\s+(\S*/)?staprun\b|\$staprun\b|\bstaprun\s+-"),
     "runs staprun itself, not through stap --remote"),
    (re.compile(r"/proc/"), "reads /proc of the DejaGnu machine"),
    (re.compile(r"\bpgrep\b|\bpidof\b"), "looks for processes on the DejaGnu machine"),
    (re.compile(r"\bexec\s+(?!stap\b|sleep\b|rm\b|mkdir\b|cp\b|mv\b|ln\b|chmod\b|touch\b|echo\b|printf\b|sed\b|"
                r"grep\b|awk\b|wc\b|head\b|tail\b|sort\b|cut\b|tr\b|diff\b|cmp\b|which\b|test\b|uname\b|"
                r"sh\s+-c\s+\"?stap\b)[^\s\]\"]"),
     "runs a program on the DejaGnu machine while the probe runs in the guest"),
    (re.compile(r"exited with status"), STAPRUN_STATUS),
)


@dataclass(frozen=True)
class DejaGnuFile:
    path: str  # below testsuite/: systemtap.base/kprobes.exp
    host_bound: str = ""  # why it is not run (empty: it runs)
    programs: tuple[str, ...] = ()  # what its `stap -c CMD` starts in the guest (target_programs_of)


def _listing(build: StapBuild) -> dict[str, str]:
    """{path below testsuite/: text} of every .exp file of the build's source tree."""
    found: dict[str, str] = {}
    if build.spec.kind == "git":
        repository = gitrepo.repository(build.spec.value, build.spec.value)
        listing = gitrepo.run("ls-tree", "-r", "-z", "--long", build.version, "--", TESTSUITE, cwd=repository,
                              what=f"listing the testsuite of {build.version[:12]}")
        for line in listing.split("\0"):
            meta, _, path = line.partition("\t")
            if not path.endswith(".exp") or not meta:
                continue
            mode, kind, blob, size = meta.split()
            if kind != "blob" or mode == "120000" or not size.isdigit() or int(size) > MAX_EXP_BYTES:
                continue
            found[str(PurePosixPath(path).relative_to(TESTSUITE))] = gitrepo.run(
                "cat-file", "blob", blob, cwd=repository, what=f"reading {path}", timeout_s=60)
        return found
    root = Path(build.spec.value) / TESTSUITE
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (Path(directory) / d).is_symlink())
        for name in sorted(files):
            file = Path(directory) / name
            if name.endswith(".exp") and file.is_file() and not file.is_symlink() and \
                    file.stat().st_size <= MAX_EXP_BYTES:
                found[str(file.relative_to(root))] = file.read_text(errors="replace")
    return found


# `stap -c CMD`: CMD runs where the module runs, in the guest (staprun starts it there).
TARGET_COMMAND_RE = re.compile(r"(?<!sh )-c\s+(\{[^}]*\}|\"[^\"]*\"|\S+)")


def host_bound(text: str) -> str:
    """Why a test's text says part of it runs on the DejaGnu machine ("" when nothing does)."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    code = TARGET_COMMAND_RE.sub("-c TARGET", code)
    return next((why for pattern, why in HOST_BOUND if pattern.search(code)), "")


def target_programs_of(text: str) -> tuple[str, ...]:
    """The programs a test's `stap -c CMD` commands start, where CMD is written out (`-c "cat
    /dev/null"` -> cat). The guest gets the cell image's, not busybox's applets: the test was
    written for that program (kretprobe-vars.exp waits for `cat`'s vfs_read, and busybox's cat
    copies with sendfile(2), so its probe never fired)."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    programs: set[str] = set()
    for match in TARGET_COMMAND_RE.finditer(code):
        command = match[1][1:-1] if match[1][0] in "{\"" else match[1]
        programs |= {p for p in target_programs("stap -c " + shlex.quote(command)) if not p.startswith(".")}
    return tuple(sorted(programs))


def _tests(listing: dict[str, str]) -> list[str]:
    """The test files: those of the systemtap.* directories (lib/ and config/ hold helpers)."""
    return sorted(p for p in listing if p.startswith("systemtap.") and "/" in p)


def _select(selector: str, tests: list[str]) -> list[str]:
    if selector == "all":
        return tests
    if selector == "smoke":
        return [t for t in SMOKE if t in tests]
    if any(c in selector for c in "*?["):
        return [t for t in tests if fnmatch.fnmatchcase(t, selector)]
    if selector.endswith(".exp"):
        # A bare file name (environment_sanity.exp) is found in any directory, as runtest does.
        return [t for t in tests if t == selector or ("/" not in selector and PurePosixPath(t).name == selector)]
    return [t for t in tests if t.startswith(selector.rstrip("/") + "/")]


def expand(build: StapBuild, test_sets: tuple[TestSet, ...], where: str) -> tuple[DejaGnuFile, ...]:
    """The DejaGnu files the non-examples test sets name in the build's source tree, in order,
    each once, those a set's filters (on `testsuite:FILE`) leave."""
    sets = [s for s in test_sets if not s.is_examples]
    if not sets:
        return ()
    listing = _listing(build)
    tests = _tests(listing)
    chosen: dict[str, DejaGnuFile] = {}
    for test_set in sets:
        found = _select(test_set.selector, tests)
        if not found:
            raise MatrixError(f"{where}: test set {test_set.selector!r} names no DejaGnu file of {build.spec.spec} "
                              f"({len(tests)} .exp files below {TESTSUITE}/)")
        for path in found:
            if path not in chosen and test_set.selects(f"testsuite:{path}"):
                why = host_bound(listing[path]) or REMOTE_LIMITS.get(path, "")
                chosen[path] = DejaGnuFile(path, why, target_programs_of(listing[path]))
    return tuple(chosen.values())
