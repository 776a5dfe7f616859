"""systemtap built from source incrementally: a kept tree per (repository, dependencies image),
built in place, and the installed result kept per build (the full commit id, or a `path:`
tree's content hash).

    STAPMATRIX_CACHE/stap-build/KEY/src             the tree, built in place (mounted at /usr/local/src/systemtap)
    STAPMATRIX_CACHE/stap-build/KEY/files.json      what each file of the tree held when it was last synced
    STAPMATRIX_CACHE/stap-ccache/KEY                ccache of this tree
    STAPMATRIX_CACHE/stap-installs/DEPS/VERSION/    /opt/systemtap and the configured tree, as the image gets them

KEY is a digest of the repository (URL or directory) and the dependencies image (its base
suite and compilers), so each tree only ever sees one compiler. A new build writes only the
files whose content differs from what the tree holds (all with one timestamp, so make never
sees a Makefile.am newer than its Makefile.in and calls automake), runs configure only when
the directory is new or a configure input changed, and then `make`: a commit one after a built
one recompiles what it touches. systemtap's git_version.h is written from the commit, since
the tree has no .git for git_version.sh to ask (it keeps a file it cannot regenerate).

The build runs in a container of the dependencies image with no network (the only source
build step with network is that image's apt step): nothing in a source tree can reach the
outside. A build that fails because of what was built (a compile error) is a
BuildVerdictError; one that failed because of the machine (killed, disk full) an InfraError.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import docker.types
from filelock import FileLock

from harness import cache, docker_env
from harness.errors import BuildVerdictError, InfraError
from harness.files import DOCKERFILES_DIR
from harness.logs import INFRA_FAILURE_RE
from harness.progress import Progress, StapSourceBuildStarted, StapSourceBuilt
from harness.settings import cache_dir
from harness.stap_build import StapBuild

logger = logging.getLogger(__name__)

TREE_IN_CONTAINER = "/usr/local/src/systemtap"  # where the image keeps it too (harness/testsuite.py)
BUILD_LIMIT_S = 3 * 3600.0
EXTRA_VERSION = "stapmatrix"  # configure's --with-extra-version: fixed, so a new commit needs no configure
# A changed file with one of these names or suffixes means configure's output may change.
CONFIGURE_INPUTS = ("configure", "configure.ac", "aclocal.m4", "config.in", "config.h.in")
CONFIGURE_INPUT_SUFFIXES = (".in", ".am", ".m4")
MAX_TREE_FILES = 200_000  # a systemtap tree holds about 9,000


@dataclass(frozen=True)
class StapInstall:
    """A built systemtap, ready to be copied into its image."""

    root: Path  # holds opt/systemtap and usr/local/src/systemtap
    seconds: float  # how long the build took (0 when it was already there)
    incremental: bool  # built on an earlier build of the same tree
    built_now: bool


def workspace_key(build: StapBuild, deps_tag: str) -> str:
    return hashlib.sha256(f"stap-build-v1\0{build.spec.value}\0{deps_tag}".encode()).hexdigest()[:16]


def install_dir(build: StapBuild, deps_tag: str) -> Path:
    deps = hashlib.sha256(deps_tag.encode()).hexdigest()[:16]
    return cache_dir() / "stap-installs" / deps / build.version


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read() if handle else b""


def tree_files(tarball: bytes) -> dict[str, tuple[str, bytes]]:
    """{relative path: (kind+mode, content)} of a source tarball (regular files and symlinks;
    a symlink's content is its target). Paths are checked: none may leave the tree."""
    files: dict[str, tuple[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] == ".git":
                continue
            name = str(path)
            if member.isreg():
                mode = "x" if member.mode & 0o111 else "f"
                files[name] = (mode, _member_bytes(tar, member))
            elif member.issym():
                files[name] = ("l", member.linkname.encode())
            if len(files) > MAX_TREE_FILES:
                raise InfraError(f"the source tree has more than {MAX_TREE_FILES} files: is it a systemtap tree?")
    return files


def _digest(kind: str, data: bytes) -> str:
    return kind + ":" + hashlib.sha256(data).hexdigest()


def sync_tree(files: dict[str, tuple[str, bytes]], tree: Path, record: Path) -> list[str]:
    """Make `tree` hold `files`, writing only what differs from the last sync (`record`) and
    removing files the new tree does not have; build products stay. Every written file gets
    one timestamp. The changed paths, sorted."""
    known = cache.read_entry(record)
    before: dict[str, str] = known if isinstance(known, dict) else {}
    now = time.time()
    changed = []
    for name, (kind, data) in files.items():
        digest = _digest(kind, data)
        target = tree / name
        if before.get(name) == digest and (target.is_symlink() or target.exists()):
            continue
        changed.append(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        if kind == "l":
            os.symlink(data.decode(), target)
            continue
        target.write_bytes(data)
        target.chmod(0o755 if kind == "x" else 0o644)
        os.utime(target, (now, now))
    for name in sorted(set(before) - set(files)):
        gone = tree / name
        if gone.is_symlink() or gone.is_file():
            gone.unlink()
            changed.append(name)
    cache.write_entry(record, {name: _digest(kind, data) for name, (kind, data) in files.items()})
    return sorted(changed)


def needs_configure(changed: list[str], built_marker: Path) -> bool:
    """Whether configure must run: no build of ours completed in this tree yet (a `path:`
    checkout's own config.status, synced in, says nothing about ours), or an input changed."""
    if not built_marker.exists():
        return True
    return any(PurePosixPath(name).name in CONFIGURE_INPUTS or name.endswith(CONFIGURE_INPUT_SUFFIXES)
               for name in changed)


def c_string(text: str) -> str:
    """`text` as a C string literal: printable ASCII kept, everything else escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("".join(f"\\{byte:03o}" for byte in char.encode()))
    return '"' + "".join(out) + '"'


def git_version_header(build: StapBuild) -> str:
    """What systemtap's git_version.sh would write, from the build's identity: `stap -V`
    names the commit (or the tree's hash) through GIT_MESSAGE."""
    short = build.version[:12]
    return (
        "/* Written by stapmatrix (harness/stap_source_build.py) from the build's identity. */\n"
        "#define GIT_REPO 1\n"
        f"#define GIT_SHAID {c_string(build.version)}\n"
        f"#define GIT_SHAID_SHORT {c_string(build.version[:8])}\n"
        '#define GIT_BRANCH "(no branch)"\n'
        '#define GIT_REMOTE_URL "(stapmatrix)"\n'
        '#define GIT_BUILD "0"\n'
        f"#define GIT_PRETTY_REV {c_string(short)}\n"
        "#define GIT_TIMESTAMP UINT64_C(0)\n"
        "#undef GIT_DIRTY\n"
        '#define GIT_DIRTY_MSG ""\n'
        '#define GIT_ERROR_MSG ""\n'
        '#define GIT_DIST_MSG ""\n'
        f"#define GIT_MESSAGE {c_string(build.version_label)}\n"
    )


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def _build_log(build: StapBuild) -> Path:
    directory = cache_dir() / "build-logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"stap-source-{build.version[:24]}.log"


def ensure_install(build: StapBuild, deps_tag: str, tarball: bytes, progress: Progress) -> StapInstall:
    """The installed build, made now unless the installs cache has it."""
    final = install_dir(build, deps_tag)
    done = final.with_name(final.name + ".json")
    known = cache.read_entry(done)
    if isinstance(known, dict) and final.is_dir():
        return StapInstall(final, 0.0, bool(known.get("incremental")), False)
    key = workspace_key(build, deps_tag)
    workspace = cache_dir() / "stap-build" / key
    workspace.mkdir(parents=True, exist_ok=True)
    with FileLock(str(workspace) + ".lock"):
        known = cache.read_entry(done)
        if isinstance(known, dict) and final.is_dir():
            return StapInstall(final, 0.0, bool(known.get("incremental")), False)
        return _build(build, deps_tag, tarball, workspace, key, progress)


def _build(build: StapBuild, deps_tag: str, tarball: bytes, workspace: Path, key: str,
           progress: Progress) -> StapInstall:
    final = install_dir(build, deps_tag)
    tree, ccache_dir = workspace / "src", cache_dir() / "stap-ccache" / key
    tree.mkdir(exist_ok=True)
    ccache_dir.mkdir(parents=True, exist_ok=True)
    built_marker = workspace / "built"  # written after each build of this tree that succeeded
    incremental = built_marker.exists()
    log = _build_log(build)
    what = f"systemtap {build.spec.spec} ({build.identity})"
    started = time.monotonic()
    progress(StapSourceBuildStarted(what, str(log), incremental))
    changed = sync_tree(tree_files(tarball), tree, workspace / "files.json")
    if _write_if_changed(tree / "git_version.h", git_version_header(build)):
        changed.append("git_version.h")
    configure = needs_configure(changed, built_marker)
    if configure:
        built_marker.unlink(missing_ok=True)  # a configure that fails half-way must run again next time
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    _remove(partial)
    partial.mkdir(parents=True)
    try:
        with log.open("a") as stream:
            stream.write(f"=== building {what} in {deps_tag} (network: none; {len(changed)} file(s) changed; "
                         f"configure: {'yes' if configure else 'no'})\n")
        _run(deps_tag, ["sh", "/usr/local/bin/build-stap.sh", "yes" if configure else "no", EXTRA_VERSION],
             what=f"building {what}", log=log, tree=tree, ccache_dir=ccache_dir, install=partial)
        _remove(final)
        os.rename(partial, final)
        built_marker.write_text(f"{build.version}\n")
    except BaseException:
        _remove(partial)
        raise
    seconds = round(time.monotonic() - started, 1)
    cache.write_entry(final.with_name(final.name + ".json"),
                      {"seconds": seconds, "incremental": incremental, "configured": configure})
    progress(StapSourceBuilt(what, seconds, incremental, configure, len(changed)))
    return StapInstall(final, seconds, incremental, True)


def _run(image: str, command: list[str], *, what: str, log: Path, tree: Path, ccache_dir: Path,
         install: Path) -> None:
    code, output = docker_env.run_to_completion(
        image, command, what=what, timeout_s=BUILD_LIMIT_S, log_path=log, role="stap-build",
        mounts=[docker.types.Mount(TREE_IN_CONTAINER, str(tree), type="bind"),
                docker.types.Mount("/ccache", str(ccache_dir), type="bind"),
                docker.types.Mount("/install", str(install), type="bind"),
                docker.types.Mount("/usr/local/bin/build-stap.sh", str(DOCKERFILES_DIR / "build-stap.sh"),
                                   type="bind", read_only=True)])
    if code != 0:
        tail = "\n    ".join(output.strip().splitlines()[-15:])
        message = f"{what} failed (exit {code}):\n    {tail}\n  full log: {log}"
        if code in (137, 139) or INFRA_FAILURE_RE.search(output[-5000:]):
            raise InfraError(message)
        raise BuildVerdictError(message)


def _remove(path: Path) -> None:
    """Remove a directory the build container wrote (as root: this process may be root too)."""
    if not path.exists():
        return

    def writable(function: object, name: str, info: object) -> None:
        os.chmod(os.path.dirname(name), stat.S_IRWXU)
        os.unlink(name) if not os.path.isdir(name) else shutil.rmtree(name)
    shutil.rmtree(path, onerror=writable)

