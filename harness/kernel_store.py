"""The kernel store: one directory per kernel, shared read-only by every container that needs
the kernel's files, instead of a copy of them in an image per cell.

    STAPMATRIX_CACHE/kernels/KEY/root/       files laid out as installed: boot/, usr/lib/modules/KVER/,
                                              usr/src/linux-headers-*, usr/lib/debug/..., usr/lib/linux-kbuild-*
    STAPMATRIX_CACHE/kernels/KEY/manifest.json    release, compiler, mount points, vmlinuz, build-id

Whichever way a kernel came (a Debian package, a source build, a developer's tree), it ends
here in the same layout, so compile containers, the testsuite and the image checks see it at
the paths `stap -r KVER` looks in: each mount point is bind-mounted read-only at `/` + its
path. An N x M grid holds N kernel trees on disk, not N x M.

An entry is made in `.KEY.partial-PID` and renamed to `KEY` only once complete and checked,
with its manifest written last: an interrupted extraction or build never leaves a tree that
looks complete, and its remains are removed by the next attempt or `stapmatrix clean`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker.types
from filelock import FileLock

from harness import cache, docker_env
from harness.elf import build_id, is_build_id
from harness.errors import BuildVerdictError, InfraError
from harness.progress import KernelReady, Progress
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

# Where kernel packages (and `make install`s) put files; each child of these is one mount.
MOUNT_PARENTS = ("boot", "usr/src", "usr/lib/modules")
WHOLE_MOUNTS = ("usr/lib/debug",)  # mounted as one: nothing else lives there in our images
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class KernelTree:
    """A kernel in the store, ready to be mounted."""

    key: str
    root: Path
    release: str  # uname -r
    cc: str  # the compiler the kernel was built with, as its Makefile calls it (x86_64-linux-gnu-gcc-16)
    cc_version: str  # its major version: which gcc-N package a plain `gcc` must be
    vmlinuz: str  # relative to root
    vmlinux: str  # relative to root: the file with DWARF
    build_id: str  # vmlinux's GNU build-id
    mount_points: tuple[str, ...]  # relative to root
    identity: str  # what it is, for people: package version and suite, commit, tree hash

    def mounts(self) -> list[docker.types.Mount]:
        return [docker.types.Mount(target="/" + point, source=str(self.root / point), type="bind", read_only=True)
                for point in self.mount_points]

    @property
    def vmlinuz_path(self) -> Path:
        return self.root / self.vmlinuz


def build_log(key: str) -> Path:
    """Where the extraction, build or packaging of the kernel `key` is logged."""
    directory = cache_dir() / "build-logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"kernel-{key}.log"


def store_dir() -> Path:
    path = cache_dir() / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def mount_points(root: Path) -> tuple[str, ...]:
    points = []
    for parent in MOUNT_PARENTS:
        if (root / parent).is_dir():
            points += [f"{parent}/{child.name}" for child in sorted((root / parent).iterdir())]
    if (root / "usr/lib").is_dir():
        points += [f"usr/lib/{c.name}" for c in sorted((root / "usr/lib").iterdir()) if c.name.startswith("linux-kbuild-")]
    points += [p for p in WHOLE_MOUNTS if (root / p).is_dir()]
    return tuple(points)


def find(key: str) -> KernelTree | None:
    directory = store_dir() / key
    manifest = cache.read_entry(directory / "manifest.json")
    if manifest is None or manifest.get("version") != MANIFEST_VERSION:
        return None
    tree = _tree(key, directory / "root", manifest)
    if not tree.vmlinuz_path.is_file() or not (tree.root / tree.vmlinux).is_file():
        logger.warning("kernel tree %s lost its files: building it again", directory)
        remove_tree(directory)
        return None
    if tree.build_id and not is_build_id(tree.build_id):
        tree = _build_id_read_again(directory, manifest)
    return tree


def _build_id_read_again(directory: Path, manifest: dict[str, object]) -> KernelTree:
    """Manifests written before harness/elf.py matched the note's owner hold Xen's
    VIRT_BASE note of a Debian vmlinux (the same for every kernel) as its build-id: read the
    real one from the tree's vmlinux (its program headers only: milliseconds) and keep it."""
    found = build_id(directory / "root" / str(manifest["vmlinux"]))
    logger.info("kernel tree %s: build-id %s read again from its vmlinux (the manifest had %r)",
                directory, found, manifest["build_id"])
    manifest = dict(manifest, build_id=found)
    try:
        cache.write_entry(directory / "manifest.json", manifest)
    except InfraError as error:  # a read-only cache: read it again next time
        logger.warning("%s", error)
    return _tree(directory.name, directory / "root", manifest)


def _tree(key: str, root: Path, manifest: dict[str, object]) -> KernelTree:
    return KernelTree(
        key=key, root=root, release=str(manifest["release"]), cc=str(manifest["cc"]),
        cc_version=str(manifest["cc_version"]),
        vmlinuz=str(manifest["vmlinuz"]), vmlinux=str(manifest["vmlinux"]), build_id=str(manifest["build_id"]),
        mount_points=tuple(manifest["mount_points"]), identity=str(manifest["identity"]),  # type: ignore[arg-type]
    )


Maker = Callable[[Path], dict[str, object]]


def ensure(key: str, what: str, make: Maker, progress: Progress) -> KernelTree:
    """The tree for `key`, made by `make(root)` unless the store has it. `make` fills `root`
    and returns the manifest fields (release, cc, cc_version, vmlinuz, vmlinux,
    build_id, identity); mount points are computed here. One process makes a key at a time."""
    found = find(key)
    if found:
        return found
    failed = store_dir() / f".{key}.failed"
    with FileLock(str(store_dir() / f".{key}.lock")):
        found = find(key)
        if found:
            return found
        verdict = cache.read_entry(failed)
        if verdict is not None:
            raise BuildVerdictError(f"{verdict['detail']}\n  (this exact build failed before; "
                                    "`stapmatrix clean --kernels` forgets it)")
        for stale in store_dir().glob(f".{key}.partial-*"):
            remove_tree(stale)
        final = store_dir() / key
        if final.exists():
            remove_tree(final)  # a tree without a valid manifest: incomplete
        partial = store_dir() / f".{key}.partial-{os.getpid()}"
        started = time.monotonic()
        (partial / "root").mkdir(parents=True)
        try:
            fields = make(partial / "root")
            manifest = dict(fields, version=MANIFEST_VERSION, mount_points=list(mount_points(partial / "root")))
            tree = _tree(key, partial / "root", manifest)
            for name, relative in (("vmlinuz", tree.vmlinuz), ("vmlinux", tree.vmlinux)):
                if not (tree.root / relative).is_file():
                    raise InfraError(f"{what}: the kernel tree has no {name} at {relative}")
            cache.write_entry(partial / "manifest.json", manifest)
            os.rename(partial, final)
        except BuildVerdictError as error:
            remove_tree(partial)
            cache.write_entry(failed, {"detail": str(error)})
            raise
        except BaseException:
            remove_tree(partial)
            raise
    progress(KernelReady(tree.release, what, round(time.monotonic() - started, 1)))
    stored = find(key)
    if stored is None:
        raise InfraError(f"{what}: the kernel tree {final} vanished right after it was made")
    return stored


def forget(key: str) -> bool:
    """Remove the entry for `key` and a remembered failed build of it, so the next `ensure`
    builds it again. Whether there was anything to forget."""
    with FileLock(str(store_dir() / f".{key}.lock")):
        entry, failed = store_dir() / key, store_dir() / f".{key}.failed"
        existed = entry.exists() or failed.exists()
        remove_tree(entry)
        failed.unlink(missing_ok=True)
    return existed


def remove_tree(path: Path) -> None:
    """Remove a store directory. Its files were written by root in a container: when this
    process may not remove them, a container does."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except PermissionError:
        pass
    parent = path.parent
    docker_env.client().containers.run(
        "busybox" if docker_env.image_exists("busybox") else _any_image(), ["rm", "-rf", f"/parent/{path.name}"],
        remove=True, network_mode="none", volumes={str(parent): {"bind": "/parent", "mode": "rw"}},
    )


def _any_image() -> str:
    images = docker_env.client().images.list(filters={"label": f"{docker_env.LABEL}=1"})
    if not images:
        raise InfraError(f"cannot remove root-owned files under {store_dir()}: run `stapmatrix clean` as root")
    return str(images[0].id)


def entries() -> list[tuple[Path, int]]:
    """(directory, bytes) of every entry and partial entry, for `stapmatrix clean`."""
    found = []
    for path in sorted(store_dir().iterdir()):
        if path.is_dir():
            used = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout
            found.append((path, int(used.split()[0]) if used.strip() else 0))
    return found
