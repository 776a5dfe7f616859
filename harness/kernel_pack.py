"""A kernel store entry as one compressed tarball, and back: what a CI job saves in the
Actions cache so the next job with the same kernel does not download its 1 GB `-dbg`
package and extract it again.

    stapmatrix kernel-store pack KEY... --output DIR     DIR/KEY.tar.zst (or .tar.xz)
    stapmatrix kernel-store unpack FILE-OR-DIR...        into the store, checked

The archive holds `manifest.json` and `root/` of the entry (harness/kernel_store.py).
Compression is zstd when the host has the `zstd` program (fast both ways, several cores),
else xz from Python's own lzma.

A tarball comes back from a cache anyone with write access to it may have filled, so it is
read as hostile: its name must be KEY.tar.zst|xz with a store key, and each member must be a
regular file, a directory or a link under `manifest.json` or `root/`; no absolute or `..`
names, no device files; a link must stay inside root/ (an absolute target is a path in the
containers, where root/ is mounted at `/`, and is checked as such); modes lose setuid bits and
owners are the unpacking user's (tarfile's `data` filter). The total size and the number of
members are bounded. The tree is unpacked beside the store and enters it only when its
manifest is an intact cache entry whose vmlinuz and vmlinux are regular files inside it; an
entry the store already has is left as it is.
"""

from __future__ import annotations

import logging
import lzma
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from filelock import FileLock

from harness import cache, kernel_store
from harness.errors import InfraError, MatrixError

logger = logging.getLogger(__name__)

KEY_RE = re.compile(r"(deb|git|path)-[0-9a-f]{24}")
NAME_RE = re.compile(rf"(?P<key>{KEY_RE.pattern})\.tar\.(?P<kind>zst|xz)")
UNPACKED_LIMIT = 40 * 1024**3  # bytes: a Debian kernel with its modules' debuginfo is ~7 GB
MEMBER_LIMIT = 400_000  # a kernel's headers, modules and their debuginfo: ~20,000 files
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
PROGRAM_LIMIT_S = 3600


def compressor() -> str:
    """`zst` when the host has zstd, else `xz` (Python's lzma: slower, always there)."""
    return "zst" if shutil.which("zstd") else "xz"


# --- pack ------------------------------------------------------------------------------------

def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def pack(key: str, output: Path) -> Path:
    """The store entry `key` as OUTPUT/KEY.tar.zst (or .xz); written beside and renamed, so a
    cache never saves half a file."""
    check_key(key, "kernel-store pack")
    tree = kernel_store.find(key)
    if tree is None:
        raise MatrixError(f"kernel-store pack {key}: the kernel store has no such entry (run its cell first; "
                          f"`stapmatrix kernel-store list` shows what it has)")
    output.mkdir(parents=True, exist_ok=True)
    kind = compressor()
    final = output / f"{key}.tar.{kind}"
    partial = output / f".{final.name}.partial-{os.getpid()}"
    entry = kernel_store.store_dir() / key
    try:
        if kind == "zst":
            _pack_zstd(entry, partial)
        else:
            with tarfile.open(partial, "w:xz", preset=1, format=tarfile.PAX_FORMAT) as tar:
                _add_entry(tar, entry)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def _add_entry(tar: tarfile.TarFile, entry: Path) -> None:
    tar.add(entry / "manifest.json", arcname="manifest.json", filter=_owned_by_root)
    tar.add(entry / "root", arcname="root", filter=_owned_by_root)  # recursive, sorted, links as links


def _pack_zstd(entry: Path, partial: Path) -> None:
    command = ["zstd", "-q", "-3", "-T0", "-f", "-o", str(partial)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert process.stdin is not None
    try:
        with tarfile.open(fileobj=process.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_entry(tar, entry)
        process.stdin.close()
        code = process.wait(timeout=PROGRAM_LIMIT_S)
    except BaseException:
        process.kill()
        process.wait()
        raise
    if code != 0:
        raise InfraError(f"packing {entry.name}: zstd exited {code}")


# --- unpack ----------------------------------------------------------------------------------

def check_key(key: str, where: str) -> str:
    if not KEY_RE.fullmatch(key):
        raise MatrixError(f"{where}: {key[:80]!r} is not a kernel store key (deb-, git- or path- and 24 hex digits)")
    return key


def archives(paths: list[Path]) -> list[Path]:
    """The tarballs named: files as they are, directories' KEY.tar.* files (an empty
    directory, a cache that missed, is none)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if NAME_RE.fullmatch(p.name))
        elif path.exists():
            found.append(path)
        else:
            raise MatrixError(f"kernel-store unpack {path}: no such file or directory")
    return found


class _Limits:
    """tarfile's `data` filter, plus what a kernel tree may hold and how much of it."""

    def __init__(self, destination: Path, where: str) -> None:
        self.destination = destination
        self.where = where
        self.total = 0
        self.members = 0

    def refuse(self, member: tarfile.TarInfo, why: str) -> InfraError:
        return InfraError(f"{self.where}: member {member.name[:200]!r} {why}: not a kernel store entry "
                          "(the tarball was damaged or written by someone else; delete it)")

    def __call__(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        self.members += 1
        self.total += max(member.size, 0)
        if self.members > MEMBER_LIMIT or self.total > UNPACKED_LIMIT:
            raise self.refuse(member, f"takes the archive past {MEMBER_LIMIT} members or {UNPACKED_LIMIT} bytes")
        name = member.name
        if name not in ("manifest.json", "root") and not name.startswith("root/"):
            raise self.refuse(member, "lies outside manifest.json and root/")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise self.refuse(member, "is not a file, directory or link")
        if name == "manifest.json" and not member.isreg():
            raise self.refuse(member, "is not a regular file")
        checked = member
        if member.issym() and member.linkname.startswith("/"):
            # A container path: root/ is mounted at `/`. Checked as the link it is there.
            relative = posixpath.relpath("root" + posixpath.normpath(member.linkname), posixpath.dirname(name))
            if posixpath.normpath(member.linkname) != member.linkname.rstrip("/") or ".." in member.linkname.split("/"):
                raise self.refuse(member, f"links to {member.linkname[:200]!r}, which is not a plain path")
            checked = member.replace(linkname=relative, deep=False)
        try:
            filtered = tarfile.data_filter(checked, path)
        except tarfile.FilterError as error:
            raise self.refuse(member, f"is refused ({error.__class__.__name__})") from None
        if filtered is None:
            raise self.refuse(member, "is refused")
        return filtered.replace(linkname=member.linkname, deep=False) if checked is not member else filtered


def _open_stream(archive: Path) -> tuple[IO[bytes], Callable[[], None]]:
    """The archive's tar stream, decompressed, and how to close it (and check zstd's exit)."""
    with archive.open("rb") as probe:
        magic = probe.read(6)
    if magic.startswith(ZSTD_MAGIC):
        if not shutil.which("zstd"):
            raise InfraError(f"{archive}: a zstd archive, and zstd is not installed: `apt-get install zstd`")
        process = subprocess.Popen(["zstd", "-q", "-dc", str(archive)], stdout=subprocess.PIPE)
        assert process.stdout is not None
        stream = process.stdout

        def close() -> None:
            stream.close()
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = -9
            if code not in (0, -13, 141):  # a stream closed early (a refused member) is not zstd's fault
                raise InfraError(f"{archive}: zstd could not decompress it (exit {code})")

        return stream, close
    if magic.startswith(XZ_MAGIC):
        xz = lzma.open(archive)  # noqa: SIM115 - closed by the caller, after the tar stream
        return xz, xz.close  # type: ignore[return-value]
    raise InfraError(f"{archive}: neither a zstd nor an xz archive (it starts with {magic!r}): delete it")


def unpack(archive: Path) -> tuple[str, bool]:
    """Unpack one KEY.tar.* into the store: (key, whether it was unpacked; False when the
    store already had it)."""
    match = NAME_RE.fullmatch(archive.name)
    if not match:
        raise MatrixError(f"kernel-store unpack {archive}: not a KEY.tar.zst or KEY.tar.xz file "
                          "(`stapmatrix kernel-store pack` names them so)")
    if not archive.is_file() or archive.is_symlink():
        raise MatrixError(f"kernel-store unpack {archive}: not a regular file")
    key = match["key"]
    if kernel_store.find(key):
        return key, False
    store = kernel_store.store_dir()
    with FileLock(str(store / f".{key}.lock")):
        if kernel_store.find(key):
            return key, False
        partial = store / f".{key}.partial-{os.getpid()}"
        kernel_store.remove_tree(partial)
        partial.mkdir()
        try:
            limits = _Limits(partial, f"kernel-store unpack {archive.name}")
            stream, close = _open_stream(archive)
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    tar.extractall(partial, filter=limits)
            except (tarfile.TarError, EOFError, OSError) as error:
                raise InfraError(f"kernel-store unpack {archive.name}: not a readable tarball "
                                 f"({error.__class__.__name__}: {str(error)[:200]}): delete it") from None
            finally:
                close()
            _check_unpacked(partial, archive.name)
            final = store / key
            if final.exists():
                kernel_store.remove_tree(final)  # a tree without a valid manifest: incomplete
            os.rename(partial, final)
        except BaseException:
            kernel_store.remove_tree(partial)
            raise
    if kernel_store.find(key) is None:
        raise InfraError(f"kernel-store unpack {archive.name}: the entry is not usable after unpacking: delete it")
    return key, True


def _check_unpacked(partial: Path, name: str) -> None:
    """The manifest intact (its digest), its files regular files inside root/."""
    manifest = cache.read_entry(partial / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("version") != kernel_store.MANIFEST_VERSION:
        raise InfraError(f"kernel-store unpack {name}: no intact manifest of this version: delete it")
    for field in ("vmlinuz", "vmlinux"):
        relative = str(manifest.get(field, ""))
        path = partial / "root" / relative
        if relative.startswith("/") or ".." in relative.split("/") or path.is_symlink() or not path.is_file():
            raise InfraError(f"kernel-store unpack {name}: the manifest's {field} {relative[:200]!r} is not a "
                             "regular file of the tree: delete it")
    root = (partial / "root").resolve()
    for point in manifest.get("mount_points", []):
        # Docker follows a link given as a mount's source on the host: it must stay in root/.
        if not isinstance(point, str) or point.startswith("/") or ".." in point.split("/") or \
                not os.path.lexists(partial / "root" / point) or \
                not (partial / "root" / point).resolve().is_relative_to(root):
            raise InfraError(f"kernel-store unpack {name}: mount point {str(point)[:200]!r} is not in the tree")
