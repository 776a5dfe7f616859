"""A built kernel tree (a source build's output, or a developer's own tree) laid out in the
kernel store like a Debian kernel: vmlinuz, modules, the real System.map, vmlinux with DWARF
at the paths stap looks in, and the external-module build subset as
/usr/src/linux-headers-KVER with /usr/lib/modules/KVER/build pointing at it.

The subset is the one Linux's scripts/package/install-extmod-build (6.7+) copies, written
here so that it also works for trees that predate that script and never runs `make` in a
developer's tree (a make there could rewrite their configuration): from the source tree the
Makefiles, the arch and generic include directories and scripts/; from the object tree the
generated headers, include/config/auto.conf and kernel.release, Module.symvers, the built
host programs of scripts/ and objtool. Plus what systemtap needs and Debian's headers no
longer ship since 6.12: `.config` (stap reads it) and System.map.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker.types

from harness import docker_env
from harness.errors import InfraError
from harness.kconfig import compiler_of, parse_config

SRCARCH = "x86"
SCRIPTS_PRUNED = frozenset({"atomic", "dtc", "kconfig", "package"})
SCRIPTS_SKIPPED = {"unifdef", "mk_elfconfig"}


def release_of(objtree: Path) -> str:
    path = objtree / "include/config/kernel.release"
    try:
        return path.read_text().strip()
    except OSError:
        raise InfraError(f"{objtree} has no include/config/kernel.release: the tree is not configured") from None


def _copy(source_root: Path, relative: str, destination_root: Path) -> None:
    source = source_root / relative
    target = destination_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(os.readlink(source), target)
    elif source.is_file():
        shutil.copy2(source, target)


def _files_under(root: Path, top: str, prune: frozenset[str] = frozenset()) -> list[str]:
    """Files and symlinks under root/top, relative to root; symlinked directories are listed,
    not entered, and copied as links."""
    found: list[str] = []
    base = root / top
    if not base.is_dir():
        return found
    for directory, dirs, files in os.walk(base):
        here = Path(directory)
        links = [d for d in dirs if (here / d).is_symlink()]
        dirs[:] = sorted(d for d in dirs if d not in prune and d not in links)
        found += [str((here / name).relative_to(root)) for name in sorted(files + links)]
    return found


def _scripts(root: Path) -> list[str]:
    return [f for f in _files_under(root, "scripts", SCRIPTS_PRUNED) if Path(f).name not in SCRIPTS_SKIPPED]


def _source_files(srctree: Path) -> list[str]:
    files = ["Makefile"]
    arch = srctree / "arch" / SRCARCH
    files += [f"arch/{SRCARCH}/{p.name}" for p in sorted(arch.glob("Makefile*"))]
    for directory, dirs, names in os.walk(arch):
        dirs[:] = sorted(d for d in dirs if d != "generated")
        here = Path(directory)
        if here.name == "include":
            files += _files_under(srctree, str(here.relative_to(srctree)), frozenset({"generated"}))
            dirs[:] = []
        files += [str((here / n).relative_to(srctree)) for n in names if n in ("Kbuild.platforms", "Platform")]
    files += _files_under(srctree, "include", frozenset({"config", "generated"}))
    files += _scripts(srctree)
    return files


def _object_files(objtree: Path, config: dict[str, str]) -> list[str]:
    files = []
    if config.get("CONFIG_OBJTOOL") == "y":
        files.append("tools/objtool/objtool")
    if config.get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y":
        files.append("tools/bpf/resolve_btfids/resolve_btfids")
    files += ["Module.symvers", ".config", "System.map", "include/config/auto.conf", "include/config/kernel.release"]
    files += _files_under(objtree, f"arch/{SRCARCH}/include/generated")
    files += _files_under(objtree, "include/generated")
    files += _scripts(objtree)
    if config.get("CONFIG_GCC_PLUGINS") == "y":
        files += [f for f in _files_under(objtree, "scripts/gcc-plugins") if f.endswith(".so")]
    return files


def headers_subset(srctree: Path, objtree: Path, destination: Path) -> None:
    """The external-module build subset of a built tree, copied into `destination`."""
    config = parse_config((objtree / ".config").read_text())
    for relative in _source_files(srctree):
        _copy(srctree, relative, destination)
    for relative in _object_files(objtree, config):
        if not (objtree / relative).exists() and not (objtree / relative).is_symlink():
            if relative in ("Module.symvers", ".config", "System.map"):
                raise InfraError(f"{objtree} has no {relative}: build the kernel and its modules first")
            continue
        _copy(objtree, relative, destination)


def _modules(objtree: Path, modules_dir: Path) -> None:
    """Each module listed in modules.order (6.2+ lists .o names, earlier .ko) under kernel/,
    with modules.order and modules.builtin*, as `make modules_install` lays them out."""
    order = objtree / "modules.order"
    lines = order.read_text().split() if order.exists() else []
    installed = []
    for line in lines:
        relative = line[: -len(".o")] + ".ko" if line.endswith(".o") else line
        source = objtree / relative
        if not source.exists():
            raise InfraError(f"{objtree}: module {relative} (in modules.order) is not built: run `make modules`")
        target = modules_dir / "kernel" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        installed.append(f"kernel/{relative}")
    (modules_dir / "modules.order").write_text("".join(f"{m}\n" for m in installed))
    for name in ("modules.builtin", "modules.builtin.modinfo"):
        if (objtree / name).exists():
            text = (objtree / name).read_bytes()
            (modules_dir / name).write_bytes(text if name.endswith("modinfo") else
                                             b"".join(b"kernel/" + line + b"\n" for line in text.split() if line))


def depmod(kroot: Path, release: str, image: str, log: Path) -> None:
    """modules.dep for the guest's module loading, made by depmod in a networkless container of
    `image` (the host may have no kmod). depmod -b looks under BASE/lib/modules."""
    code, output = docker_env.run_to_completion(
        image, ["sh", "-c", 'ln -s usr/lib /kroot/lib && depmod -b /kroot "$1"; status=$?; rm /kroot/lib; exit $status',
                "depmod", release],
        what=f"depmod for {release}", timeout_s=300, log_path=log, role="kbuild",
        mounts=[docker.types.Mount("/kroot", str(kroot), type="bind")])
    if code != 0:
        raise InfraError(f"depmod for {release} failed: {output.strip()[-400:]}")


def package(srctree: Path, objtree: Path, kroot: Path, image: str, log: Path) -> dict[str, str]:
    """Lay out a built tree in `kroot`; returns the manifest fields it knows."""
    release = release_of(objtree)
    for name, hint in (("vmlinux", "make vmlinux"), ("arch/x86/boot/bzImage", "make bzImage"),
                       ("System.map", "make"), (".config", "make defconfig")):
        if not (objtree / name).is_file():
            raise InfraError(f"{objtree} has no {name}: `{hint}` first")
    boot = kroot / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    shutil.copy2(objtree / "arch/x86/boot/bzImage", boot / f"vmlinuz-{release}")
    shutil.copy2(objtree / "System.map", boot / f"System.map-{release}")
    shutil.copy2(objtree / ".config", boot / f"config-{release}")
    debug = kroot / "usr/lib/debug/boot"
    debug.mkdir(parents=True, exist_ok=True)
    shutil.copy2(objtree / "vmlinux", debug / f"vmlinux-{release}")
    link = kroot / f"usr/lib/debug/lib/modules/{release}/vmlinux"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"/usr/lib/debug/boot/vmlinux-{release}")
    headers = kroot / f"usr/src/linux-headers-{release}"
    headers_subset(srctree, objtree, headers)
    modules_dir = kroot / f"usr/lib/modules/{release}"
    modules_dir.mkdir(parents=True, exist_ok=True)
    _modules(objtree, modules_dir)
    (modules_dir / "build").symlink_to(f"/usr/src/linux-headers-{release}")
    depmod(kroot, release, image, log)
    cc, cc_version = compiler_of((objtree / ".config").read_text(), str(objtree))
    return {"release": release, "cc": cc, "cc_version": cc_version, "vmlinuz": f"boot/vmlinuz-{release}",
            "vmlinux": f"usr/lib/debug/boot/vmlinux-{release}"}
