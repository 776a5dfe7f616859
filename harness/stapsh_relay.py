"""A relay between `stap --remote` and a guest's stapsh that lifts stapsh's file size limit.

stapsh takes no file over 32,000,000 bytes (staprun/stapsh.c, STAPSH_MAX_FILE_SIZE, the same
in systemtap's master), and a module built with `--all-modules` for Debian's kernel is larger
(the examples profiling/fileline-profile and profiling/periodic); on the machine under test
it would load. stap then does not even say why: its pass 5 drops the failure of the file
transfer (main.cxx: pass_5_1's status is overwritten by pass_5_2's since PR30321, systemtap
commit be7e131bd) and reports only "Failed reading staprun_args_stapsh". That failure would be
the harness's, not systemtap's.

The relay listens where stap connects and passes every byte through unchanged, except a
`file SIZE NAME` command over the limit: that file goes to stapsh as NAME.part00,
NAME.part01, ... (each within the limit, each acknowledged before the next), stap gets the
one reply it expects, and the guest's staprun (harness/guest/staprun-parts) joins the parts
before systemtap's staprun reads NAME.

The protocol (staprun/stapsh.c): stap sends `stap VERSION`, `option NAME` and `file SIZE
NAME` (then SIZE bytes) and reads one reply line after each; then `run ARGS`, after which
staprun's framed output flows one way and `quit` the other. The relay follows the lines up to
`run` (or any line it does not know), then pumps bytes both ways until either side leaves.

Two more things stapsh gets wrong for a test that is not on its own machine, and the relay
mends through a control port of the guest's init (org.stapmatrix.control.0, GuestControl):

- Interrupts. stap sends `quit` when it is interrupted (remote.cxx: pending_interrupts), and
  stapsh's `quit` sends staprun SIGHUP and exits without reading staprun's pipes again
  (stapsh.c: do_quit -> cleanup), so the end probes' output is lost. On its own machine the
  same SIGINT reaches staprun (DejaGnu's `kill -INT -PID` signals stap's process group) and
  the end probes' output is printed: systemtap's tests expect it (lib/stap_run.exp: "systemtap
  ending probe"). So the relay turns a `quit` after `run` into a SIGINT for the guest's
  staprun; stapsh forwards what the end probes print and says `quit` when staprun is done.
- One stapsh after another. stapsh serves one connection and exits; init starts the next. A
  connection made before the next stapsh has its port open with O_ASYNC is one stapsh may
  never learn of (it learns that a host connected only from SIGIO: stapsh.c
  sigio_port_status), and bytes a departing stapsh had not read are dropped when it closes the
  port (the kernel's drivers/char/virtio_console.c: port_fops_release discards the port's
  data), so the next stap's `stap VERSION` was lost and it waited for a hello that never came.
  So each connection to stapsh waits until init reports a new stapsh `ready`, and one stapsh
  serves one connection.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import select
import socket
import threading
from io import BufferedReader
from pathlib import Path

logger = logging.getLogger(__name__)

STAPSH_MAX_FILE_SIZE = 32_000_000  # staprun/stapsh.c
MAX_PARTS = 99  # NAME.part00 .. NAME.part99 (staprun-parts joins two-digit parts in order)
MAX_LINE = 64 * 1024  # a command line; stapsh's own buffer is smaller
MAX_DEBUG_LINES = 1000  # stapsh's debug lines before one reply (a few, at -vvvv)
CHUNK = 1024 * 1024
# stapsh's own rule for a file name ("[a-z0-9][a-z0-9._]*", upper case allowed).
FILE_RE = re.compile(rb"file ([0-9]{1,12}) ([A-Za-z0-9][A-Za-z0-9._]{0,200})\n")
ONE_REPLY = (b"stap ", b"option ")  # commands answered by exactly one line (and `file`)
# A stapsh restart takes well under a second even under TCG; this long means init stopped.
READY_WAIT_S = 120.0
# Waiting for stapsh's hello: every KICK_S a SIGIO from init makes a stapsh that missed the
# host's connection look again (stapsh.c: sigio_handler polls the port's real status).
KICK_S = 2.0
HELLO_WAIT_S = 60.0
INTERRUPT_ANSWER_S = 10.0  # init answers at once; a guest this slow is not serving anyway
CONTROL_LINE_RE = re.compile(rb"(ready|gone|signalled) ([0-9]{1,9})\n|nobody\n|(evaluated) ([A-Za-z0-9+/=]{0,8192})\n")
EVALUATE_LIMIT = 4096  # bytes of a command the guest evaluates, and of what it prints


class Closed(Exception):
    """One side of the session left."""


def _read_line(stream: BufferedReader) -> bytes:
    line = stream.readline(MAX_LINE)
    if not line:
        raise Closed
    return line


def _read_reply(stream: BufferedReader) -> bytes:
    """stapsh's reply to a command with the debug lines before it: with `option verbose`
    (stap -vvv) stapsh writes `stapsh:FUNCTION:LINE ...` lines on the same port, which stap
    prints and skips (remote.cxx: get_reply). Read as one line, a reply with debug lines
    before it left the real reply unread and the session stuck (seen: stap_bufsize.exp)."""
    lines = [_read_line(stream)]
    while lines[-1].startswith(b"stapsh:") and len(lines) < MAX_DEBUG_LINES:
        lines.append(_read_line(stream))
    return b"".join(lines)


def _copy(source: BufferedReader, size: int, target: socket.socket | None) -> None:
    """Exactly `size` bytes from `source` to `target` (None: read and dropped)."""
    while size > 0:
        data = source.read(min(CHUNK, size))
        if not data:
            raise Closed
        if target is not None:
            target.sendall(data)
        size -= len(data)


def send_in_parts(name: bytes, size: int, client: BufferedReader, guest: socket.socket,
                  guest_in: BufferedReader) -> tuple[bytes, int]:
    """Send a `size`-byte file from `client` to stapsh as NAME.partNN pieces within its
    limit; what stap gets (stapsh's debug lines, then OK or stapsh's first error: the rest of
    the file is read and dropped, so the command stream stays in step) and the parts sent."""
    sent, index, debug = 0, 0, b""
    while sent < size:
        part = min(STAPSH_MAX_FILE_SIZE, size - sent)
        guest.sendall(b"file %d %s.part%02d\n" % (part, name, index))
        _copy(client, part, guest)
        *said, reply = _read_reply(guest_in).splitlines(keepends=True)
        debug += b"".join(said)
        sent, index = sent + part, index + 1
        if reply != b"OK\n":
            _copy(client, size - sent, None)
            return debug + reply, index
    return debug + b"OK\n", index


def _hang_up(*ends: socket.socket) -> None:
    """Shut each socket both ways: shutdown() wakes a thread blocked on it, close() does not."""
    for end in ends:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


def _pump(source: BufferedReader, target: socket.socket, ends: tuple[socket.socket, ...]) -> None:
    """Bytes from `source` to `target` until `source` ends; then the session ends, both ways.

    Not a half-close: stap never half-closes (when it leaves, it is gone), and QEMU reads its
    socket only while the guest has the port open, so it would not see an end-of-file while
    stapsh restarts, would keep the connection, and would leave the next one in its backlog,
    unserved (seen: DejaGnu's next `stap -l` waited 8 minutes for stapsh's hello). Closing
    both directions is what stap's own exit did before the relay: a hang-up QEMU notices."""
    with contextlib.suppress(OSError):
        while data := source.read1(CHUNK):
            target.sendall(data)
    _hang_up(*ends)


class GuestControl:
    """The host's end of the guest init's control port (org.stapmatrix.control.0,
    harness/guest/init): init says `ready PID` when a stapsh has its port open with O_ASYNC and
    `gone PID` when it exited; the relay says `INT` (a SIGINT for the running staprun, answered
    `signalled PID` or `nobody`), `KICK` (a SIGIO for stapsh) and `EVAL BASE64` (a command
    for the guest's shell, answered `evaluated BASE64` with what it printed). One connection
    for the guest's life, made as soon as QEMU listens."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._socket: socket.socket | None = None
        self._ready: int | None = None  # the pid of a stapsh no connection has had yet
        self._answer: re.Match[bytes] | None = None  # init's answer to the request in flight
        self._asking = threading.Lock()  # one request (INT, EVAL) at a time
        self._changed = threading.Condition()
        self._send_lock = threading.Lock()
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stapsh-control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopped.set()
        connection = self._socket
        if connection is not None:
            _hang_up(connection)
        with self._changed:
            self._changed.notify_all()

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def _run(self) -> None:
        while not self._stopped.is_set():
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(self.path)
            except OSError:
                connection.close()
                self._stopped.wait(0.1)  # QEMU is not listening yet
                continue
            self._socket = connection
            with connection, connection.makefile("rb") as lines, contextlib.suppress(OSError):
                while not self._stopped.is_set() and (line := lines.readline(256)):
                    self._heard(line)
            self._socket = None
            # QEMU left: the guest is gone, and a stap waiting for a stapsh gets none at once.
            self._stopped.set()
            with self._changed:
                self._changed.notify_all()
            return

    def _heard(self, line: bytes) -> None:
        match = CONTROL_LINE_RE.fullmatch(line)
        if not match:
            logger.info("stapsh control: ignored %r from the guest", line[:80])
            return
        with self._changed:
            if match[1] == b"ready":
                self._ready = int(match[2])
            elif match[1] == b"gone":
                if self._ready == int(match[2]):
                    self._ready = None
            else:
                self._answer = match  # signalled, nobody, evaluated
            self._changed.notify_all()

    def take_ready(self, timeout_s: float) -> int | None:
        """The pid of a stapsh ready for a connection (taken: it serves one), or None."""
        with self._changed:
            self._changed.wait_for(lambda: self._ready is not None or self._stopped.is_set(), timeout_s)
            pid, self._ready = self._ready, None
            return pid

    def _send(self, word: bytes) -> bool:
        connection = self._socket
        if connection is None:
            return False
        with self._send_lock, contextlib.suppress(OSError):
            connection.sendall(word + b"\n")
            return True
        return False

    def kick(self) -> None:
        self._send(b"KICK")

    def _ask(self, request: bytes, timeout_s: float) -> re.Match[bytes] | None:
        """init's answer to `request`, or None: no guest answered."""
        with self._asking, self._changed:
            self._answer = None
            if not self._send(request):
                return None
            self._changed.wait_for(lambda: self._answer is not None or self._stopped.is_set(), timeout_s)
            return self._answer

    def evaluate(self, command: str, timeout_s: float) -> str | None:
        """What the guest's shell prints for `command` (its own `sh -c`, at most 10 s there),
        or None: no guest answered. For a command substitution an example's command makes on
        the machine under test (harness/example_run.py)."""
        if len(command.encode()) > EVALUATE_LIMIT:
            raise ValueError(f"a command of {len(command.encode())} bytes for the guest: at most {EVALUATE_LIMIT}")
        answer = self._ask(b"EVAL " + base64.b64encode(command.encode()), timeout_s)
        if answer is None or answer[3] != b"evaluated":
            return None
        return base64.b64decode(answer[4])[:EVALUATE_LIMIT].decode("utf-8", "replace")

    def interrupt(self, timeout_s: float) -> int | None:
        """SIGINT for the guest's staprun: its pid, or None (none runs, or no answer)."""
        answer = self._ask(b"INT", timeout_s)
        return int(answer[2]) if answer is not None and answer[1] == b"signalled" else None


class StapshRelay:
    """Listens on `listen` (where stap --remote=unix: connects) and serves each connection
    through a connection of its own to `upstream` (QEMU's end of the guest's stapsh port),
    once the guest's `control` port (GuestControl) says a fresh stapsh is ready; all three in
    one directory.

    A socket's path must fit in 108 bytes (sockaddr_un), and a cell's guest directory below
    the artifacts can be longer: the sockets are reached through /proc/self/fd/N/NAME, N an
    open descriptor of their directory."""

    def __init__(self, listen: Path, upstream: Path, control: Path) -> None:
        if not listen.parent == upstream.parent == control.parent:
            raise ValueError(f"the relay's sockets must share a directory: {listen}, {upstream}, {control}")
        self.listen, self.upstream, self.control_path = listen, upstream, control
        self.split: list[tuple[str, int, int]] = []  # (name, bytes, parts) of each file sent in parts
        self.interrupted: list[int] = []  # the guest's staprun pids that got a SIGINT for stap's `quit`
        self.control: GuestControl | None = None
        self._server: socket.socket | None = None
        self.accepting: threading.Thread | None = None
        self._directory: int | None = None
        self._sessions: set[socket.socket] = set()
        self._lock = threading.Lock()

    def _short(self, path: Path) -> str:
        return f"/proc/self/fd/{self._directory}/{path.name}"

    def start(self) -> None:
        self.listen.unlink(missing_ok=True)
        self._directory = os.open(self.listen.parent, os.O_RDONLY | os.O_DIRECTORY)
        self.control = GuestControl(self._short(self.control_path))
        self.control.start()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self._short(self.listen))
        server.listen(4)
        self._server = server
        self.accepting = threading.Thread(target=self._accept, args=(server,),
                                          name=f"stapsh-relay-{self.listen.name}", daemon=True)
        self.accepting.start()

    def stop(self) -> None:
        """Stop listening and end every session (a guest that is stopped serves nobody)."""
        server, self._server = self._server, None
        if server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not, and every
            # guest boot would leave one behind (seen: seven in one selftest worker).
            _hang_up(server)
            with contextlib.suppress(OSError):
                server.close()
        if self.control is not None:
            self.control.stop()
        with self._lock:
            sessions = list(self._sessions)
        _hang_up(*sessions)
        self.listen.unlink(missing_ok=True)
        directory, self._directory = self._directory, None
        if directory is not None:
            os.close(directory)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._session, args=(client,), name=f"stapsh-relay-{self.listen.name}-session",
                             daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with client, guest:
            # stap then reads no hello: "error receiving hello from stapsh", which the
            # examples' runner counts as the remote machinery failing, not the test.
            assert self.control is not None
            pid = self.control.take_ready(READY_WAIT_S)
            if pid is None:
                logger.info("stapsh relay: no stapsh became ready in the guest within %.0f s", READY_WAIT_S)
                return
            try:
                guest.connect(self._short(self.upstream))
            except OSError as error:
                logger.info("stapsh relay: cannot reach the guest at %s (%s)", self.upstream, error)
                return
            with self._lock:
                self._sessions.update((client, guest))
            try:
                self._serve(client, guest)
            except (Closed, OSError):
                pass
            finally:
                with self._lock:
                    self._sessions.difference_update((client, guest))

    def _serve(self, client: socket.socket, guest: socket.socket) -> None:
        client_in, guest_in = client.makefile("rb"), guest.makefile("rb")
        self._commands(client, client_in, guest, guest_in)
        # staprun runs: its output one way, `quit` the other, through whatever is buffered.
        ends = (client, guest)
        towards_client = threading.Thread(target=_pump, args=(guest_in, client, ends), daemon=True,
                                          name=f"stapsh-relay-{self.listen.name}-output")
        towards_client.start()
        self._interrupts(client_in, guest, ends)
        towards_client.join()

    def _interrupts(self, client_in: BufferedReader, guest: socket.socket, ends: tuple[socket.socket, ...]) -> None:
        """stap's side once staprun runs: each `quit` (stap was interrupted) becomes a SIGINT
        for the guest's staprun, as on stap's own machine; stapsh's `quit` only when no
        staprun runs to take it. Then, when stap leaves, the session ends both ways (_pump)."""
        assert self.control is not None
        with contextlib.suppress(OSError):
            while line := client_in.readline(MAX_LINE):
                if line == b"quit\n":
                    pid = self.control.interrupt(INTERRUPT_ANSWER_S)
                    if pid is not None:
                        self.interrupted.append(pid)
                        logger.info("stapsh relay: stap was interrupted: SIGINT to staprun %d in the guest", pid)
                        continue
                guest.sendall(line)
        _hang_up(*ends)

    def _hello(self, guest: socket.socket, guest_in: BufferedReader) -> bytes:
        """stapsh's first reply, asking init to kick a stapsh that missed the connection."""
        assert self.control is not None
        poller = select.poll()
        poller.register(guest, select.POLLIN | select.POLLHUP)
        waited = 0.0
        while not poller.poll(int(KICK_S * 1000)):
            waited += KICK_S
            if waited >= HELLO_WAIT_S:
                logger.info("stapsh relay: the guest's stapsh did not answer within %.0f s", HELLO_WAIT_S)
                raise Closed
            logger.info("stapsh relay: no hello from stapsh after %.0f s: kicking it", waited)
            self.control.kick()
        return _read_reply(guest_in)

    def _commands(self, client: socket.socket, client_in: BufferedReader, guest: socket.socket,
                  guest_in: BufferedReader) -> None:
        """The command-and-reply part of a session, up to `run` or a line it does not know."""
        first = True
        while True:
            line = _read_line(client_in)
            file = FILE_RE.fullmatch(line)
            size = int(file[1]) if file else 0
            if file and STAPSH_MAX_FILE_SIZE < size <= STAPSH_MAX_FILE_SIZE * MAX_PARTS:
                reply, parts = send_in_parts(file[2], size, client_in, guest, guest_in)
                client.sendall(reply)
                name = file[2].decode()
                self.split.append((name, size, parts))
                logger.info("stapsh relay: sent %s (%d bytes) in %d parts", name, size, parts)
                continue
            guest.sendall(line)
            if file:
                _copy(client_in, size, guest)
            elif not line.startswith(ONE_REPLY):
                return
            client.sendall(self._hello(guest, guest_in) if first else _read_reply(guest_in))
            first = False
