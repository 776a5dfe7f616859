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
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from io import BufferedReader
from pathlib import Path

logger = logging.getLogger(__name__)

STAPSH_MAX_FILE_SIZE = 32_000_000  # staprun/stapsh.c
MAX_PARTS = 99  # NAME.part00 .. NAME.part99 (staprun-parts joins two-digit parts in order)
MAX_LINE = 64 * 1024  # a command line; stapsh's own buffer is smaller
CHUNK = 1024 * 1024
# stapsh's own rule for a file name ("[a-z0-9][a-z0-9._]*", upper case allowed).
FILE_RE = re.compile(rb"file ([0-9]{1,12}) ([A-Za-z0-9][A-Za-z0-9._]{0,200})\n")
ONE_REPLY = (b"stap ", b"option ")  # commands answered by exactly one line (and `file`)


class Closed(Exception):
    """One side of the session left."""


def _read_line(stream: BufferedReader) -> bytes:
    line = stream.readline(MAX_LINE)
    if not line:
        raise Closed
    return line


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
    limit; the reply stap gets (OK, or stapsh's first error: the rest of the file is read
    and dropped, so the command stream stays in step) and the number of parts sent."""
    sent, index = 0, 0
    while sent < size:
        part = min(STAPSH_MAX_FILE_SIZE, size - sent)
        guest.sendall(b"file %d %s.part%02d\n" % (part, name, index))
        _copy(client, part, guest)
        reply = _read_line(guest_in)
        sent, index = sent + part, index + 1
        if reply != b"OK\n":
            _copy(client, size - sent, None)
            return reply, index
    return b"OK\n", index


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
    for end in ends:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


class StapshRelay:
    """Listens on `listen` (where stap --remote=unix: connects) and serves each connection
    through a connection of its own to `upstream` (QEMU's end of the guest's stapsh port), both
    in one directory.

    A socket's path must fit in 108 bytes (sockaddr_un), and a cell's guest directory below
    the artifacts can be longer: both sockets are reached through /proc/self/fd/N/NAME, N an
    open descriptor of their directory."""

    def __init__(self, listen: Path, upstream: Path) -> None:
        if listen.parent != upstream.parent:
            raise ValueError(f"the relay's sockets must share a directory: {listen}, {upstream}")
        self.listen, self.upstream = listen, upstream
        self.split: list[tuple[str, int, int]] = []  # (name, bytes, parts) of each file sent in parts
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
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                server.close()
        with self._lock:
            sessions = list(self._sessions)
        for connection in sessions:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
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
            try:
                guest.connect(self._short(self.upstream))
            except OSError as error:
                # stap then reads no hello: "error receiving hello from stapsh", which the
                # examples' runner counts as the remote machinery failing, not the test.
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
        _pump(client_in, guest, ends)
        towards_client.join()

    def _commands(self, client: socket.socket, client_in: BufferedReader, guest: socket.socket,
                  guest_in: BufferedReader) -> None:
        """The command-and-reply part of a session, up to `run` or a line it does not know."""
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
            client.sendall(_read_line(guest_in))
