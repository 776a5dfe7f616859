"""A real kernel repository for the source-build tests: Debian's linux-source-6.12 (the
archive carries kernel source as a binary package; CI reaches no kernel git server) in a
local git repository with two commits. "before" is the source as Debian ships it; "after"
adds one function, stapmatrix_marker(), called by getppid(): a probe on it fails in pass 2
on "before" and fires on "after" (tests/stap/kernel/marker.stp).

Made once per cache directory (it takes a minute or two) and reused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from filelock import FileLock

from harness.archive import Archive, download
from harness.settings import cache_dir

PACKAGE = "linux-source-6.12"
MARKER = """
/* stapmatrix's before-and-after test: a function the "before" commit does not have. */
noinline int stapmatrix_marker(int pid)
{
	return pid;
}
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "stapmatrix", "GIT_AUTHOR_EMAIL": "stapmatrix@localhost",
           "GIT_COMMITTER_NAME": "stapmatrix", "GIT_COMMITTER_EMAIL": "stapmatrix@localhost",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, **GIT_ENV)).stdout.strip()


def _unpack(repo: Path) -> None:
    archive = Archive()
    package = archive.find(PACKAGE)
    assert package is not None, f"{PACKAGE} is not in the archive"
    with tempfile.TemporaryDirectory(prefix="stapmatrix-linux-source-") as tmp:
        deb = download(package, Path(tmp), print)
        tarball = f"./usr/src/{PACKAGE}.tar.xz"
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as unpacked:
            subprocess.run(["tar", "-x", "-C", tmp, tarball], stdin=unpacked.stdout, check=True)
        repo.mkdir(parents=True)
        subprocess.run(["tar", "-xJf", f"{tmp}/{tarball}", "-C", str(repo), "--strip-components=1"], check=True)


def _drop_debian_ignore_block(repo: Path) -> None:
    """Debian's tarball ends its .gitignore with a block that ignores everything at the top
    level (`/*`, `!/debian/`): `git add` would add nothing."""
    path = repo / ".gitignore"
    text = path.read_text()
    path.write_text(re.sub(r"\n#\n# Debian packaging:.*\Z", "\n", text, flags=re.DOTALL))


def linux_source_repo() -> tuple[Path, str, str]:
    """(repository, before commit, after commit)."""
    repo = cache_dir() / "selftest" / "linux-6.12"
    with FileLock(str(repo) + ".lock"):
        if not (repo / ".git" / "stapmatrix-done").exists():
            shutil.rmtree(repo, ignore_errors=True)
            _unpack(repo)
            _drop_debian_ignore_block(repo)
            _git(repo, "init", "-q", "-b", "main")
            _git(repo, "add", "-A")
            _git(repo, "commit", "-q", "-m", f"{PACKAGE} as Debian ships it")
            _git(repo, "tag", "before")
            sys_c = repo / "kernel" / "sys.c"
            sys_c.write_text(_with_marker(sys_c.read_text()))
            _git(repo, "commit", "-q", "-am", "kernel/sys.c: add stapmatrix_marker(), called by getppid()")
            _git(repo, "tag", "after")
            (repo / ".git" / "stapmatrix-done").write_text("ok\n")
    return repo, _git(repo, "rev-parse", "before"), _git(repo, "rev-parse", "after")




# The bisect selftest's history: HISTORY_LENGTH commits on top of "before". Each adds a comment
# to kernel/sys.c (a file tinyconfig compiles); BROKEN_COMMIT adds a line that is not C (the
# kernel does not build) and the commit after it takes the line out again; MARKER_COMMIT adds
# stapmatrix_marker() as "after" does. Commit numbers count from 1.
HISTORY_LENGTH = 17
BROKEN_COMMIT = 8
MARKER_COMMIT = 11
BROKEN_LINE = "stapmatrix_broken_on_purpose this is not C;\n"


def _history_step(sys_c: Path, number: int) -> str:
    """Make commit `number`'s change to kernel/sys.c; its subject."""
    text = sys_c.read_text()
    if number == MARKER_COMMIT:
        text = _with_marker(text)
        subject = "kernel/sys.c: add stapmatrix_marker(), called by getppid()"
    elif number == BROKEN_COMMIT:
        text += BROKEN_LINE
        subject = "kernel/sys.c: a line that does not compile"
    elif number == BROKEN_COMMIT + 1:
        text = text.replace(BROKEN_LINE, "")
        subject = "kernel/sys.c: take the line that does not compile out again"
    else:
        subject = f"kernel/sys.c: comment {number}"
    sys_c.write_text(text + f"/* stapmatrix bisect history: commit {number} */\n")
    return subject


def _with_marker(text: str) -> str:
    getppid = "SYSCALL_DEFINE0(getppid)\n{"
    assert getppid in text
    text = text.replace(getppid, MARKER.lstrip("\n") + "\n" + getppid, 1)
    text = text.replace("\trcu_read_unlock();\n\n\treturn pid;\n}\n\nSYSCALL_DEFINE0(getuid)",
                        "\trcu_read_unlock();\n\n\treturn stapmatrix_marker(pid);\n}\n\nSYSCALL_DEFINE0(getuid)", 1)
    assert "return stapmatrix_marker(pid);" in text
    return text


def bisect_history() -> tuple[Path, list[str]]:
    """(repository, [before, commit 1, ..., commit HISTORY_LENGTH]): a clone of the
    linux-source repository (`--shared`: its objects are borrowed) with the history above."""
    source, before, _ = linux_source_repo()
    repo = cache_dir() / "selftest" / "linux-6.12-history"
    with FileLock(str(repo) + ".lock"):
        if not (repo / ".git" / "stapmatrix-done").exists():
            shutil.rmtree(repo, ignore_errors=True)
            subprocess.run(["git", "clone", "-q", "--shared", str(source), str(repo)], check=True)
            _git(repo, "checkout", "-q", "-b", "history", before)
            sys_c = repo / "kernel" / "sys.c"
            for number in range(1, HISTORY_LENGTH + 1):
                subject = _history_step(sys_c, number)
                _git(repo, "commit", "-q", "-am", subject)
            (repo / ".git" / "stapmatrix-done").write_text("ok\n")
    commits = [before] + _git(repo, "rev-list", "--reverse", f"{before}..history").split()
    assert len(commits) == HISTORY_LENGTH + 1
    return repo, commits


if __name__ == "__main__":
    print(linux_source_repo())
    print(bisect_history())
