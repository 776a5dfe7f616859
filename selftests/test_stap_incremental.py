"""The incremental systemtap build's bookkeeping, without Docker: a new tree is synced file by
file (only what differs is written, so make sees only those as new), configure is asked for
only when a configure input changed, and git_version.h comes from the build's identity."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from harness import stap_source_build
from harness.specs import StapSpec
from harness.stap_build import StapBuild


def tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name == "configure" else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TREE = {"configure": "#!/bin/sh\n", "configure.ac": "AC_INIT\n", "Makefile.in": "all:\n", "main.cxx": "int main;\n",
        "tapset/a.stp": "probe begin {}\n"}


def test_only_changed_files_are_written(tmp_path: Path) -> None:
    tree, record = tmp_path / "src", tmp_path / "files.json"
    tree.mkdir()
    first = stap_source_build.sync_tree(stap_source_build.tree_files(tarball(TREE)), tree, record)
    assert first == sorted(TREE)
    assert os.access(tree / "configure", os.X_OK)
    (tree / "main.o").write_text("object")  # a build product: stays
    old = {name: (tree / name).stat().st_mtime_ns for name in TREE}
    edited = dict(TREE, **{"tapset/a.stp": "probe end {}\n"})
    del edited["main.cxx"]
    changed = stap_source_build.sync_tree(stap_source_build.tree_files(tarball(edited)), tree, record)
    assert changed == ["main.cxx", "tapset/a.stp"]
    assert not (tree / "main.cxx").exists() and (tree / "main.o").exists()
    assert (tree / "tapset/a.stp").read_text() == "probe end {}\n"
    assert all((tree / n).stat().st_mtime_ns == old[n] for n in TREE if n not in changed)


def test_paths_that_leave_the_tree_are_refused() -> None:
    files = stap_source_build.tree_files(tarball({"../evil": "x", "/abs": "y", ".git/config": "z", "ok": "k"}))
    assert list(files) == ["ok"]


def test_configure_runs_only_when_needed(tmp_path: Path) -> None:
    marker = tmp_path / "built"
    assert stap_source_build.needs_configure(["main.cxx"], marker)  # nothing of ours built yet
    marker.write_text("x")
    assert not stap_source_build.needs_configure(["main.cxx", "tapset/a.stp"], marker)
    assert stap_source_build.needs_configure(["Makefile.am"], marker)
    assert stap_source_build.needs_configure(["configure.ac"], marker)
    assert stap_source_build.needs_configure(["m4/ax.m4"], marker)


def test_git_version_header_names_the_commit() -> None:
    build = StapBuild(StapSpec("git", "/src/systemtap", "release-5.5"), "", "a" * 40)
    header = stap_source_build.git_version_header(build)
    assert f'#define GIT_SHAID "{"a" * 40}"' in header
    assert f'#define GIT_MESSAGE "{build.version_label}"' in header
    assert stap_source_build.c_string('a"b\\c\n') == '"a\\"b\\\\c\\012"'
