"""A guest that serves `stap --remote`: the kernel under test, booted with stapsh listening on
the virtio-serial port org.systemtap.stapsh.0 (systemtap's own way to compile on one machine
and run on another). systemtap's DejaGnu testsuite and the examples' installcheck commands run
in a container of the cell image with a `stap` that adds `--remote=unix:SOCKET`
(harness/guest/remote-bin/stap): passes 1-4 in the container, the module in the guest.

What the host needs to judge a test run this way, besides stap's exit status: whether the
guest survived it (a panic ends QEMU: `panic=-1 -no-reboot`), the console lines printed while
it ran (splats), and the kernel's taint flags before and after it (the guest's init reports
them on its result channel twice a second: `@@SM TAINT SEQ FLAGS`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests.exceptions
from docker.models.containers import Container

from harness import docker_env
from harness.errors import InfraError
from harness.guest import BOOT_LIMIT_S, build_id_from_notes, guest_memory_mb, qemu_command, start_guest
from harness.stapsh_relay import StapshRelay

logger = logging.getLogger(__name__)

INITRD = "initramfs-stapsh.cpio"
TAINT_RE = re.compile(r"^@@SM TAINT ([0-9]+) ([0-9]+)\s*$", re.MULTILINE)
TAINT_WAIT_S = 5.0
STAPSH_EXIT_RE = re.compile(r"stapmatrix: stapsh exited ([0-9]+), restarting")


DISK_BYTES = 1024 * 1024


def qemu_stapsh_args(name: str) -> list[str]:
    """stapsh's port, the control port between the host's relay and the guest's init
    (harness/stapsh_relay.py, GuestControl), and a small disk: the machine under test has one,
    and examples read it (io/mbrwatch reads the first sector of the first disk in
    /proc/partitions)."""
    return [
        "-drive", f"file=/guest/{name}-disk.img,if=virtio,format=raw",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=stapsh,path=/guest/{name}-qemu.sock,server=on,wait=off",
        "-device", "virtserialport,chardev=stapsh,name=org.systemtap.stapsh.0",
        "-chardev", f"socket,id=control,path=/guest/{name}-control.sock,server=on,wait=off",
        "-device", "virtserialport,chardev=control,name=org.stapmatrix.control.0",
    ]


class StapshGuest:
    """One guest serving stapsh, with its logs in `guest_dir`: `NAME.sock` (where stap
    connects: /work/NAME.sock in a cell container; the relay of harness/stapsh_relay.py, in
    front of QEMU's end of the port, `NAME-qemu.sock`, and of the guest init's control port,
    `NAME-control.sock`), `console-NAME-BOOT.log`,
    `results-NAME-BOOT.log`. `boot()` starts it (again, after a crash or hang)."""

    def __init__(self, runner_image: str, guest_dir: Path, name: str, accel: str) -> None:
        self.runner_image, self.guest_dir, self.name, self.accel = runner_image, guest_dir, name, accel
        self.boots = 0
        self.container: Container | None = None
        self.build_id = ""  # the GNU build-id the booted kernel reported
        self.relay: StapshRelay | None = None

    @property
    def socket(self) -> Path:
        return self.guest_dir / f"{self.name}.sock"

    @property
    def qemu_socket(self) -> Path:
        return self.guest_dir / f"{self.name}-qemu.sock"

    @property
    def control_socket(self) -> Path:
        return self.guest_dir / f"{self.name}-control.sock"

    @property
    def console_path(self) -> Path:
        return self.guest_dir / f"console-{self.name}-{self.boots}.log"

    @property
    def results_path(self) -> Path:
        return self.guest_dir / f"results-{self.name}-{self.boots}.log"

    def boot(self) -> str:
        """Start the guest (stopping a previous one) and wait until stapsh listens; its port."""
        self.stop()
        self.boots += 1
        self.qemu_socket.unlink(missing_ok=True)
        self.control_socket.unlink(missing_ok=True)
        with (self.guest_dir / f"{self.name}-disk.img").open("wb") as disk:
            disk.truncate(DISK_BYTES)  # zeros, fresh each boot
        self.relay = StapshRelay(self.socket, self.qemu_socket, self.control_socket)
        self.relay.start()
        command = qemu_command(self.accel, "", f"{self.name}-{self.boots}", initrd=INITRD, extra_append="sm.stapsh=1",
                               extra_args=tuple(qemu_stapsh_args(self.name)),
                               memory_mb=guest_memory_mb(self.guest_dir, INITRD))
        self.container = start_guest(self.runner_image, self.guest_dir, self.accel, command)
        return self._wait_for_stapsh(BOOT_LIMIT_S[self.accel])

    def _wait_for_stapsh(self, limit_s: float) -> str:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            text = self._results()
            for line in text.splitlines():
                if line.startswith("@@SM NOTES ") and len(line.split()) > 2:
                    self.build_id = build_id_from_notes(line.split()[2])
                if line.startswith("@@SM STAPSH "):
                    port = line.split()[2]
                    if port == "none":
                        raise InfraError("the guest found no org.systemtap.stapsh.0 virtio-serial port")
                    return port
            if not self.alive():
                raise InfraError(f"the guest stopped before stapsh started; see {self.console_path}")
            time.sleep(1)
        raise InfraError(f"stapsh did not start in the guest within {limit_s:.0f} s; see {self.console_path}")

    def _results(self) -> str:
        path = self.results_path
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
        except requests.exceptions.RequestException as error:
            raise InfraError(f"lost the connection to Docker while a guest ran ({error.__class__.__name__})") from None
        return bool(self.container.status in ("running", "created"))

    def console_mark(self) -> int:
        return self.console_path.stat().st_size if self.console_path.exists() else 0

    def console_since(self, mark: int) -> str:
        try:
            with self.console_path.open("rb") as stream:
                stream.seek(mark)
                return stream.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stapsh_exits(self, mark: int, wait_s: float = TAINT_WAIT_S) -> list[int]:
        """The exit statuses stapsh reported (the guest's init logs each one on the console:
        staprun's, which stap --remote does not pass back) since `mark`, waiting briefly for one."""
        deadline = time.monotonic() + wait_s
        while True:
            found = [int(n) for n in STAPSH_EXIT_RE.findall(self.console_since(mark))]
            if found or time.monotonic() > deadline or not self.alive():
                return found
            time.sleep(0.2)

    def taint(self, after_seq: int = 0) -> tuple[int, int]:
        """(sequence number, taint flags) of the newest report, waiting (briefly) for one newer
        than `after_seq`: a reading taken after whatever ran before this call."""
        deadline = time.monotonic() + TAINT_WAIT_S
        while True:
            reports = TAINT_RE.findall(self._results())
            if reports and int(reports[-1][0]) > after_seq:
                return int(reports[-1][0]), int(reports[-1][1])
            if time.monotonic() > deadline or not self.alive():
                raise InfraError(f"the guest reported no taint flags within {TAINT_WAIT_S:.0f} s; see {self.results_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        if self.container is not None:
            docker_env.remove_quietly(self.container)
            self.container = None


T = TypeVar("T")


def deal(items: list[T], count: int) -> list[list[T]]:
    """Items dealt out round-robin among `count` guests (each gets a share of every part of
    the list), no empty share."""
    return [share for share in (items[i::max(1, count)] for i in range(max(1, count))) if share]


def in_parallel(serve: Callable[[int, list[T]], None], shares: list[list[T]]) -> None:
    """`serve(index, share)` for each share, each in a thread of its own (one guest each);
    the first error any of them raised is raised here, once all have ended."""
    errors: list[BaseException] = []

    def run(index: int, share: list[T]) -> None:
        try:
            serve(index, share)
        except BaseException as error:  # noqa: BLE001 - raised below, after every thread ended
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index, share), name=f"stapmatrix-guest-{index}", daemon=True)
               for index, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        # An InfraError says what broke; anything else is a bug, and the cell keeps its
        # traceback (cell.py), so it is raised as it is.
        raise errors[0]
