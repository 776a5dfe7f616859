"""Docker images: base per suite, kernel per kernel, systemtap per build, cell, runner.

Tags are content addresses: `stapmatrix/KIND:HASH`, the hash covering the Dockerfile, the
files it copies and every build argument. A build is tagged only after it succeeded (the
daemon builds untagged, we tag the final id), so a failed or interrupted build leaves
nothing that a later run could mistake for a good image. A file lock named after the tag
makes pytest-xdist workers build each image once per run: the first builds, the others wait
and find it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker.errors
import requests.exceptions
from filelock import FileLock

from harness import docker_env, kernels, sources
from harness.archive import SUITES, Archive, valid_name, valid_version
from harness.cache import read_entry, write_entry
from harness.errors import InfraError
from harness.kernel_store import KernelTree
from harness.plan import Cell, StapBuild
from harness.settings import cache_dir, mirror, mirror_url

logger = logging.getLogger(__name__)

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
REPOSITORY = "stapmatrix"
BUILD_ATTEMPTS = 2  # a second try for a download that broke half-way
# A failed build is tried again only when its log looks like a network problem: a compiler
# error or a broken configure fails the same way twice.
TRANSIENT_RE = re.compile(r"(Failed to fetch|Unable to fetch|Temporary failure|Could not resolve|"
                          r"Connection (refused|reset|timed out)|Hash Sum mismatch|File has unexpected size|"
                          r"Undetermined Error|Unable to connect)", re.IGNORECASE)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
Progress = Callable[[str], None]


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_log_path(tag: str) -> Path:
    directory = cache_dir() / "build-logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / (tag.replace("/", "_").replace(":", "_") + ".log")


def _ensure(tag: str, build: Callable[[Path], None], progress: Progress) -> str:
    """Build `tag` unless it exists; serialised across processes by a lock named after it.

    The one place where an image is looked up before it is built. Images are rebuilt on every
    fresh machine (each CI job): a registry would go here, as a `docker pull` of the tag
    (tags are content addresses, so a pulled image is the one the recipe makes) between the
    local lookup and the build, and a push after a build."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / (tag.replace("/", "_").replace(":", "_") + ".lock"))):
        if docker_env.image_exists(tag):
            return tag
        log_path = build_log_path(tag)
        started = time.monotonic()
        progress(f"building {tag} (log: {log_path})")
        build(log_path)
        progress(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def _context(dockerfile: str, files: tuple[str, ...], extra: dict[str, bytes] | None = None) -> tuple[bytes, bytes]:
    """A build context tar holding the Dockerfile, the helper files it copies and `extra`
    (generated files such as a source tarball); returns it and the hashed part."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        named = [(dockerfile, "Dockerfile"), *[(f, f) for f in files]]
        items = [(arcname, (IMAGES_DIR / name).read_bytes()) for name, arcname in named]
        contents = b"".join(data for _, data in items)  # extra files are keyed by build arguments
        for arcname, data in items + list((extra or {}).items()):
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), contents


def _docker_build(context: bytes, buildargs: dict[str, str], tag: str, log_path: Path, progress: Progress,
                  network: str = "host") -> None:
    """Build and tag. `network` is the RUN steps' network: "host" for steps that download,
    "none" for steps that run code from a source tree (which then have nothing to retry)."""
    api = docker_env.client().api
    last_error = ""
    for attempt in range(1, (BUILD_ATTEMPTS if network != "none" else 1) + 1):
        image_id = None
        tail: list[str] = []
        with log_path.open("a") as log:
            log.write(f"=== attempt {attempt}: {tag} {buildargs} (network: {network})\n")
            try:
                for chunk in api.build(
                    fileobj=io.BytesIO(context), custom_context=True, buildargs=buildargs, rm=True,
                    forcerm=True, decode=True, network_mode=network, labels={docker_env.LABEL: "1"},
                    pull=False,
                ):
                    text = chunk.get("stream", "")
                    if text:
                        log.write(text)
                        log.flush()  # users tail this file during long builds
                        tail = (tail + ANSI_RE.sub("", text).splitlines())[-25:]
                        if text.startswith("Step "):
                            progress(f"{tag}: {text.strip()[:120]}")
                    if "aux" in chunk and "ID" in chunk["aux"]:
                        image_id = chunk["aux"]["ID"]
                    if "error" in chunk:
                        last_error = chunk["error"].strip()
                        log.write(f"ERROR: {last_error}\n")
            except requests.exceptions.RequestException as error:
                # The client's read timeout (a step silent for that long) or a daemon gone.
                raise InfraError(f"building {tag}: lost the connection to Docker or the build was silent too long "
                                 f"({error.__class__.__name__}); log: {log_path}") from None
        if image_id and not last_error:
            repository, _, version = tag.partition(":")
            api.tag(image_id, repository, version)
            return
        progress(f"{tag}: build attempt {attempt} failed: {last_error}")
        if not TRANSIENT_RE.search("\n".join(tail)):
            break  # not a download problem ("no space left" included): a retry fails the same way
    raise InfraError(
        f"building {tag} failed: {last_error}\n  last lines:\n    " + "\n    ".join(tail[-12:])
        + f"\n  full log: {log_path}"
    )


def check_packages(values: str, what: str) -> str:
    """Build arguments that name packages: every word NAME or NAME=VERSION in Debian's grammar.
    The values come from package indexes; a value that is not a package is refused before it
    reaches a build."""
    for word in values.split():
        name, _, version = word.partition("=")
        if not valid_name(name) or (version and not valid_version(version)):
            raise InfraError(f"{what}: {word!r} is not a Debian package name (or NAME=VERSION)")
    return values


def dockerfile_tag(kind: str, dockerfile: str, files: tuple[str, ...], buildargs: dict[str, str]) -> str:
    """The content address: the Dockerfile, the files it copies, every build argument."""
    _, contents = _context(dockerfile, files)
    return f"{REPOSITORY}/{kind}:{_hash(contents, *sorted(f'{k}={v}' for k, v in buildargs.items()))}"


def _build_dockerfile(kind: str, dockerfile: str, files: tuple[str, ...], buildargs: dict[str, str],
                      progress: Progress, extra: Callable[[], dict[str, bytes]] | None = None,
                      network: str = "host") -> str:
    """Build unless the tag exists. `extra` makes generated context files only when building;
    what they hold must be keyed by a build argument (a commit id, a content hash)."""
    tag = dockerfile_tag(kind, dockerfile, files, buildargs)

    def build(log: Path) -> None:
        context, _ = _context(dockerfile, files, extra() if extra else None)
        _docker_build(context, buildargs, tag, log, progress, network)

    return _ensure(tag, build, progress)


# --- base images ---------------------------------------------------------------------------

def _apt_sources(base_suite: str) -> str:
    """Every suite the plan may take packages from (from the mirror the settings chose, the
    security suites from the security archive); the base suite wins any tie (pin 990)."""
    blocks = []
    for suite in SUITES:
        blocks.append(
            f"Types: deb\nURIs: {suite.url()}\nSuites: {suite.name}\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    return "\n".join(blocks)


_APT_CONF = """\
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
DEBOOTSTRAP_LIMIT_S = 1200


def _debootstrap(suite: str, tag: str, log_path: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise InfraError("debootstrap is not installed: `apt-get install debootstrap` (or run `./sm setup`)")
    with tempfile.TemporaryDirectory(prefix="stapmatrix-base-") as tmp:
        root = Path(tmp) / "root"
        command = ["debootstrap", "--variant=minbase", "--include=ca-certificates,debian-archive-keyring,kmod,xz-utils,zstd",
                   suite, str(root), mirror_url()]
        with log_path.open("a") as log:
            log.write(f"=== {' '.join(command)}  (mirror from {mirror().origin})\n")
            log.flush()
            try:
                result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False,
                                        timeout=DEBOOTSTRAP_LIMIT_S)
            except subprocess.TimeoutExpired:
                raise InfraError(f"debootstrap of {suite} did not finish within {DEBOOTSTRAP_LIMIT_S} s; "
                                 f"log: {log_path}") from None
        if result.returncode != 0:
            raise InfraError(f"debootstrap of {suite} failed (exit {result.returncode}); log: {log_path}")
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/stapmatrix.sources").write_text(_apt_sources(suite))
        (root / "etc/apt/preferences.d/stapmatrix").write_text(
            f"Package: *\nPin: release n={suite}\nPin-Priority: 990\n"
        )
        (root / "etc/apt/apt.conf.d/90stapmatrix").write_text(_APT_CONF)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = Path(tmp) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True,
                       timeout=600)
        repository, _, version = tag.partition(":")
        docker_env.client().api.import_image_from_file(
            str(tarball), repository=repository, tag=version,
            changes=[f"LABEL {docker_env.LABEL}=1", 'CMD ["/bin/bash"]'],
        )


def base_tag(suite: str) -> str:
    """The base image's tag: computable without Docker (planning keys source builds by it)."""
    recipe = _hash("debootstrap-minbase-v3", suite, mirror_url(), _apt_sources(suite), _APT_CONF)
    return f"{REPOSITORY}/base:{suite}-{recipe}"


def base_image(suite: str, progress: Progress) -> str:
    tag = base_tag(suite)
    return _ensure(tag, lambda log: _debootstrap(suite, tag, log), progress)


KERNEL_BUILD_SUITE = "trixie"  # the toolchain every kernel built from source gets
RUNNER_SUITE = "trixie"


def kernel_build_tag() -> str:
    return dockerfile_tag("kbuild", "kernel-build.Dockerfile", ("build-kernel.sh",),
                          {"BASE": base_tag(KERNEL_BUILD_SUITE)})


def kernel_build_image(progress: Progress) -> str:
    base = base_image(KERNEL_BUILD_SUITE, progress)
    return _build_dockerfile("kbuild", "kernel-build.Dockerfile", ("build-kernel.sh",), {"BASE": base}, progress)


# --- the rest ------------------------------------------------------------------------------

# The compilers every systemtap image of a base carries: what the Debian kernels the base
# serves call (bookworm's and bookworm-backports' gcc-12, trixie's gcc-14; sid's 7.x gcc-16,
# which is also sid's default gcc). One image then compiles for every kernel of the grid.
BASE_COMPILERS = {"trixie": ("gcc-12", "gcc-14"), "sid": ("gcc-16",)}


def stap_image(base: str, base_suite: str, stap: StapBuild, progress: Progress) -> str:
    compilers = " ".join(BASE_COMPILERS[base_suite])
    if stap.spec.kind != "deb":
        return stap_source_image(base, stap, compilers, progress)
    return _build_dockerfile(
        "stap", "stap-deb.Dockerfile", ("stapmatrix-target.c", "gcc-links.sh"),
        {"BASE": base, "PACKAGES": check_packages(" ".join(stap.packages), "systemtap packages"),
         "COMPILERS": check_packages(compilers, "compiler packages")}, progress,
    )


def stap_source_image(base: str, stap: StapBuild, compilers: str, progress: Progress) -> str:
    """systemtap built from a git commit or a checkout: keyed by the commit id (or the tree's
    content hash), so one commit is built once and serves every kernel. Two steps: the
    dependencies with network, then configure and make with none (code from the source tree
    runs there)."""

    def source() -> dict[str, bytes]:
        if stap.spec.kind == "git":
            return {"source.tar": sources.git_tarball(stap.spec.value, stap.version)}
        return {"source.tar": sources.tree_tarball(Path(stap.spec.value))}

    deps = _build_dockerfile("stap-deps", "stap-source-deps.Dockerfile", ("gcc-links.sh",),
                             {"BASE": base, "COMPILERS": check_packages(compilers, "compiler packages")}, progress)
    return _build_dockerfile(
        "stap", "stap-source.Dockerfile", ("stapmatrix-target.c",),
        {"DEPS": deps, "SOURCE_ID": stap.version, "VERSION_LABEL": stap.version_label}, progress, source,
        network="none",
    )


def cell_image(stap: str, compilers: tuple[str, ...], cc: str, progress: Progress) -> str:
    """The systemtap image plus a compiler it lacks: only for a kernel whose compiler is not
    among its base's BASE_COMPILERS."""
    if not re.fullmatch(r"[a-z0-9_.+-]+", cc):
        raise InfraError(f"compiler {cc!r} is not a compiler name")
    return _build_dockerfile(
        "cell", "cell.Dockerfile", ("gcc-links.sh",),
        {"STAP_IMAGE": stap, "COMPILERS": check_packages(" ".join(compilers), "compiler packages"), "CC": cc},
        progress,
    )


def _provided(base_suite: str) -> set[str]:
    """Compiler packages a systemtap image of this base has, with the arch-qualified
    packages they depend on (gcc-16 brings gcc-16-x86-64-linux-gnu)."""
    names = set(BASE_COMPILERS[base_suite])
    return names | {f"{name}-x86-64-linux-gnu" for name in names}


def runner_image(base: str, progress: Progress) -> str:
    return _build_dockerfile("runner", "runner.Dockerfile", (), {"BASE": base}, progress)


def content_key(tag: str) -> str:
    """What an image holds, as a key that survives a rebuild: its tag (the recipe) and the
    exact version of every installed package. A rebuilt image gets a new id (creation times
    are part of it), so a cache keyed by the id starts empty on every fresh machine, as on
    each CI job; keyed by this, compiled modules and stap's own cache carry over wherever apt
    installed the same versions, and a package update (a new gcc) still makes a new key.
    Listed once per image id (one short networkless container), then remembered."""
    image = image_id(tag)
    memo = cache_dir() / "image-keys" / image.removeprefix("sha256:")
    known = read_entry(memo)
    if isinstance(known, str):
        return known
    code, packages = docker_env.run_to_completion(
        image, ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n"], what=f"listing the packages of {tag}",
        timeout_s=120, log_path=build_log_path(tag), role="inspect")
    if code != 0:
        raise InfraError(f"listing the packages of {tag} failed (exit {code}); log: {build_log_path(tag)}")
    key = _hash(tag, packages)
    write_entry(memo, key)
    return key


def image_id(tag: str) -> str:
    try:
        return str(docker_env.client().images.get(tag).id)
    except docker.errors.ImageNotFound as error:
        raise InfraError(f"image {tag} vanished during the run") from error


class CellImages:
    """Every image one cell needs, and its kernel tree, found or made in dependency order."""

    def __init__(self, cell: Cell, archive: Archive, progress: Progress) -> None:
        self.base = base_image(cell.base_suite, progress)
        self.kernel: KernelTree = kernels.materialize(cell.kernel, archive, self.base, progress)
        self.stap = stap_image(self.base, cell.base_suite, cell.stap, progress)
        self.stap_key = content_key(self.stap)  # what the compile and initramfs caches are keyed by
        compilers, _ = kernels.compiler_packages(archive, self.kernel.cc, self.kernel.cc_version, cell.base_suite)
        if set(compilers) <= _provided(cell.base_suite):
            self.cell = self.stap
        else:
            self.cell = cell_image(self.stap, compilers, self.kernel.cc, progress)
        # QEMU does not care which base it runs on: one runner for every cell.
        self.runner = runner_image(base_image(RUNNER_SUITE, progress), progress)
