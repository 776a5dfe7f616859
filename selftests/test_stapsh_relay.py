"""The relay in front of a guest's stapsh (harness/stapsh_relay.py) and the guest's staprun
that joins what it split (harness/guest/staprun-parts), against a stapsh stand-in that keeps
stapsh's rules (staprun/stapsh.c: one reply line a command, no file over the limit, file
names "[a-z0-9][a-z0-9._]*") and a stand-in for the guest init's control port. The real
path (a module over 32 MB loaded in a guest through stap --remote; a DejaGnu test's `kill
-INT` reaching staprun) is exercised by selftests/test_examples.py and test_testsuite.py."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import stapsh_relay
from harness.stapsh_relay import StapshRelay

LIMIT = 1000  # the stand-in's limit, and the relay's for these tests
PARTS_SCRIPT = Path(__file__).parent.parent / "harness" / "guest" / "staprun-parts"


class StandInStapsh:
    """Serves one connection the way stapsh does, keeping the files it was sent."""

    def __init__(self, path: Path) -> None:
        self.files: dict[str, bytes] = {}
        self.refuse = b""  # a file name ending it is refused, as stapsh does when its disk is full
        self.hung_up = threading.Event()  # the relay closed its connection both ways
        self.commands: list[bytes] = []
        self.after_run = b"data stdout 6\nhello\nquit\n"  # what staprun "prints" when it runs
        self.run_connection: socket.socket | None = None  # for a test to print more with
        self.hold_hello: threading.Event | None = None  # a stapsh that missed the connection: hello once set
        self.accepted = threading.Event()
        self.verbose = False  # after `option verbose`, a debug line before every reply, as stapsh's dbug()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        self.accepted.set()
        with connection, connection.makefile("rb") as commands:
            while line := commands.readline():
                self.commands.append(line)
                words = line.split()
                if line == b"option verbose\n":
                    self.verbose = True
                if self.verbose:
                    connection.sendall(b"stapsh:process_command:713 command: " + line)
                if words[0] == b"stap":
                    if self.hold_hello is not None:
                        self.hold_hello.wait(10)
                    connection.sendall(b"stapsh 5.6 x86_64 6.12.118+deb13-amd64\n")
                elif words[0] == b"option":
                    connection.sendall(b"OK\n")
                elif words[0] == b"file":
                    size = int(words[1])
                    if not 0 < size <= LIMIT:
                        connection.sendall(b"ERROR: Bad file size %d\n" % size)
                        continue
                    if not re.fullmatch(rb"[A-Za-z0-9][A-Za-z0-9._]*", words[2]):
                        connection.sendall(b"ERROR: Bad character in file name\n")
                        continue
                    data = commands.read(size)
                    if self.refuse and words[2].endswith(self.refuse):
                        connection.sendall(b"ERROR: Unable to write file data\n")
                        continue
                    self.files[words[2].decode()] = data
                    connection.sendall(b"OK\n")
                elif words[0] == b"run":
                    connection.sendall(b"OK\n" + self.after_run)
                    self.run_connection = connection
                    self.commands.append(commands.readline())  # stap's `quit`, or its leaving
                    # Like QEMU while the guest's port is closed: no more reading, only a
                    # hang-up (both directions shut) would be noticed.
                    poller = select.poll()
                    poller.register(connection, select.POLLHUP)
                    if poller.poll(5000):
                        self.hung_up.set()
                    return


class StandInControl:
    """The guest init's end of the control port (harness/guest/init): says `ready PID` when
    told to, answers `INT` as init does, and keeps every request."""

    def __init__(self, path: Path) -> None:
        self.requests: list[bytes] = []
        self.staprun: int | None = 4242  # the pid INT signals; None: no staprun runs
        self.interrupted = threading.Event()
        self.kicked = threading.Event()
        self.connection: socket.socket | None = None
        self.connected = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        threading.Thread(target=self._serve, daemon=True).start()

    def say(self, line: bytes) -> None:
        assert self.connected.wait(10)
        assert self.connection is not None
        self.connection.sendall(line)

    def _serve(self) -> None:
        self.connection, _ = self.server.accept()
        self.connected.set()
        with self.connection.makefile("rb") as requests:
            while line := requests.readline():
                self.requests.append(line)
                if line == b"INT\n":
                    self.say(b"signalled %d\n" % self.staprun if self.staprun else b"nobody\n")
                    self.interrupted.set()
                elif line == b"KICK\n":
                    self.kicked.set()
                elif line.startswith(b"EVAL "):  # as init: what `sh` printed, base64
                    command = base64.b64decode(line[5:])
                    self.say(b"evaluated " + base64.b64encode(b"vda\n" if b"/proc/partitions" in command else b"") + b"\n")


@pytest.fixture
def relayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A relay in a directory whose path is longer than a socket address holds (108 bytes), as
    a cell's guest directory below the artifacts can be (seen: a DejaGnu cell's
    artifacts/run-DATE/6.12.118+deb13-amd64-stap-release-5.5/guest/stapsh-dejagnu-0-qemu.sock)."""
    monkeypatch.setattr(stapsh_relay, "STAPSH_MAX_FILE_SIZE", LIMIT)
    guest_dir = tmp_path / ("long-directory-name-" * 6) / "guest"
    guest_dir.mkdir(parents=True)
    assert len(str(guest_dir / "stapsh-dejagnu-0-qemu.sock")) > 108
    fd = os.open(guest_dir, os.O_RDONLY | os.O_DIRECTORY)  # the stand-in (QEMU's part) binds its own way
    stapsh = StandInStapsh(Path(f"/proc/self/fd/{fd}/stapsh-dejagnu-0-qemu.sock"))
    control = StandInControl(Path(f"/proc/self/fd/{fd}/stapsh-dejagnu-0-control.sock"))
    relay = StapshRelay(guest_dir / "stapsh-dejagnu-0.sock", guest_dir / "stapsh-dejagnu-0-qemu.sock",
                        guest_dir / "stapsh-dejagnu-0-control.sock")
    relay.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(f"/proc/self/fd/{fd}/stapsh-dejagnu-0.sock")
    os.close(fd)
    replies = client.makefile("rb")
    yield stapsh, relay, client, replies, control
    replies.close()
    client.close()
    relay.stop()


def test_a_file_over_the_limit_goes_in_parts_and_the_rest_unchanged(relayed) -> None:  # type: ignore[no-untyped-def]
    stapsh, relay, client, replies, control = relayed
    control.say(b"ready 17\n")
    module = os.urandom(2 * LIMIT + 500)
    signature = b"s" * 10
    client.sendall(b"stap 5.6\n")
    assert replies.readline() == b"stapsh 5.6 x86_64 6.12.118+deb13-amd64\n"
    client.sendall(b"option data\n")
    assert replies.readline() == b"OK\n"
    client.sendall(b"file %d stap_abc.ko\n" % len(module) + module)
    assert replies.readline() == b"OK\n"  # one reply for the three parts
    client.sendall(b"file 10 stap_abc.ko.sgn\n" + signature)
    assert replies.readline() == b"OK\n"
    client.sendall(b"run -R ./stap_abc.ko\n")
    assert replies.readline() == b"OK\n"
    assert replies.read(len(b"data stdout 6\nhello\nquit\n")) == b"data stdout 6\nhello\nquit\n"
    replies.close()
    client.close()
    stapsh.thread.join(10)
    assert stapsh.hung_up.is_set()
    assert sorted(stapsh.files) == ["stap_abc.ko.part00", "stap_abc.ko.part01", "stap_abc.ko.part02",
                                    "stap_abc.ko.sgn"]
    assert [len(stapsh.files[f"stap_abc.ko.part0{i}"]) for i in range(3)] == [LIMIT, LIMIT, 500]
    assert b"".join(stapsh.files[f"stap_abc.ko.part0{i}"] for i in range(3)) == module
    assert stapsh.files["stap_abc.ko.sgn"] == signature  # within the limit: passed through as it was
    assert stapsh.commands[-2:] == [b"run -R ./stap_abc.ko\n", b""]  # stap left
    assert relay.split == [("stap_abc.ko", len(module), 3)]


def test_stapshs_refusal_of_a_part_reaches_stap_and_the_stream_stays_in_step(relayed) -> None:  # type: ignore[no-untyped-def]
    stapsh, _, client, replies, control = relayed
    control.say(b"ready 17\n")
    stapsh.refuse = b".part01"
    client.sendall(b"file %d stap_abc.ko\n" % (3 * LIMIT) + b"x" * (3 * LIMIT))  # part01 is refused
    assert replies.readline() == b"ERROR: Unable to write file data\n"
    client.sendall(b"option data\n")  # the next command is read as a command, not as file data
    assert replies.readline() == b"OK\n"
    assert sorted(stapsh.files) == ["stap_abc.ko.part00"]  # part02 was not sent


def test_the_guests_staprun_joins_the_parts_in_order_then_runs_systemtaps(tmp_path: Path) -> None:
    """staprun-parts as the guest runs it: in stapsh's directory, with systemtap's staprun
    beside it as staprun.real (here a stand-in that reports its arguments and the module)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "staprun").write_bytes(PARTS_SCRIPT.read_bytes())
    (bindir / "staprun.real").write_text('#!/bin/sh\necho "args: $*"\nsha256sum stap_abc.ko\nls\n')
    for program in ("staprun", "staprun.real"):
        (bindir / program).chmod(0o755)
    work = tmp_path / "stapsh.X"
    work.mkdir()
    parts = [os.urandom(1000) for _ in range(11)]  # part10 sorts after part09, not after part01
    for index, part in enumerate(parts):
        (work / f"stap_abc.ko.part{index:02d}").write_bytes(part)
    output = subprocess.run([str(bindir / "staprun"), "-R", "./stap_abc.ko"], cwd=work, capture_output=True,
                            text=True, check=True, timeout=30).stdout
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    assert output.splitlines() == ["args: -R ./stap_abc.ko", f"{digest}  stap_abc.ko", "stap_abc.ko"]


def test_the_guests_staprun_without_parts_only_runs_systemtaps(tmp_path: Path) -> None:
    (tmp_path / "staprun").write_bytes(PARTS_SCRIPT.read_bytes())
    (tmp_path / "staprun.real").write_text('#!/bin/sh\necho "real $*"; exit 3\n')
    for program in ("staprun", "staprun.real"):
        (tmp_path / program).chmod(0o755)
    done = subprocess.run([str(tmp_path / "staprun"), "-x", "1"], cwd=tmp_path, capture_output=True, text=True, check=False,
                          timeout=30)
    assert (done.stdout, done.returncode) == ("real -x 1\n", 3)


def test_when_stap_leaves_the_guests_end_sees_a_hang_up(relayed) -> None:  # type: ignore[no-untyped-def]
    """Not a half-close: QEMU, not reading while stapsh restarts, would keep the connection
    and leave the next stap's in its backlog, unserved."""
    stapsh, _, client, replies, control = relayed
    control.say(b"ready 17\n")
    client.sendall(b"stap 5.6\n")
    replies.readline()
    client.sendall(b"run -R ./stap_abc.ko\n")
    assert replies.readline() == b"OK\n"
    replies.close()  # the socket's descriptor closes with its last file object
    client.close()
    assert stapsh.hung_up.wait(10)


def test_a_stopped_relay_leaves_no_thread_behind(tmp_path: Path) -> None:
    relay = StapshRelay(tmp_path / "stap.sock", tmp_path / "qemu.sock", tmp_path / "control.sock")
    relay.start()
    assert relay.accepting is not None and relay.accepting.is_alive()
    relay.stop()
    relay.accepting.join(5)
    assert not relay.accepting.is_alive() and not (tmp_path / "stap.sock").exists()


def _run_staprun(client: socket.socket, replies) -> None:  # type: ignore[no-untyped-def]
    client.sendall(b"stap 5.6\n")
    assert replies.readline().startswith(b"stapsh 5.6 ")
    client.sendall(b"run -R ./stap_abc.ko\n")
    assert replies.readline() == b"OK\n"


def test_stap_interrupted_is_a_sigint_for_the_guests_staprun_and_the_end_output_arrives(relayed) -> None:  # type: ignore[no-untyped-def]
    """stapsh's own `quit` would SIGHUP staprun and exit without reading what the end probes
    print (stapsh.c: do_quit -> cleanup); on stap's own machine the SIGINT reaches staprun."""
    stapsh, relay, client, replies, control = relayed
    stapsh.after_run = b"data stdout 24\nsystemtap starting probe\n"
    control.say(b"ready 17\n")
    _run_staprun(client, replies)
    assert replies.readline() == b"data stdout 24\n"
    assert replies.readline() == b"systemtap starting probe\n"
    client.sendall(b"quit\n")  # what stap sends when DejaGnu's kill -INT reaches it
    assert control.interrupted.wait(10)
    assert stapsh.run_connection is not None
    stapsh.run_connection.sendall(b"data stdout 22\nsystemtap ending probe\nquit\n")  # staprun's end, then stapsh leaves
    assert replies.read(len(b"data stdout 22\nsystemtap ending probe\nquit\n")) == \
        b"data stdout 22\nsystemtap ending probe\nquit\n"
    deadline = time.monotonic() + 10  # the relay notes the pid once the guest's answer reached it
    while not relay.interrupted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert control.requests == [b"INT\n"] and relay.interrupted == [4242]
    replies.close()
    client.close()
    stapsh.thread.join(10)
    assert b"quit\n" not in stapsh.commands and stapsh.commands[-1] == b""


def test_stap_interrupted_with_no_staprun_running_is_stapshs_own_quit(relayed) -> None:  # type: ignore[no-untyped-def]
    stapsh, relay, client, replies, control = relayed
    stapsh.after_run = b""
    control.staprun = None
    control.say(b"ready 17\n")
    _run_staprun(client, replies)
    client.sendall(b"quit\n")
    stapsh.thread.join(10)
    assert stapsh.commands[-1] == b"quit\n" and relay.interrupted == []


def test_stap_waits_until_the_guest_says_a_stapsh_is_ready(relayed) -> None:  # type: ignore[no-untyped-def]
    """A connection made before the next stapsh has its port open with O_ASYNC may never be
    noticed by it, and its bytes can reach the stapsh before, which drops them."""
    stapsh, _, client, replies, control = relayed
    client.sendall(b"stap 5.6\n")
    assert not stapsh.accepted.wait(0.5)
    control.say(b"ready 23\n")
    assert replies.readline().startswith(b"stapsh 5.6 ")


def test_a_stapsh_that_missed_the_connection_is_kicked(relayed, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    stapsh, _, client, replies, control = relayed
    monkeypatch.setattr(stapsh_relay, "KICK_S", 0.2)
    stapsh.hold_hello = control.kicked
    control.say(b"ready 17\n")
    started = time.monotonic()
    client.sendall(b"stap 5.6\n")
    assert replies.readline().startswith(b"stapsh 5.6 ")
    assert b"KICK\n" in control.requests and time.monotonic() - started < 5


def test_a_stapsh_gone_before_any_connection_is_not_offered() -> None:
    control = stapsh_relay.GuestControl("/nonexistent")
    control._heard(b"ready 3\n")
    control._heard(b"gone 3\n")
    control._heard(b"garbage from a guest\n")
    assert control.take_ready(0.1) is None
    control._heard(b"ready 4\n")
    assert control.take_ready(0.1) == 4 and control.take_ready(0.1) is None


def test_stapshs_debug_lines_before_a_reply_reach_stap_and_the_stream_stays_in_step(relayed) -> None:  # type: ignore[no-untyped-def]
    """stap -vvv sends `option verbose`; stapsh then writes debug lines on the port before each
    reply, which stap prints and skips (remote.cxx: get_reply). Read as one line, a reply with
    debug lines before it hung the session (stap_bufsize.exp)."""
    _, relay, client, replies, control = relayed
    control.say(b"ready 17\n")
    client.sendall(b"stap 5.6\n")
    assert replies.readline().startswith(b"stapsh 5.6 ")
    client.sendall(b"option verbose\n")
    assert replies.readline() == b"stapsh:process_command:713 command: option verbose\n"
    assert replies.readline() == b"OK\n"
    module = os.urandom(LIMIT + 10)
    client.sendall(b"file %d stap_abc.ko\n" % len(module) + module)  # two parts, a debug line before each OK
    assert [replies.readline() for _ in range(3)] == [
        b"stapsh:process_command:713 command: file %d stap_abc.ko.part00\n" % LIMIT,
        b"stapsh:process_command:713 command: file 10 stap_abc.ko.part01\n", b"OK\n"]
    client.sendall(b"option data\n")
    assert [replies.readline() for _ in range(2)] == [b"stapsh:process_command:713 command: option data\n", b"OK\n"]
    assert relay.split == [("stap_abc.ko", len(module), 2)]


def test_a_guest_that_is_gone_offers_no_stapsh_at_once(tmp_path: Path) -> None:
    """QEMU closed the control port (the guest died): a stap waiting for a stapsh is told at
    once, not after READY_WAIT_S."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "control.sock"))
    server.listen(1)
    control = stapsh_relay.GuestControl(str(tmp_path / "control.sock"))
    control.start()
    connection, _ = server.accept()
    connection.sendall(b"ready 9\n")
    assert control.take_ready(10) == 9
    connection.close()
    started = time.monotonic()
    assert control.take_ready(30) is None and time.monotonic() - started < 5
    control.thread.join(5)
    assert not control.thread.is_alive()


def test_a_command_substitution_is_evaluated_by_the_guests_shell(relayed) -> None:  # type: ignore[no-untyped-def]
    _, relay, _, _, control = relayed
    deadline = time.monotonic() + 10
    while not relay.control.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert relay.control.evaluate("grep -v major /proc/partitions | awk '{print $4}' | head -1", 10) == "vda\n"
    assert relay.control.evaluate("true", 10) == ""
    assert control.requests[0] == b"EVAL " + base64.b64encode(b"grep -v major /proc/partitions | awk '{print $4}' | head -1") + b"\n"
    with pytest.raises(ValueError, match="at most 4096"):
        relay.control.evaluate("x" * 5000, 1)
