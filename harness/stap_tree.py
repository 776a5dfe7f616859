"""systemtap built from a checkout as it is on disk: `path:DIR`, keyed by the hash of its
content (uncommitted changes included), so an edit makes a new build and an unchanged tree is
built once."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from harness.archive import Archive
from harness.errors import MatrixError
from harness.specs import StapSpec
from harness.stap_build import StapBuild

SKIPPED_DIRS = {".git", "autom4te.cache", "__pycache__"}


def resolve(spec: StapSpec, where: str, archive: Archive) -> StapBuild:
    return StapBuild(spec, "", content_hash(tree_tarball(Path(spec.value))),
                     base_reason="systemtap is built from source on the base")


def source_tarball(build: StapBuild) -> bytes:
    return tree_tarball(Path(build.spec.value))


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
