"""Reading files that come from outside (results files, artifacts, cache entries, config
fragments): regular files only, opened without blocking, never more than a limit.

A FIFO would block `open` for reading until a writer appears and `/dev/zero` never ends, so
each file is checked with stat before it is opened, opened with O_NONBLOCK, and checked again
with fstat on the descriptor (what was opened, not what the name meant a moment earlier).
Files of /proc and /sys are regular but report size 0: reads stop at the limit all the same.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MIB = 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))


class UnreadableFile(Exception):
    """A file that is not read, and why, in words that follow its path: "is a FIFO, not a
    regular file", "is 3.2 GiB, more than the 256 MiB a results file may be"."""


def kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _open_regular(path: Path, follow: bool) -> int:
    try:
        before = os.stat(path, follow_symlinks=follow)
    except OSError as error:
        raise UnreadableFile(f"cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise UnreadableFile(f"is {kind(before.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise UnreadableFile(f"cannot be read: {error.strerror}") from None
    opened = os.fstat(descriptor)
    if not stat.S_ISREG(opened.st_mode):
        os.close(descriptor)
        raise UnreadableFile(f"is {kind(opened.st_mode)}, not a regular file")
    return descriptor


def read_bounded(path: Path, limit: int, what: str, follow: bool = True) -> bytes:
    """The whole of a regular file of at most `limit` bytes; anything else raises
    UnreadableFile saying why (`what` names the kind of file for the message)."""
    descriptor = _open_regular(path, follow)
    with os.fdopen(descriptor, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > limit:
            raise UnreadableFile(f"is {size_text(size)}, more than the {size_text(limit)} {what} may be")
        data = stream.read(limit + 1)
    if len(data) > limit:  # a file that grew, or one of /proc that reports no size
        raise UnreadableFile(f"holds more than the {size_text(limit)} {what} may be")
    return data


def read_tail(path: Path, limit: int) -> tuple[bytes, int]:
    """(the last `limit` bytes of a regular file, its size)."""
    descriptor = _open_regular(path, follow=True)
    with os.fdopen(descriptor, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        stream.seek(max(0, size - limit))
        data = stream.read(limit)
    return data, max(size, len(data))


def inside(path: str | Path, root: str | Path) -> Path | None:
    """`path` with every symlink resolved, when that lies inside `root` (resolved too);
    None for a path that leaves it (`..`, an absolute path elsewhere, a symlink out)."""
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, path))
    except (OSError, ValueError):
        return None
    if os.path.commonpath([real, real_root]) != real_root:
        return None
    return Path(real)
