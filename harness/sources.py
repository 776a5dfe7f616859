"""Where systemtap source builds come from: a git repository at a ref, or a local checkout.

`git:` refs are resolved to a full commit id once, at planning time, and the commit is what
the build is keyed by (and what `stap -V` names), so a moving branch gives a new column and
an unchanged commit is built once. `path:` checkouts are keyed by their content, uncommitted
changes included.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import subprocess
import tarfile
from pathlib import Path

from filelock import FileLock

from harness.errors import InfraError, MatrixError
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SKIPPED_DIRS = {".git", "autom4te.cache", "__pycache__"}


def _git(*args: str, cwd: str | None = None) -> str:
    completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise InfraError(f"git {' '.join(args)} failed: {completed.stderr.strip()[:400]}")
    return completed.stdout


def is_local(url: str) -> bool:
    return "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url)


def _mirror_dir(url: str) -> Path:
    """A bare clone of a remote repository in the cache (local repositories are used in place)."""
    directory = cache_dir() / "git" / hashlib.sha256(url.encode()).hexdigest()[:16]
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not directory.exists():
            _git("clone", "--bare", "--quiet", url, str(directory))
        else:
            _git("fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/heads/*", cwd=str(directory))
    return directory


def git_dir(url: str) -> str:
    if is_local(url):
        if not Path(url).exists():
            raise MatrixError(f"git repository {url} does not exist")
        return url
    return str(_mirror_dir(url))


def resolve_ref(url: str, ref: str, where: str) -> str:
    """The full commit id `ref` names in the repository at `url`."""
    try:
        repository = git_dir(url)
        return _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repository).strip()
    except InfraError:
        tags = []
        try:
            tags = _git("tag", "--list", "release-*", cwd=git_dir(url)).split()[-6:]
        except (InfraError, MatrixError):
            pass
        hint = f"; recent release tags: {', '.join(tags)}" if tags else ""
        raise MatrixError(f"{where}: {url} has no commit named {ref!r}{hint}") from None


def _missing_blobs(repository: str, commit: str) -> list[str]:
    """Paths whose content the repository lacks (a shallow or size-limited snapshot)."""
    listing = _git("ls-tree", "-r", "-z", commit, cwd=repository)
    entries = [line.split("\t", 1) for line in listing.split("\0") if line]
    blobs = [(meta.split()[2], path) for meta, path in entries if meta.split()[1] == "blob"]
    checked = subprocess.run(
        ["git", "cat-file", "--batch-check"], cwd=repository, input="\n".join(b for b, _ in blobs) + "\n",
        capture_output=True, text=True, check=False,
    ).stdout.splitlines()
    return [path for (_, path), line in zip(blobs, checked, strict=False) if line.endswith(" missing")]


def git_tarball(url: str, commit: str) -> bytes:
    """`git archive` of the commit, leaving out any file whose blob the repository lacks."""
    repository = git_dir(url)
    missing = _missing_blobs(repository, commit)
    if missing:
        logger.warning("%s: leaving out %d file(s) the repository lacks: %s", url, len(missing), ", ".join(missing[:5]))
    pathspec = ["--", "."] + [f":(exclude,literal){path}" for path in missing] if missing else []
    completed = subprocess.run(["git", "archive", "--format=tar", commit, *pathspec], cwd=repository,
                               capture_output=True, check=False)
    if completed.returncode != 0:
        raise InfraError(f"git archive {commit} failed: {completed.stderr.decode(errors='replace')[:400]}")
    return completed.stdout


def tree_tarball(directory: Path) -> bytes:
    """A checkout as it is on disk, uncommitted changes included; deterministic, so its hash
    keys the build."""
    directory = Path(directory)
    if not (directory / "configure.ac").exists():
        raise MatrixError(f"{directory} is not a systemtap source tree (no configure.ac)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                path = Path(root) / name
                if not path.is_file() or path.is_symlink():
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(directory)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return buffer.getvalue()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
