"""A small systemtap history for the systemtap-side bisect selftest: a clone of a real
systemtap repository (STAPMATRIX_SYSTEMTAP_SOURCE, a directory) at release-5.5 with six
commits on top, each changing one tapset, tapset/stapmatrix.stp: the first adds
stapmatrix_answer() returning 41, the fourth makes it 42, the others edit a comment.
tests/stap/bisect/answer.stp expects 42: fail-output on commits 1-3, pass from commit 4.

Made once per cache directory and reused (the clone is `--shared`: seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

from harness.settings import cache_dir
from selftests.linux_source import GIT_ENV

SOURCE_VARIABLE = "STAPMATRIX_SYSTEMTAP_SOURCE"
RELEASE = "release-5.5"
TAPSET = """// stapmatrix's bisect selftest: a tapset whose answer changes in one commit ({note}).
function stapmatrix_answer:long() {{
	return {answer}
}}
"""
# (commit subject, answer, comment note): the fourth commit is the one that changes the outcome.
COMMITS = (
    ("tapset: add stapmatrix_answer()", 41, "first version"),
    ("tapset: stapmatrix.stp comment", 41, "second edit"),
    ("tapset: stapmatrix.stp comment again", 41, "third edit"),
    ("tapset: stapmatrix_answer() returns 42", 42, "fourth edit"),
    ("tapset: stapmatrix.stp comment after", 42, "fifth edit"),
    ("tapset: stapmatrix.stp last comment", 42, "sixth edit"),
)
CHANGING_COMMIT = 3  # index into COMMITS


def systemtap_source() -> str:
    """The systemtap repository the test builds from, or "" when none is given."""
    return os.environ.get(SOURCE_VARIABLE, "")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, **GIT_ENV)).stdout.strip()


def stap_history(source: str) -> tuple[Path, list[str]]:
    """(repository, the commits of COMMITS in order)."""
    repo = cache_dir() / "selftest" / "systemtap-history"
    with FileLock(str(repo) + ".lock"):
        if not (repo / ".git" / "stapmatrix-done").exists():
            shutil.rmtree(repo, ignore_errors=True)
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", source, str(repo)], check=True)
            # A work tree with only the tapset: the commits are made with the index, not a checkout
            # (the source may lack blobs the checkout would need).
            _git(repo, "read-tree", RELEASE)
            _git(repo, "update-ref", "refs/heads/history", RELEASE + "^{commit}")
            _git(repo, "symbolic-ref", "HEAD", "refs/heads/history")
            for subject, answer, note in COMMITS:
                blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], check=True,
                                      capture_output=True, text=True,
                                      input=TAPSET.format(answer=answer, note=note)).stdout.strip()
                _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},tapset/stapmatrix.stp")
                tree = _git(repo, "write-tree")
                commit = _git(repo, "commit-tree", tree, "-p", "HEAD", "-m", subject)
                _git(repo, "update-ref", "refs/heads/history", commit)
            (repo / ".git" / "stapmatrix-done").write_text("ok\n")
    commits = _git(repo, "rev-list", "--reverse", f"{RELEASE}..history").split()
    assert len(commits) == len(COMMITS)
    return repo, commits


if __name__ == "__main__":
    print(stap_history(systemtap_source()))
