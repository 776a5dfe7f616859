"""What each image is made of, and its tag: computed from files and values alone, without
Docker, so planning (a kernel build's key includes its toolchain's tag) never needs a daemon
or the image builder (harness/images.py).

Tags are content addresses: `stapmatrix/KIND:HASH`, the hash covering the Dockerfile, the
files it copies and every build argument; a base image's tag covers its suite, the mirror and
the apt configuration written into it.

    base:SUITE-HASH       debootstrap --variant=minbase, imported; apt sources for every suite
    stap:HASH             a Debian systemtap build (stap-deb.Dockerfile), or a source build on stap-deps
    stap-deps:HASH        a source build's dependencies (the only source-build step with network)
    cell:HASH             a systemtap image plus a kernel compiler it lacks
    runner:HASH           QEMU
    kbuild:HASH           the kernel build toolchain
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass

from harness.debian_names import valid_name, valid_version
from harness.errors import InfraError
from harness.files import DOCKERFILES_DIR
from harness.settings import mirror_url
from harness.suites import BASE_COMPILERS, KERNEL_BUILD_SUITE, RUNNER_SUITE, SUITES

REPOSITORY = "stapmatrix"


def content_hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Recipe:
    """A Dockerfile build: the Dockerfile and the files it copies (from harness/dockerfiles),
    its build arguments, and the network its RUN steps get ("host" for steps that download,
    "none" for steps that run code from a source tree)."""

    kind: str
    dockerfile: str
    files: tuple[str, ...]
    buildargs: tuple[tuple[str, str], ...]
    network: str = "host"

    @property
    def arguments(self) -> dict[str, str]:
        return dict(self.buildargs)

    def context(self, extra: dict[str, bytes] | None = None) -> tuple[bytes, bytes]:
        """A build context tar holding the Dockerfile, the helper files it copies and `extra`
        (generated files such as a source tarball, which must be keyed by a build argument);
        returns it and the part the tag hashes."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            named = [(self.dockerfile, "Dockerfile"), *[(f, f) for f in self.files]]
            items = [(arcname, (DOCKERFILES_DIR / name).read_bytes()) for name, arcname in named]
            contents = b"".join(data for _, data in items)
            for arcname, data in items + list((extra or {}).items()):
                info = tarfile.TarInfo(arcname)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue(), contents

    @property
    def tag(self) -> str:
        """The content address: the Dockerfile, the files it copies, every build argument."""
        _, contents = self.context()
        return f"{REPOSITORY}/{self.kind}:{content_hash(contents, *sorted(f'{k}={v}' for k, v in self.buildargs))}"


def recipe(kind: str, dockerfile: str, files: tuple[str, ...], buildargs: dict[str, str],
           network: str = "host") -> Recipe:
    return Recipe(kind, dockerfile, files, tuple(sorted(buildargs.items())), network)


def check_packages(values: str, what: str) -> str:
    """Build arguments that name packages: every word NAME or NAME=VERSION in Debian's grammar.
    The values come from package indexes; a value that is not a package is refused before it
    reaches a build."""
    for word in values.split():
        name, _, version = word.partition("=")
        if not valid_name(name) or (version and not valid_version(version)):
            raise InfraError(f"{what}: {word!r} is not a Debian package name (or NAME=VERSION)")
    return values


# --- base images ---------------------------------------------------------------------------

def apt_sources(base_suite: str) -> str:
    """Every suite the plan may take packages from (from the mirror the settings chose, the
    security suites from the security archive); the base suite wins any tie (pin 990)."""
    blocks = []
    for suite in SUITES:
        blocks.append(
            f"Types: deb\nURIs: {suite.url()}\nSuites: {suite.name}\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    return "\n".join(blocks)


APT_CONF = """\
// An archive's Release file may be past its Valid-Until (sid's was here); apt refuses it
// without this. The signature is still checked.
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Acquire::Retries "5";
// No binary package caches in images: with eight suites they weigh 180 MB per layer.
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""


def base_tag(suite: str) -> str:
    recipe_hash = content_hash("debootstrap-minbase-v3", suite, mirror_url(), apt_sources(suite), APT_CONF)
    return f"{REPOSITORY}/base:{suite}-{recipe_hash}"


# --- the rest ------------------------------------------------------------------------------

def kernel_build_recipe() -> Recipe:
    return recipe("kbuild", "kernel-build.Dockerfile", ("build-kernel.sh",), {"BASE": base_tag(KERNEL_BUILD_SUITE)})


def kernel_build_tag() -> str:
    """The toolchain every kernel built from source gets: part of a source build's key."""
    return kernel_build_recipe().tag


def _compilers(base_suite: str) -> str:
    return check_packages(" ".join(BASE_COMPILERS[base_suite]), "compiler packages")


def stap_deb_recipe(base_suite: str, packages: tuple[str, ...]) -> Recipe:
    """A Debian systemtap build and the base's kernel compilers."""
    return recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c", "gcc-links.sh"),
                  {"BASE": base_tag(base_suite), "PACKAGES": check_packages(" ".join(packages), "systemtap packages"),
                   "COMPILERS": _compilers(base_suite)})


def stap_deps_recipe(base_suite: str) -> Recipe:
    """What a systemtap source build needs, with network."""
    return recipe("stap-deps", "stap-source-deps.Dockerfile", ("gcc-links.sh",),
                  {"BASE": base_tag(base_suite), "COMPILERS": _compilers(base_suite)})


def stap_source_recipe(base_suite: str, source_id: str, version_label: str) -> Recipe:
    """systemtap built from source: the installed result of the incremental build (made with
    no network by harness/stap_source_build.py, with build-stap.sh, which the tag covers) on
    its dependencies image; keyed by the commit id or the tree's content hash."""
    return recipe("stap", "stap-source.Dockerfile", ("stapmatrix-target.c", "build-stap.sh"),
                  {"DEPS": stap_deps_recipe(base_suite).tag, "SOURCE_ID": source_id, "VERSION_LABEL": version_label},
                  network="none")


def cell_recipe(stap_tag: str, compilers: tuple[str, ...], cc: str) -> Recipe:
    """The systemtap image plus a compiler it lacks: only for a kernel whose compiler is not
    among its base's BASE_COMPILERS."""
    if not re.fullmatch(r"[a-z0-9_.+-]+", cc):
        raise InfraError(f"compiler {cc!r} is not a compiler name")
    return recipe("cell", "cell.Dockerfile", ("gcc-links.sh",),
                  {"STAP_IMAGE": stap_tag, "COMPILERS": check_packages(" ".join(compilers), "compiler packages"),
                   "CC": cc})


def runner_recipe() -> Recipe:
    return recipe("runner", "runner.Dockerfile", (), {"BASE": base_tag(RUNNER_SUITE)})
