"""Where a systemtap build comes from, behind one interface (as harness/kernels.py is for
kernels):

    stap_debian.py   a Debian package version, from any suite (`deb:5.6-1`)
    stap_git.py      a commit of a systemtap repository (`git:URL@REF`), built from source
    stap_tree.py     a checkout as it is on disk (`path:DIR`), uncommitted changes included

Each module has `resolve(spec, where, archive) -> StapBuild` (planning: cheap, no Docker; an
error names the matrix line) and, for source builds, `source_tarball(build) -> bytes` (the
tree the image build compiles; harness/images.py asks for it only when it builds).
"""

from __future__ import annotations

from harness import stap_debian, stap_git, stap_tree
from harness.archive import Archive
from harness.errors import InfraError
from harness.specs import StapSpec
from harness.stap_build import StapBuild

SOURCES = {"deb": stap_debian, "git": stap_git, "path": stap_tree}


def resolve(spec: StapSpec, where: str, archive: Archive) -> StapBuild:
    return SOURCES[spec.kind].resolve(spec, where, archive)  # type: ignore[no-any-return]


def source_tarball(build: StapBuild) -> bytes:
    """The source tree of a `git:` or `path:` build, as a tar."""
    if build.spec.kind == "git":
        return stap_git.source_tarball(build)
    if build.spec.kind == "path":
        return stap_tree.source_tarball(build)
    raise InfraError(f"{build.spec.spec} is a Debian package: it has no source tree to build")
