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
            text = sys_c.read_text()
            getppid = "SYSCALL_DEFINE0(getppid)\n{"
            assert getppid in text
            text = text.replace(getppid, MARKER.lstrip("\n") + "\n" + getppid, 1)
            text = text.replace("\trcu_read_unlock();\n\n\treturn pid;\n}\n\nSYSCALL_DEFINE0(getuid)",
                                "\trcu_read_unlock();\n\n\treturn stapmatrix_marker(pid);\n}\n\nSYSCALL_DEFINE0(getuid)", 1)
            assert "return stapmatrix_marker(pid);" in text
            sys_c.write_text(text)
            _git(repo, "commit", "-q", "-am", "kernel/sys.c: add stapmatrix_marker(), called by getppid()")
            _git(repo, "tag", "after")
            (repo / ".git" / "stapmatrix-done").write_text("ok\n")
    return repo, _git(repo, "rev-parse", "before"), _git(repo, "rev-parse", "after")


if __name__ == "__main__":
    print(linux_source_repo())
