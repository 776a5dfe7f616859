"""systemtap's own testsuite (DejaGnu) against the guest kernel, for source-built columns.

Why `stap --remote` and not DejaGnu inside the guest: the testsuite compiles every module
with stap and gcc against headers and vmlinux debuginfo, which under TCG would run 10-50
times slower and need a multi-gigabyte guest root. systemtap has its own remote mechanism:
`stap --remote unix:SOCKET` compiles on the host for the kernel that `stapsh` reports and
runs pass 5 through stapsh in the guest, listening on the virtio-serial port
org.systemtap.stapsh.0. So DejaGnu runs in a container of the cell image (native speed) with
a `stap` wrapper that adds `--remote` (guest/remote-bin/stap), the guest runs stapsh with the
same build's staprun/stapio, and tests that call other tools locally see the container.

Each DejaGnu result line (`PASS: name`) becomes one outcome; the `.sum` and `.log` files are
kept with the cell's artifacts.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from docker.models.containers import Container

from harness import docker_env
from harness.errors import InfraError
from harness.guest import BOOT_LIMIT_S, guest_memory_mb, qemu_command, start_guest
from harness.kernel_store import KernelTree
from harness.modules import cell_container, lazy_container, pack_guest
from harness.progress import Progress, Step
from harness.specs import EXP_RE

logger = logging.getLogger(__name__)

SOURCE_TREE = "/usr/local/src/systemtap"
TESTSUITE_LIMIT_S = 4 * 3600  # the whole of systemtap's testsuite takes hours; one .exp file minutes
SUM_LINE_RE = re.compile(r"^(PASS|FAIL|XPASS|XFAIL|KPASS|KFAIL|UNTESTED|UNSUPPORTED|UNRESOLVED|ERROR): (.*)$")


@dataclass(frozen=True)
class DejaGnuResult:
    exp: str  # the .exp file the line came from
    status: str  # PASS, FAIL, KFAIL, ...
    name: str

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


def qemu_stapsh_args() -> list[str]:
    return [
        "-device", "virtio-serial-pci",
        "-chardev", "socket,id=stapsh,path=/guest/stapsh.sock,server=on,wait=off",
        "-device", "virtserialport,chardev=stapsh,name=org.systemtap.stapsh.0",
    ]


def _wait_for_stapsh(results_log: Path, container: Container, limit_s: float) -> str:
    """The guest's stapsh port, once init reported it on the result channel."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        text = results_log.read_text(errors="replace") if results_log.exists() else ""
        for line in text.splitlines():
            if line.startswith("@@SM STAPSH "):
                port = line.split()[2]
                if port == "none":
                    raise InfraError("the guest found no org.systemtap.stapsh.0 virtio-serial port")
                return port
        container.reload()
        if container.status == "exited":
            raise InfraError("the guest stopped before stapsh started; see console-stapsh.log")
        time.sleep(1)
    raise InfraError(f"stapsh did not start in the guest within {limit_s:.0f} s")


def run_testsuite(cell_image: str, runner_image: str, kernel: KernelTree, exp_files: tuple[str, ...],
                  guest_dir: Path, accel: str, stap_key: str, progress: Progress,
                  ) -> tuple[list[DejaGnuResult], dict[str, str]]:
    """Boot the guest serving stapsh, run DejaGnu on `exp_files` against it, return the lines."""
    for exp in exp_files:
        if not EXP_RE.match(exp):
            raise InfraError(f"testsuite file {exp!r} is not a .exp file name")
    out = guest_dir / "testsuite"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (guest_dir / "stapsh.sock").unlink(missing_ok=True)
    for stale in ("console-stapsh.log", "results-stapsh.log"):
        (guest_dir / stale).unlink(missing_ok=True)

    kver = kernel.release
    with lazy_container(cell_image, guest_dir, kernel) as packer:
        pack_guest(packer, kernel, guest_dir, stap_key, with_stapsh=True)

    command = qemu_command(accel, "", "stapsh", initrd="initramfs-stapsh.cpio", extra_append="sm.stapsh=1",
                           extra_args=tuple(qemu_stapsh_args()),
                           memory_mb=guest_memory_mb(guest_dir, "initramfs-stapsh.cpio"))
    guest = start_guest(runner_image, guest_dir, accel, command)
    artifacts = {"testsuite_dir": str(out), "console": str(guest_dir / "console-stapsh.log")}
    try:
        port = _wait_for_stapsh(guest_dir / "results-stapsh.log", guest, BOOT_LIMIT_S[accel])
        progress(Step(f"{kver}: stapsh listening on {port} in the guest; running {' '.join(exp_files)}"))
        with cell_container(cell_image, guest_dir, kernel) as runner:
            command = ["make", "-C", f"{SOURCE_TREE}/testsuite", "installcheck",
                       "SYSTEMTAP_PATH=/guest/remote-bin:/opt/systemtap/bin",
                       f"RUNTESTFLAGS={' '.join(exp_files)}"]
            started = time.monotonic()
            code, output = docker_env.exec_with_limit(
                runner, command, what=f"systemtap's testsuite ({' '.join(exp_files)})", timeout_s=TESTSUITE_LIMIT_S,
                environment={"STAPMATRIX_STAPSH": "/work/stapsh.sock", "STAPMATRIX_CONSOLE": "/work/console-stapsh.log"},
            )
            (out / "make.log").write_bytes(output)
            progress(Step(f"{kver}: testsuite finished in {time.monotonic() - started:.0f} s (make exit {code})"))
            for name in ("systemtap.sum", "systemtap.log"):
                copy_code, copied = docker_env.exec_with_limit(
                    runner, ["cat", f"{SOURCE_TREE}/testsuite/{name}"], what=f"reading {name}", timeout_s=120)
                if copy_code == 0:
                    (out / name).write_bytes(copied)
                    artifacts[name] = str(out / name)
    finally:
        docker_env.remove_quietly(guest)
    sum_path = out / "systemtap.sum"
    if not sum_path.exists():
        raise InfraError(f"the testsuite wrote no systemtap.sum; make.log: {out / 'make.log'}")
    return parse_sum(sum_path.read_text(errors="replace")), artifacts

