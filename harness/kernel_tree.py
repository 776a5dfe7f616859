"""A kernel tree a developer built themselves: `{path: DIR}` (an in-tree build, or the build
directory of `make O=DIR`), used as it is.

Checked at planning time, before anything runs: that it is built (vmlinux, bzImage,
System.map, Module.symvers, kernel.release), that vmlinux has DWARF, and that its .config
has what systemtap and the guest need; each problem is named with the commands that fix it.
Keyed by its .config, Module.symvers and vmlinux's GNU build-id (harness/elf.py: the linker's
hash of the whole image, so any change to any function gives a new one; a vmlinux linked
without a build-id is keyed by a digest of its bytes instead): rebuilding the tree makes a new
kernel, an unchanged tree is packaged into the kernel store once. Nothing runs `make` in it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness import kconfig, kernel_package, kernel_store
from harness.archive import Archive
from harness.bases import choose_base
from harness.elf import build_id, has_dwarf, is_build_id
from harness.errors import InfraError, MatrixError
from harness.kernel_build import KernelBuild, KernelImages
from harness.kernel_store import KernelTree
from harness.progress import Progress, Step
from harness.specs import KernelSpec

BUILT_FILES = ("vmlinux", "arch/x86/boot/bzImage", "System.map", "Module.symvers", "include/config/kernel.release")


def source_tree(objtree: Path) -> Path:
    """The source of a build directory: itself, or where `make O=DIR` left its `source` link."""
    link = objtree / "source"
    return link.resolve() if link.is_symlink() else objtree


def _make(objtree: Path, srctree: Path) -> str:
    return f"make -C {srctree} O={objtree}" if objtree != srctree else f"make -C {objtree}"


def check_tree(objtree: Path, where: str) -> tuple[Path, str]:
    """(source tree, .config text) of a built tree that has what stapmatrix needs."""
    if not objtree.is_dir():
        raise MatrixError(f"{where}: kernel tree {objtree} does not exist")
    srctree = source_tree(objtree)
    make = _make(objtree, srctree)
    if not (objtree / ".config").is_file():
        raise MatrixError(f"{where}: {objtree} is not a configured kernel tree (no .config): "
                          f"`{make} defconfig` (or copy a .config), then `{make} -j$(nproc)`")
    config_text = (objtree / ".config").read_text(errors="replace")
    missing = kconfig.unmet(config_text, kconfig.required_options())
    if missing:
        config_file = objtree / ".config"
        fix = kconfig.fix_commands(missing, str(srctree)).replace(
            "scripts/config ", f"scripts/config --file {config_file} ").replace(
            "make olddefconfig && make -j$(nproc) && make modules_prepare",
            f"{make} olddefconfig && {make} -j$(nproc)")
        raise MatrixError(
            f"{where}: {objtree}/.config lacks what systemtap and stapmatrix's guest need:\n"
            + kconfig.describe_unmet(missing, kconfig.parse_config(config_text))
            + f"\n  fix: {fix}")
    absent = [name for name in BUILT_FILES if not (objtree / name).is_file()]
    if absent:
        raise MatrixError(f"{where}: {objtree} is not built ({', '.join(absent)} missing): `{make} -j$(nproc)`")
    if not has_dwarf(objtree / "vmlinux"):
        raise MatrixError(f"{where}: {objtree}/vmlinux has no DWARF (.debug_info): enable CONFIG_DEBUG_INFO "
                          f"(`scripts/config --file {objtree}/.config --enable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT` "
                          f"then `{make} olddefconfig && {make} -j$(nproc)`)")
    return srctree, config_text


def vmlinux_identity(vmlinux: Path) -> str:
    """What tells one build of a vmlinux from another: its GNU build-id, or, for one linked
    with `--build-id=none`, `sha256:` and a digest of the file."""
    found = build_id(vmlinux)
    if found:
        return found
    digest = hashlib.sha256()
    try:
        with vmlinux.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise InfraError(f"cannot read {vmlinux}: {error.strerror}") from None
    return "sha256:" + digest.hexdigest()


def _key(objtree: Path, config_text: str, vmlinux_build_id: str) -> str:
    digest = hashlib.sha256()
    for part in ("path-v1", config_text, (objtree / "Module.symvers").read_bytes().decode(errors="replace"),
                 vmlinux_build_id):
        digest.update(part.encode() + b"\0")
    return "path-" + digest.hexdigest()[:24]


def resolve(spec: KernelSpec, where: str, archive: Archive) -> KernelBuild:
    objtree = Path(spec.value)
    _, config_text = check_tree(objtree, where)
    vmlinux_build_id = vmlinux_identity(objtree / "vmlinux")
    release = (objtree / "include/config/kernel.release").read_text().strip()
    _cc, version = kconfig.compiler_of(config_text, str(objtree / ".config"))
    compiler = f"gcc-{version}"
    base, reason = choose_base(archive, (compiler,), f"kernel tree {objtree.name}")
    return KernelBuild(
        spec=spec, key=_key(objtree, config_text, vmlinux_build_id),
        identity=f"tree {objtree} vmlinux build-id {vmlinux_build_id[:16]}", origin="path", release=release,
        base_suite=base, base_reason=reason, compilers=(compiler,), commit=vmlinux_build_id,
    )


def materialize(build: KernelBuild, archive: Archive, images: KernelImages, progress: Progress) -> KernelTree:
    objtree = Path(build.spec.value)

    def make(root: Path) -> dict[str, object]:
        progress(Step(f"kernel {build.spec.label}: copying {objtree} into the kernel store"))
        log = kernel_store.build_log(build.key)
        fields: dict[str, object] = dict(kernel_package.package(source_tree(objtree), objtree, root, images.base(), log))
        found = vmlinux_identity(root / str(fields["vmlinux"]))
        if found != build.commit:
            raise InfraError(f"{objtree} changed during the run (vmlinux build-id {found[:16]}, planned "
                             f"{build.commit[:16]}): run again once the build is done")
        fields["build_id"] = found if is_build_id(found) else ""
        fields["identity"] = build.identity
        return fields

    return kernel_store.ensure(build.key, f"kernel tree {objtree}", make, progress)
