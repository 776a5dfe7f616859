"""systemtap built from a git repository at a ref: `git:URL@REF`.

The ref is resolved to a full commit id once, at planning time, and the commit is what the
build is keyed by (and what `stap -V` names), so a moving branch gives a new column and an
unchanged commit is built once.
"""

from __future__ import annotations

import logging
import re
import subprocess

from harness import gitrepo
from harness.archive import Archive
from harness.errors import InfraError
from harness.specs import StapSpec
from harness.stap_build import StapBuild

logger = logging.getLogger(__name__)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def git_dir(url: str) -> str:
    return gitrepo.repository(url, url)


def resolve(spec: StapSpec, where: str, archive: Archive) -> StapBuild:
    return StapBuild(spec, "", resolve_ref(spec.value, spec.ref, where),
                     base_reason="systemtap is built from source on the base")


def source_tarball(build: StapBuild) -> bytes:
    return git_tarball(build.spec.value, build.version)


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
