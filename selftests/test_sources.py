"""git: and path: sources, for real, on repositories made here (CI reaches no systemtap
repository; real systemtap builds are verified by hand, see the closing note of issue 4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import MatrixError
from harness.matrix import load_matrix
from harness.recipes import stap_source_recipe
from harness.specs import parse_stap_spec
from harness.stap_git import git_tarball, resolve_ref
from harness.stap_tree import content_hash, tree_tarball


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "systemtap"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "configure.ac").write_text("AC_INIT([systemtap], [9.9])\n")
    (path / "big.bin").write_bytes(b"x" * 1000)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "one")
    git(path, "tag", "release-9.9")
    (path / "configure.ac").write_text("AC_INIT([systemtap], [10.0])\n")
    git(path, "commit", "-q", "-am", "two")
    return path


def test_refs_resolve_to_full_commits(repo: Path) -> None:
    tagged = resolve_ref(str(repo), "release-9.9", "m:1")
    head = resolve_ref(str(repo), "main", "m:1")
    assert len(tagged) == 40 and tagged != head
    assert resolve_ref(str(repo), tagged[:10], "m:1") == tagged


def test_unknown_ref_names_recent_tags(repo: Path) -> None:
    with pytest.raises(MatrixError, match=r"m:3: .* has no commit named 'release-5\.55'.*release-9\.9"):
        resolve_ref(str(repo), "release-5.55", "m:3")


def test_archive_leaves_out_missing_blobs(repo: Path) -> None:
    """A snapshot may lack its largest files: the archive leaves them out instead of failing."""
    commit = resolve_ref(str(repo), "main", "m:1")
    blob = git(repo, "rev-parse", f"{commit}:big.bin")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    names = subprocess.run(["tar", "-t"], input=git_tarball(str(repo), commit), capture_output=True,
                           check=True).stdout.decode().split()
    assert "configure.ac" in names and "big.bin" not in names


def test_checkout_hash_sees_uncommitted_changes(repo: Path) -> None:
    first = content_hash(tree_tarball(repo))
    assert first == content_hash(tree_tarball(repo))  # deterministic
    (repo / "configure.ac").write_text("AC_INIT([systemtap], [10.1])\n")  # not committed
    assert content_hash(tree_tarball(repo)) != first


def test_matrix_forms(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "t.stp").write_text("probe begin { exit() }\n")
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(f"kernels: [6.12.117+deb13-amd64]\nstap:\n  - {{git: {repo}, ref: release-9.9}}\n"
                      f"  - {{path: {repo}}}\n  - git:{repo}@main\ntests: [t.stp]\ntestsuite: [environment_sanity.exp]\n")
    specs = [s.value for s in load_matrix(matrix).staps]
    assert [s.kind for s in specs] == ["git", "path", "git"]
    assert specs[0].label == "stap-release-9.9" and specs[2].spec == f"git:{repo}@main"
    with pytest.raises(MatrixError, match="needs a ref"):
        matrix.write_text(f"kernels: [6.1.0-50-amd64]\nstap:\n  - {{git: {repo}}}\ntests: [t.stp]\n")
        load_matrix(matrix)
    with pytest.raises(MatrixError, match="not a systemtap checkout"):
        parse_stap_spec(f"path:{tmp_path}", "--stap")


def test_source_image_is_keyed_by_commit() -> None:
    first = stap_source_recipe("trixie", "a" * 40, "x").tag
    assert first == stap_source_recipe("trixie", "a" * 40, "x").tag
    assert first != stap_source_recipe("trixie", "b" * 40, "x").tag
