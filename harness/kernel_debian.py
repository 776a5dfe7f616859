"""A kernel from Debian's archive, by its ABI name (`6.1.0-56-amd64`, `6.12.117+deb13-amd64`,
`7.2.13+deb14-amd64`, experimental's release candidate `7.3-amd64`).

The packages are found by what they are, not by a fixed name: the debuginfo package
`linux-image-ABI-dbg` names the version; from `linux-image-ABI` (or `-unsigned`) and
`linux-headers-ABI` every dependency that is a `linux-*` package of that same version is
taken. That covers the 6.x layout (the image package holds vmlinuz and modules) and the
7.x one (`linux-image-ABI` is a metapackage over `linux-binary-ABI`, `linux-modules-ABI`
and `linux-base-ABI`). The packages are downloaded here, checked against the signed index,
and extracted in a networkless container into the kernel store.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
from pathlib import Path

import docker.types
from debian.debian_support import Version

from harness import docker_env, kernel_store
from harness.archive import Archive, KernelAbi, Package, download, series
from harness.bases import choose_base
from harness.elf import build_id
from harness.errors import InfraError, MatrixError
from harness.files import DOCKERFILES_DIR
from harness.kconfig import compiler_of
from harness.kernel_build import KernelBuild, KernelImages
from harness.kernel_store import KernelTree
from harness.progress import Progress, Step
from harness.specs import KernelSpec

EXTRACT_SCRIPT = DOCKERFILES_DIR / "extract-kernel.sh"
EXTRACT_LIMIT_S = 1800
COMPILER_RE = re.compile(r"^gcc-[0-9]+(-for-host)?$")


def _abi_version(abi: str) -> Version:
    """`6.1.0-50-amd64` -> 6.1.0-50; `7.3-amd64` -> 7.3 (comparable within a series)."""
    return Version(re.sub(r"-[a-z][a-z0-9-]*$", "", abi))


def _newest_first(abis: list[KernelAbi]) -> list[KernelAbi]:
    return sorted(abis, key=lambda k: Version(k.version), reverse=True)


def missing_message(archive: Archive, abi: str, where: str) -> str:
    """Why `abi` is not there, with the kernels that are: newest first within a series."""
    known = archive.kernel_abis()
    wanted = series(abi)
    same = _newest_first([k for k in known if series(k.abi) == wanted])
    suites = ", ".join(s.name for s in archive.suites)
    if same:
        newest = same[0]
        others = ", ".join(f"{k.abi} ({k.suite})" for k in same[1:4])
        if _abi_version(abi) < _abi_version(newest.abi):
            why = (f"kernel {abi} is not in the archive any more: security and point-release updates "
                   "replace the older builds of a series")
        else:
            why = f"kernel {abi} is not in the archive ({suites})"
        return (f"{where}: {why}; the newest {wanted[0]}{wanted[1]} kernel is {newest.abi} ({newest.suite})"
                + (f"; also: {others}" if others else ""))
    close = difflib.get_close_matches(abi, [k.abi for k in known], n=8, cutoff=0.5)
    candidates = [k for k in known if k.abi in close] or _newest_first(known)[:4]
    by_series: dict[tuple[str, str, str], list[KernelAbi]] = {}
    for kernel in candidates:
        by_series.setdefault(series(kernel.abi), []).append(kernel)
    ordered = [k for group in by_series.values() for k in _newest_first(group)][:5]
    return (f"{where}: kernel {abi!r} has no linux-image-{abi}-dbg package in {suites}; the archive has: "
            + ", ".join(f"{k.abi} ({k.suite})" for k in ordered))


def _closure(archive: Archive, roots: list[Package], version: str) -> list[Package]:
    """Every `linux-*` package of `version` that `roots` depend on, transitively; compiler
    wrappers (`linux-compiler-*`) hold no files and are left out."""
    found = {p.name: p for p in roots}
    queue = list(roots)
    while queue:
        package = queue.pop()
        for clause in package.relations():
            for alternative in clause:
                name = str(alternative["name"])
                if not name.startswith("linux-") or name.startswith("linux-compiler-"):
                    continue
                dependency = archive.find(name, version)
                if dependency is not None:
                    if name not in found:
                        found[name] = dependency
                        queue.append(dependency)
                    break
    return sorted(found.values(), key=lambda p: p.name)


def _compilers(archive: Archive, headers: Package) -> tuple[str, ...]:
    """The compiler packages the headers depend on: gcc-N or gcc-N-for-host directly (6.12,
    7.x), or through linux-compiler-gcc-N-x86 (6.1)."""
    compilers = []
    for clause in headers.relations():
        name = str(clause[0]["name"])
        if COMPILER_RE.match(name):
            compilers.append(name)
        elif name.startswith("linux-compiler-"):
            wrapper = archive.find(name, headers.version) or archive.find(name)
            for inner in wrapper.relations() if wrapper else []:
                if COMPILER_RE.match(str(inner[0]["name"])):
                    compilers.append(str(inner[0]["name"]))
    return tuple(sorted(set(compilers)))


def _packages(archive: Archive, abi: str) -> tuple[Package | None, Package | None, Package | None]:
    """(-dbg, image, headers) of a kernel, the last two at the -dbg package's version. The image
    is the signed `linux-image-ABI` or its `-unsigned` twin, whichever the archive has: the
    signed build of a security update is published hours or days after the unsigned one (on
    2026-12-02 bookworm-security had 6.12.118's -unsigned, -dbg and headers, and no signed
    image yet), and both hold the same kernel."""
    dbg = archive.find(f"linux-image-{abi}-dbg")
    if dbg is None:
        return None, None, None
    version = dbg.version
    image = archive.find(f"linux-image-{abi}", version) or archive.find(f"linux-image-{abi}-unsigned", version)
    return dbg, image, archive.find(f"linux-headers-{abi}", version)


# A kernel the cached indexes lack is looked up again in indexes fetched anew when those are
# older than this: a security update published since would otherwise be refused for hours.
REFETCH_AGE_S = 15 * 60


def resolve(spec: KernelSpec, where: str, archive: Archive) -> KernelBuild:
    abi = spec.value
    dbg, image, headers = _packages(archive, abi)
    if (dbg is None or image is None or headers is None) and archive.refetch(REFETCH_AGE_S):
        dbg, image, headers = _packages(archive, abi)
    if dbg is None:
        raise MatrixError(missing_message(archive, abi, where))
    version = dbg.version
    if image is None or headers is None:
        raise MatrixError(f"{where}: kernel {abi} {version} ({dbg.suite}) lacks its "
                          f"{'image' if image is None else 'headers'} package at that version")
    packages = _closure(archive, [image, headers], version)
    compilers = _compilers(archive, headers)
    if not compilers:
        raise MatrixError(f"{where}: kernel {abi}: cannot tell which gcc its headers need")
    base, reason = choose_base(archive, compilers, f"kernel {abi}")
    pinned = tuple(p.pinned for p in packages)
    key = hashlib.sha256("\0".join(("deb-v1", abi, dbg.pinned, *pinned, EXTRACT_SCRIPT.read_text())).encode())
    return KernelBuild(
        spec=spec, key="deb-" + key.hexdigest()[:24], identity=f"{version} ({dbg.suite})", origin=dbg.suite,
        release=abi, base_suite=base, base_reason=reason, compilers=compilers, packages=pinned,
        dbg_package=dbg.name, download_bytes=sum(p.size for p in packages) + dbg.size,
    )


def materialize(build: KernelBuild, archive: Archive, images: KernelImages, progress: Progress) -> KernelTree:
    abi = build.spec.value
    version = build.identity.split()[0]

    def make(root: Path) -> dict[str, object]:
        debs = root.parent / "debs"
        debs.mkdir()
        progress(Step(f"kernel {abi}: downloading {len(build.packages) + 1} packages, "
                      f"{build.download_bytes // (1024 * 1024)} MiB"))
        files = []
        for pinned in (*build.packages, f"{build.dbg_package}={version}"):
            name, _, package_version = pinned.partition("=")
            package = archive.find(name, package_version)
            if package is None:
                raise InfraError(f"{pinned} vanished from the archive index during the run")
            files.append(download(package, debs, progress))
        dbg_file, others = files[-1], files[:-1]
        progress(Step(f"kernel {abi}: extracting"))
        log = kernel_store.build_log(build.key)
        code, output = docker_env.run_to_completion(
            images.base(), ["sh", "/extract-kernel.sh", abi, f"/debs/{dbg_file.name}", *(f"/debs/{f.name}" for f in others)],
            what=f"extracting kernel {abi}", timeout_s=EXTRACT_LIMIT_S, log_path=log, role="extract",
            mounts=[docker.types.Mount("/debs", str(debs), type="bind", read_only=True),
                    docker.types.Mount("/kroot", str(root), type="bind"),
                    docker.types.Mount("/extract-kernel.sh", str(EXTRACT_SCRIPT), type="bind", read_only=True)],
        )
        shutil.rmtree(debs, ignore_errors=True)
        if code != 0:
            tail = "\n    ".join(output.strip().splitlines()[-10:])
            raise InfraError(f"extracting kernel {abi} failed (exit {code}):\n    {tail}\n  full log: {log}")
        found = dict(line.split(" ", 1)[1].split("=", 1) for line in output.splitlines()
                     if line.startswith("STAPMATRIX ") and "=" in line)
        config = root / f"usr/src/linux-headers-{abi}/.config"
        cc, cc_version = compiler_of(config.read_text(), str(config))
        return {"release": abi, "cc": cc, "cc_version": cc_version, "vmlinuz": found["VMLINUZ"], "vmlinux": found["VMLINUX"],
                "build_id": build_id(root / found["VMLINUX"]), "identity": f"Debian {abi} {build.identity}"}

    return kernel_store.ensure(build.key, f"Debian kernel {abi} {version}", make, progress)
