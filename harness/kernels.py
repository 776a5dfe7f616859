"""Where a kernel comes from, behind one interface (as harness/staps.py is for systemtap):

    kernel_debian.py   a Debian kernel package (any suite, the 6.x and 7.x package layouts)
    kernel_git.py      a commit of a kernel repository, built from source
    kernel_tree.py     a tree a developer built themselves (`make`, `make O=DIR`)

Each module has `resolve(spec, where, archive) -> KernelBuild` (planning: cheap, no Docker,
no download; an error names the matrix line) and `materialize(build, archive, images,
progress) -> KernelTree` (extract, build or package the kernel into harness/kernel_store.py,
once per key). Everything after that (compile containers, the guest, the image checks) sees
every kernel the same way: a KernelTree.

A kernel's files are made in containers of images the caller provides (KernelImages, in
harness/kernel_build.py): the image layer sits above the sources, so a source never builds an
image itself.
"""

from __future__ import annotations

from harness import kernel_debian, kernel_git, kernel_tree
from harness.archive import Archive
from harness.kernel_build import KernelBuild, KernelImages
from harness.kernel_store import KernelTree
from harness.progress import Progress
from harness.specs import KernelSpec

SOURCES = {"deb": kernel_debian, "git": kernel_git, "path": kernel_tree}


def resolve(spec: KernelSpec, where: str, archive: Archive) -> KernelBuild:
    return SOURCES[spec.kind].resolve(spec, where, archive)  # type: ignore[no-any-return]


def materialize(build: KernelBuild, archive: Archive, images: KernelImages, progress: Progress) -> KernelTree:
    """The kernel's files in the store: extracted, built or packaged now unless already there."""
    return SOURCES[build.spec.kind].materialize(build, archive, images, progress)  # type: ignore[no-any-return]
