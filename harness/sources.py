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

from harness import gitrepo
from harness.errors import InfraError, MatrixError

logger = logging.getLogger(__name__)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SKIPPED_DIRS = {".git", "autom4te.cache", "__pycache__"}


def git_dir(url: str) -> str:
    return gitrepo.repository(url, url)


def resolve_ref(url: str, ref: str, where: str) -> str:
    """The full commit id `ref` names in the systemtap repository at `url`."""
    return gitrepo.resolve_ref(url, ref, where, hint_tags="release-*")


def _missing_blobs(repository: str, commit: str) -> list[str]:
    """Paths whose content the repository lacks (a shallow or size-limited snapshot)."""
    listing = gitrepo.run("ls-tree", "-r", "-z", commit, cwd=repository, what=f"listing {commit[:12]}")
    entries = [line.split("\t", 1) for line in listing.split("\0") if line]
    blobs = [(meta.split()[2], path) for meta, path in entries if meta.split()[1] == "blob"]
    checked = gitrepo.run("cat-file", "--batch-check", cwd=repository, what=f"checking the blobs of {commit[:12]}",
                          input_text="\n".join(b for b, _ in blobs) + "\n").splitlines()
    return [path for (_, path), line in zip(blobs, checked, strict=False) if line.endswith(" missing")]


def git_tarball(url: str, commit: str) -> bytes:
    """`git archive` of the commit, leaving out any file whose blob the repository lacks."""
    repository = git_dir(url)
    missing = _missing_blobs(repository, commit)
    if missing:
        logger.warning("%s: leaving out %d file(s) the repository lacks: %s", url, len(missing), ", ".join(missing[:5]))
    pathspec = ["--", "."] + [f":(exclude,literal){path}" for path in missing] if missing else []
    try:
        completed = subprocess.run(["git", "archive", "--format=tar", commit, *pathspec], cwd=repository,
                                   capture_output=True, check=False, timeout=gitrepo.GIT_LIMIT_S,
                                   env=gitrepo.environment())
    except subprocess.TimeoutExpired:
        raise InfraError(f"git archive {commit} did not finish within {gitrepo.GIT_LIMIT_S} s") from None
    if completed.returncode != 0:
        said = gitrepo.git_said(completed.stderr.decode(errors="replace"), completed.returncode)
        raise InfraError(f"git archive {commit} failed: {gitrepo.mask(said)}")
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
