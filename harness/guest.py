"""Booting the cell's kernel in QEMU and reading back what each test did.

QEMU runs in a container of the runner image with no network. The only device it may get
is /dev/kvm, and only when a real probe boot under KVM finished: on these machines /dev/kvm
exists but a nested KVM guest hangs after decompression, so its mere presence proves nothing.
The guest's init (guest/init) reports on ttyS1; the console (ttyS0) is kept for crash and
splat detection. `panic=-1 oops=panic` with `-no-reboot` turns any oops into a QEMU exit
(with status 0: Debian builds pvpanic as a module), so a crash is recognised from the
console and from the test that started but never ended; the guest is then booted again to
run the tests after it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests.exceptions
from docker.models.containers import Container
from filelock import FileLock

from harness import cache, docker_env
from harness.errors import InfraError
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

KVM_PROBE_LIMIT_S = 60
BOOT_LIMIT_S = {"kvm": 60, "tcg": 180}
# Modules load and run slower under TCG: every per-test limit is scaled by this.
TIMEOUT_SCALE = {"kvm": 1, "tcg": 3}
PER_TEST_SLACK_S = 30
TAINT_EXPECTED = 4096 | 8192  # O (out-of-tree) and E (unsigned): every stap module sets them
TAINT_NAMES = {1: "P", 2: "F", 4: "S", 8: "R", 16: "M", 32: "B", 64: "U", 128: "D", 256: "A",
               512: "W", 1024: "C", 2048: "I", 4096: "O", 8192: "E", 16384: "L", 32768: "K",
               65536: "X", 131072: "T"}

CRASH_RE = re.compile(
    r"(Kernel panic - not syncing|Oops:|BUG: unable to handle|kernel BUG at|general protection fault"
    r"|BUG: kernel NULL pointer|Unable to handle kernel|double fault|invalid opcode:)"
)
SPLAT_RE = re.compile(
    r"(WARNING: CPU:|------------\[ cut here \]|BUG: |soft lockup|rcu: INFO: rcu_.* stall"
    r"|rcu_sched detected stall|blocked for more than \d+ seconds|Call Trace:)"
)
TIMESTAMP_RE = re.compile(r"^\[\s*\d+\.\d+\]\s?")
BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass
class TestRun:
    __test__ = False  # not a pytest class
    name: str
    index: int
    boot: int
    ended: bool = False
    status: int | None = None
    timed_out: bool = False
    taint_before: int = 0
    taint_after: int = 0
    stdout: str = ""
    stderr: str = ""
    console: str = ""  # the console lines printed while this test ran
    crash: str = ""  # the oops or panic excerpt when the guest died during this test
    guest_hung: bool = False  # the host killed the guest: it stopped answering
    seconds: float = 0.0

    def new_taint(self, guru: bool = False) -> str:
        return new_taint(self.taint_before, self.taint_after, guru)


# systemtap builds guru-mode (-g) modules with CONFIG_MODVERSIONS= (buildrun.cxx, PR10280,
# systemtap commit 86adba831): without symbol versions, so a kernel with CONFIG_MODULE_FORCE_LOAD
# (Debian's) loads one forced and taints F ("stap_...: module_layout: kernel tainted."), by design.
TAINT_FORCED_MODULE = 2
# stap's short options that take an argument (cmdline.h STAP_SHORT_OPTIONS, systemtap 5.x).
STAP_OPTIONS_WITH_ARGUMENT = set("peEoIRramcxDsldLSBJGT")


def guru_mode(words: list[str]) -> bool:
    """Whether a stap command line (its words) asks for guru mode: -g alone or in a cluster
    (-gp4, -wg), not an argument of another option (-Gsize=1, -c 'x -g')."""
    expecting_argument = False
    for word in words:
        if expecting_argument:
            expecting_argument = False
            continue
        if word == "--":
            return False
        if not word.startswith("-") or word.startswith("--") or word == "-":
            continue
        for index, letter in enumerate(word[1:], 1):
            if letter == "g":
                return True
            if letter in STAP_OPTIONS_WITH_ARGUMENT:
                expecting_argument = index == len(word) - 1  # its argument is the next word
                break
    return False


TAINT_ALLOWED = "beyond O and E, and F for a guru-mode module"

# The kernel's try_to_force_load() (kernel/module/main.c) names the module it loads forced,
# once a boot: "stap_4adbb939811c67bcd96f6d744d7f9330__605: module_layout: kernel tainted.".
FORCED_STAP_MODULE_RE = re.compile(r"\bstap_\w+: \S+: kernel tainted\.")


def forced_stap_module(console: str) -> bool:
    """Whether the console shows a stap module loaded forced: one built without symbol
    versions, which systemtap does only in guru mode. A DejaGnu file runs many stap commands
    the harness does not see, so this is how its F is told apart from another module's."""
    return FORCED_STAP_MODULE_RE.search(console) is not None


def new_taint(before: int, after: int, guru: bool = False) -> str:
    """The taint flags set between two readings, beyond the O and E every stap module sets
    (and the F of a guru-mode module)."""
    flags = (after & ~before) & ~(TAINT_EXPECTED | (TAINT_FORCED_MODULE if guru else 0))
    return "".join(name for bit, name in TAINT_NAMES.items() if flags & bit)


@dataclass
class GuestRun:
    accel: str
    runs: dict[str, TestRun] = field(default_factory=dict)
    boots: int = 0
    build_id: str = ""
    boot_failure: str = ""
    seconds: float = 0.0
    garbled: dict[str, str] = field(default_factory=dict)  # test -> a result-channel line that did not parse


DEFAULT_MEMORY_MB = 1024


def guest_memory_mb(guest_dir: Path, initrd: str = "initramfs.cpio") -> int:
    """Enough memory for the kernel, the initramfs (held twice while it unpacks into a tmpfs)
    and the modules' buffers: 1 GiB, or more for a big initramfs."""
    packed = (guest_dir / initrd).stat().st_size if (guest_dir / initrd).exists() else 0
    needed = 512 + (packed * 3) // (1024 * 1024)
    return max(DEFAULT_MEMORY_MB, (needed + 127) // 128 * 128)


def qemu_command(accel: str, only: str, boot: int | str, probe: bool = False, initrd: str = "initramfs.cpio",
                 extra_append: str = "", extra_args: tuple[str, ...] = (), memory_mb: int = DEFAULT_MEMORY_MB) -> list[str]:
    """QEMU's argv. Logs go to /guest/console-BOOT.log (ttyS0) and /guest/results-BOOT.log
    (ttyS1, the result channel); -nodefaults leaves the guest without a network card."""
    append = f"console=ttyS0 panic=-1 oops=panic rdinit=/init sm.scale={TIMEOUT_SCALE[accel]}"
    if only:
        append += f" sm.only={only}"
    if probe:
        append += " sm.probe=1"
    if extra_append:
        append += " " + extra_append
    return [
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", accel, "-m", str(memory_mb), "-smp", "1",
        "-kernel", "/guest/vmlinuz", "-initrd", f"/guest/{initrd}", "-append", append,
        "-serial", f"file:/guest/console-{boot}.log", "-serial", f"file:/guest/results-{boot}.log",
        *extra_args,
    ]


def start_guest(runner_image: str, guest_dir: Path, accel: str, command: list[str]) -> Container:
    """QEMU in a runner container: no network, /dev/kvm the only device (and only for KVM),
    guest_dir mounted at /guest. The caller removes it."""
    return docker_env.start_container(
        runner_image, command, network_mode="none",
        devices=["/dev/kvm:/dev/kvm:rwm"] if accel == "kvm" else [],
        labels=docker_env.container_labels("guest"),
        volumes={str(guest_dir): {"bind": "/guest", "mode": "rw"}},
    )


def _boot(runner_image: str, guest_dir: Path, accel: str, only: str, boot: int, limit_s: float,
          probe: bool = False) -> bool:
    """One QEMU run; True when it ended by itself, False when the host had to kill it (the
    guest stopped answering). Losing Docker is an infrastructure error, not a hang."""
    command = qemu_command(accel, only, boot, probe, memory_mb=guest_memory_mb(guest_dir))
    container = start_guest(runner_image, guest_dir, accel, command)
    ended = False
    try:
        try:
            result = container.wait(timeout=limit_s)
            if result.get("StatusCode", 0) != 0:
                logs = container.logs().decode("utf-8", "replace")[-600:]
                (guest_dir / f"qemu-{boot}.log").write_text(logs)
            ended = True
            return True
        except requests.exceptions.RequestException as error:
            # docker-py reports wait()'s own timeout as ReadTimeout or ConnectionError; only a
            # daemon that no longer answers means the connection was lost (then the guest's
            # fate is unknown). A connection cut mid-response is ChunkedEncodingError.
            timed_out = isinstance(error, (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError))
            if not timed_out or not docker_env.daemon_answers():
                raise InfraError(f"lost the connection to Docker while the guest ran ({error.__class__.__name__}); "
                                 "the guest's fate is unknown") from None
            container.kill()
            return False
    finally:
        if ended:  # QEMU is gone: removing its container need not hold the cell up
            docker_env.remove_in_background(container)
        else:
            docker_env.remove_quietly(container)


def choose_accel(runner_image: str, guest_dir: Path) -> tuple[str, str]:
    """(accel, why): KVM only when a probe boot under KVM really finished."""
    forced = os.environ.get("STAPMATRIX_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced, f"STAPMATRIX_ACCEL={forced}"
    if not os.path.exists("/dev/kvm"):
        return "tcg", "no /dev/kvm"
    verdict_path = cache_dir() / "kvm-probe.json"
    with FileLock(str(verdict_path) + ".lock"):
        verdict = cache.read_entry(verdict_path)
        if verdict is not None and verdict.get("boot_id") == docker_env.boot_id():
            return str(verdict["accel"]), str(verdict["why"]) + " (probed earlier since this host booted)"
        started = time.monotonic()
        finished = _boot(runner_image, guest_dir, "kvm", "", 0, KVM_PROBE_LIMIT_S, probe=True)
        results = (guest_dir / "results-0.log")
        text = results.read_text(errors="replace") if results.exists() else ""
        took = time.monotonic() - started
        if finished and "@@SM DONE" in text:
            accel, why = "kvm", f"a KVM probe boot finished in {took:.0f} s"
        else:
            accel, why = "tcg", f"a KVM probe boot did not finish within {KVM_PROBE_LIMIT_S} s (nested KVM hangs)"
        logger.info("KVM probe: %s", why)
        cache.write_entry(verdict_path, {"boot_id": docker_env.boot_id(), "accel": accel, "why": why})
    return accel, why


def _console_sections(console: str) -> dict[str, str]:
    """The console lines printed between each test's start and end markers (from /dev/kmsg)."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in console.splitlines():
        line = TIMESTAMP_RE.sub("", raw.rstrip("\r"))
        if line.startswith("stapmatrix: start "):
            current = line.split()[-1]
            sections[current] = []
        elif line.startswith("stapmatrix: end "):
            current = None
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def crash_excerpt(console: str, lines: int = 30) -> str:
    all_lines = [TIMESTAMP_RE.sub("", line.rstrip("\r")) for line in console.splitlines()]
    for index, line in enumerate(all_lines):
        if CRASH_RE.search(line):
            return "\n".join(all_lines[index : index + lines])
    return ""


def parse_results(text: str, boot: int, runs: dict[str, TestRun],
                  garbled: dict[str, str] | None = None) -> tuple[bool, bool, str]:
    """Fold one boot's result channel into `runs`; returns (booted, done, build-id). A line
    that does not parse (a truncated or corrupted serial line) is kept in `garbled` under the
    test it belongs to (or "" before any test) instead of failing the whole cell."""
    booted = done = False
    build_id = ""
    current = ""
    chunks: dict[tuple[str, str], list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip("\r\n\x00 ")
        if not line.startswith("@@SM"):  # "@@SM" alone: a record cut right after its marker
            continue
        words = line.split()
        kind = words[1] if len(words) > 1 else ""
        try:
            if kind == "BOOTED":
                booted = True
            elif kind == "NOTES" and len(words) > 2:
                build_id = build_id_from_notes(words[2])
            elif kind == "START" and len(words) >= 4:
                current = words[3]
                runs[words[3]] = TestRun(words[3], int(words[2]), boot)
            elif kind == "RC" and len(words) >= 7 and words[2] in runs:
                run = runs[words[2]]
                status, timed_out, before, after = int(words[3]), words[4] == "1", int(words[5]), int(words[6])
                run.status, run.timed_out, run.taint_before, run.taint_after = status, timed_out, before, after
            elif kind in ("OUT", "ERR") and len(words) >= 4:
                if not BASE64_RE.fullmatch(words[3]):
                    raise ValueError("not base64")
                chunks.setdefault((kind, words[2]), []).append(words[3])
            elif kind == "END" and len(words) >= 3 and words[2] in runs:
                runs[words[2]].ended = True
                current = ""  # a damaged line after a test's end is not that test's
            elif kind == "DONE":
                done = True
            elif kind not in ("STAPSH", "TAINT"):
                raise ValueError("unknown or short record")
        except ValueError:
            if garbled is not None:
                garbled.setdefault(current, line[:200])
    for (kind, name), parts in chunks.items():
        if name in runs:
            try:
                decoded = base64.b64decode("".join(parts) + "===").decode("utf-8", "replace")
            except binascii.Error as error:  # a chunk cut short: its length is no base64 length
                if garbled is not None:
                    garbled.setdefault(name, f"@@SM {kind} {name}: {error}")
                continue
            if kind == "OUT":
                runs[name].stdout = decoded
            else:
                runs[name].stderr = decoded
    return booted, done, build_id


def build_id_from_notes(hex_notes: str) -> str:
    """The GNU build-id from /sys/kernel/notes (ELF notes: namesz, descsz, type, name, desc)."""
    data = bytes.fromhex(hex_notes)
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = (int.from_bytes(data[offset + i : offset + i + 4], "little") for i in (0, 4, 8))
        name_start = offset + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        if kind == 3 and data[name_start : name_start + namesz].rstrip(b"\0") == b"GNU":
            return data[desc_start : desc_start + descsz].hex()
        offset = desc_start + ((descsz + 3) & ~3)
    return ""


def run_guest(runner_image: str, guest_dir: Path, tests: list[str], timeouts: dict[str, int],
              accel: str, selected: list[str] | None = None, first_boot: int = 1) -> GuestRun:
    """Boot until every selected test (default: all of `tests`, the guest's list in order)
    has run: a crash or hang costs one boot, the rest go on. Boots are numbered from
    `first_boot` (console-N.log, results-N.log), so a later try keeps the earlier logs."""
    outcome = GuestRun(accel)
    started = time.monotonic()
    pending = list(tests if selected is None else selected)
    while pending or outcome.boots == 0:  # boot once even with no test: the build-id check
        boot = first_boot + outcome.boots
        outcome.boots += 1
        remaining = list(pending)
        only = "" if remaining == tests else ",".join(str(tests.index(name) + 1) for name in remaining)
        limit = BOOT_LIMIT_S[accel] + sum(timeouts[t] + PER_TEST_SLACK_S for t in remaining)
        boot_started = time.monotonic()
        for name in remaining:
            outcome.runs.pop(name, None)
        finished = _boot(runner_image, guest_dir, accel, only, boot, limit)
        results_path, console_path = guest_dir / f"results-{boot}.log", guest_dir / f"console-{boot}.log"
        text = results_path.read_text(errors="replace") if results_path.exists() else ""
        console = console_path.read_text(errors="replace") if console_path.exists() else ""
        booted, done, build_id = parse_results(text, boot, outcome.runs, outcome.garbled)
        outcome.build_id = outcome.build_id or build_id
        sections = _console_sections(console)
        for name in remaining:
            if name in outcome.runs and outcome.runs[name].boot == boot:
                outcome.runs[name].console = sections.get(name, "")
        if not booted:
            tail = "\n".join(console.splitlines()[-25:])
            why = "did not boot" if finished else f"did not boot within {limit} s"
            qemu_log = guest_dir / f"qemu-{boot}.log"
            qemu_said = f"\nQEMU said: {qemu_log.read_text(errors='replace')}" if qemu_log.exists() else ""
            outcome.boot_failure = f"the guest {why}; console tail:\n{tail}{qemu_said}"
            break
        if done:
            break
        # The guest died or hung during the last test it started: that test gets the blame.
        started_here = [outcome.runs[n] for n in remaining if n in outcome.runs and outcome.runs[n].boot == boot]
        if not started_here:
            outcome.boot_failure = "the guest booted but ran no test; console tail:\n" + "\n".join(console.splitlines()[-25:])
            break
        culprit = started_here[-1]
        culprit.ended = False
        culprit.guest_hung = not finished
        culprit.crash = crash_excerpt(console) or ("" if not finished else "\n".join(console.splitlines()[-25:]))
        culprit.seconds = time.monotonic() - boot_started
        pending = remaining[remaining.index(culprit.name) + 1 :]
        logger.warning("guest %s during %s; booting again for the %d test(s) after it",
                       "hung" if not finished else "died", culprit.name, len(pending))
    outcome.seconds = time.monotonic() - started
    return outcome
