"""Docker images, built: base per suite, systemtap per build, cell, runner, kernel build
toolchain. What each image is made of and its tag are harness/recipes.py's; this module makes
them exist in the local daemon.

A build is tagged only after it succeeded (the daemon builds untagged, we tag the final id),
so a failed or interrupted build leaves nothing that a later run could mistake for a good
image. A file lock named after the tag makes pytest-xdist workers build each image once per
run: the first builds, the others wait and find it.

With a registry configured (harness/registry.py, STAPMATRIX_REGISTRY), an image missing here
is pulled from there (and checked to be what its tag says) before it is built, and what is
built is pushed when pushing is allowed. Every image carries its own tag as a label
(`org.stapmatrix.tag`): the check a pulled image must pass.
"""

from __future__ import annotations

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
from typing import BinaryIO

import docker.errors
import requests.exceptions
from filelock import FileLock

from harness import docker_env, recipes, registry, stap_source_build, staps
from harness.cache import read_entry, write_entry
from harness.errors import InfraError
from harness.files import DOCKERFILES_DIR
from harness.plan import Cell
from harness.progress import ImageBuildFailed, ImageBuildStarted, ImageBuildStep, ImageBuilt, Progress
from harness.recipes import Recipe
from harness.settings import cache_dir, mirror, mirror_url
from harness.stap_build import StapBuild
from harness.suites import KERNEL_BUILD_SUITE, RUNNER_SUITE

logger = logging.getLogger(__name__)

BUILD_ATTEMPTS = 2  # a second try for a download that broke half-way
# A failed build is tried again only when its log looks like a network problem: a compiler
# error or a broken configure fails the same way twice.
TRANSIENT_RE = re.compile(r"(Failed to fetch|Unable to fetch|Temporary failure|Could not resolve|"
                          r"Connection (refused|reset|timed out)|Hash Sum mismatch|File has unexpected size|"
                          r"Undetermined Error|Unable to connect)", re.IGNORECASE)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def build_log_path(tag: str) -> Path:
    directory = cache_dir() / "build-logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / (tag.replace("/", "_").replace(":", "_") + ".log")


def ensure(tag: str, build: Callable[[Path], None], progress: Progress) -> str:
    """Build `tag` unless it exists here or the registry has it; serialised across processes
    by a lock named after it. The one place where an image is looked up before it is built,
    and where a built image is pushed."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / (tag.replace("/", "_").replace(":", "_") + ".lock"))):
        if docker_env.image_exists(tag) or registry.pull(tag, progress):
            return tag
        log_path = build_log_path(tag)
        started = time.monotonic()
        progress(ImageBuildStarted(tag, str(log_path)))
        build(log_path)
        progress(ImageBuilt(tag, round(time.monotonic() - started, 1)))
        registry.push(tag, progress)
    return tag


def labels(tag: str) -> dict[str, str]:
    """What every image of ours carries: ours, and the tag it was built as (registry.py checks
    a pulled image by it)."""
    return {docker_env.LABEL: "1", registry.TAG_LABEL: tag}


def _docker_build(context: bytes | BinaryIO, buildargs: dict[str, str], tag: str, log_path: Path,
                  progress: Progress, network: str = "host") -> None:
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
                if not isinstance(context, bytes):
                    context.seek(0)
                for chunk in api.build(
                    fileobj=io.BytesIO(context) if isinstance(context, bytes) else context,
                    custom_context=True, buildargs=buildargs, rm=True,
                    forcerm=True, decode=True, network_mode=network, labels=labels(tag),
                    pull=False,
                ):
                    text = chunk.get("stream", "")
                    if text:
                        log.write(text)
                        log.flush()  # users tail this file during long builds
                        tail = (tail + ANSI_RE.sub("", text).splitlines())[-25:]
                        if text.startswith("Step "):
                            progress(ImageBuildStep(tag, text.strip()[:120]))
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
        progress(ImageBuildFailed(tag, attempt, last_error))
        if not TRANSIENT_RE.search("\n".join(tail)):
            break  # not a download problem ("no space left" included): a retry fails the same way
    raise InfraError(
        f"building {tag} failed: {last_error}\n  last lines:\n    " + "\n    ".join(tail[-12:])
        + f"\n  full log: {log_path}"
    )


def build(recipe: Recipe, progress: Progress, extra: Callable[[], dict[str, bytes]] | None = None) -> str:
    """The recipe's image, built unless its tag exists. `extra` makes generated context files
    only when building; what they hold must be keyed by a build argument (a commit id, a
    content hash)."""

    def make(log: Path) -> None:
        context, _ = recipe.context(extra() if extra else None)
        _docker_build(context, recipe.arguments, recipe.tag, log, progress, recipe.network)

    return ensure(recipe.tag, make, progress)


# --- base images ---------------------------------------------------------------------------

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
        (root / "etc/apt/sources.list.d/stapmatrix.sources").write_text(recipes.apt_sources(suite))
        (root / "etc/apt/preferences.d/stapmatrix").write_text(
            f"Package: *\nPin: release n={suite}\nPin-Priority: 990\n"
        )
        (root / "etc/apt/apt.conf.d/90stapmatrix").write_text(recipes.APT_CONF)
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
            changes=[f'LABEL {name}="{value}"' for name, value in labels(tag).items()] + ['CMD ["/bin/bash"]'],
        )


def base_image(suite: str, progress: Progress) -> str:
    tag = recipes.base_tag(suite)
    return ensure(tag, lambda log: _debootstrap(suite, tag, log), progress)


# --- the rest ------------------------------------------------------------------------------

def kernel_build_image(progress: Progress) -> str:
    base_image(KERNEL_BUILD_SUITE, progress)
    return build(recipes.kernel_build_recipe(), progress)


def stap_image(base_suite: str, stap: StapBuild, progress: Progress) -> str:
    """The systemtap image of one build on one base (the base made first): a Debian package,
    or a source build in two steps, the dependencies with network, then configure and make
    with none (code from the source tree runs there)."""
    base_image(base_suite, progress)
    if stap.spec.kind == "deb":
        return build(recipes.stap_deb_recipe(base_suite, stap.packages), progress)
    deps = build(recipes.stap_deps_recipe(base_suite), progress)
    recipe = recipes.stap_source_recipe(base_suite, stap.version, stap.version_label)

    def make(log: Path) -> None:
        install = stap_source_build.ensure_install(stap, deps, staps.source_tarball(stap), progress)
        with tempfile.TemporaryFile(dir=cache_dir()) as context:
            _write_install_context(recipe, install.root, context)
            _docker_build(context, recipe.arguments, recipe.tag, log, progress, recipe.network)

    return ensure(recipe.tag, make, progress)


def _write_install_context(recipe: Recipe, install_root: Path, stream: BinaryIO) -> None:
    """The build context of a source build's image: the Dockerfile, the files it copies and
    the installed tree as `stap-install/`, streamed from disk (it weighs hundreds of MB)."""
    with tarfile.open(fileobj=stream, mode="w") as tar:
        tar.add(str(DOCKERFILES_DIR / recipe.dockerfile), arcname="Dockerfile")
        for name in recipe.files:
            tar.add(str(DOCKERFILES_DIR / name), arcname=name)
        tar.add(str(install_root), arcname="stap-install")


def cell_image(stap_tag: str, compilers: tuple[str, ...], cc: str, progress: Progress) -> str:
    return build(recipes.cell_recipe(stap_tag, compilers, cc), progress)


def runner_image(progress: Progress) -> str:
    base_image(RUNNER_SUITE, progress)
    return build(recipes.runner_recipe(), progress)


# --- every image of a plan, for a registry --------------------------------------------------

def cell_tags(cell: Cell) -> list[str]:
    """The tags of the images a cell needs that are known before its kernel is in the store
    (no Docker needed): base, systemtap (and a source build's dependencies), runner, and the
    kernel build toolchain for a kernel built from source. A cell image (a compiler the
    systemtap image lacks) depends on the kernel's compiler and is made by the cell itself."""
    if cell.stap.spec.kind == "deb":
        stap = [recipes.stap_deb_recipe(cell.base_suite, cell.stap.packages).tag]
    else:
        stap = [recipes.stap_deps_recipe(cell.base_suite).tag,
                recipes.stap_source_recipe(cell.base_suite, cell.stap.version, cell.stap.version_label).tag]
    kernel = ([recipes.base_tag(KERNEL_BUILD_SUITE), recipes.kernel_build_tag()] if cell.kernel.spec.kind == "git"
              else [])
    return list(dict.fromkeys([recipes.base_tag(cell.base_suite), *stap, *kernel, recipes.base_tag(RUNNER_SUITE),
                               recipes.runner_recipe().tag]))


def make_cell_images(cell: Cell, progress: Progress) -> list[str]:
    """The images of `cell_tags`, each found, pulled or built; their tags."""
    base_image(cell.base_suite, progress)
    stap_image(cell.base_suite, cell.stap, progress)
    if cell.kernel.spec.kind == "git":
        kernel_build_image(progress)
    runner_image(progress)
    return cell_tags(cell)


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
    key = recipes.content_hash(tag, packages)
    write_entry(memo, key)
    return key


def image_id(tag: str) -> str:
    try:
        return str(docker_env.client().images.get(tag).id)
    except docker.errors.ImageNotFound as error:
        raise InfraError(f"image {tag} vanished during the run") from error
