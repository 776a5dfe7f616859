"""A kernel built from source: `{git: URL-or-DIR, ref: REF}` (with an optional `config:`).

The ref is resolved to a full commit id at planning time; the build is keyed by (commit,
config pieces and the fragments' contents, toolchain image), so the same kernel is built once
and shared by every systemtap column, and a moving branch gives a new build.

Builds run in the kernel build image (harness/dockerfiles/kernel-build.Dockerfile) with no network. Each
(repository, config) has one persistent checkout and one persistent build directory: a
second ref is checked out over the first, so git rewrites only the files that differ and
make rebuilds only what depends on them (a one-file change: minutes, not the whole kernel).
A persistent ccache and a fixed build timestamp cover the rest. A build that fails because of
what was built (a compile error, an option that did not take) is remembered for that key;
one that fails because of the machine is not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import docker.types
from filelock import FileLock

from harness import docker_env, gitrepo, kconfig, kernel_package, kernel_store
from harness.archive import Archive
from harness.elf import build_id
from harness.errors import BuildVerdictError, InfraError, MatrixError
from harness.kernel_build import KernelBuild, KernelImages
from harness.kernel_store import KernelTree
from harness.logs import INFRA_FAILURE_RE
from harness.progress import KernelBuildProgress, KernelBuilt, Progress, Step
from harness.recipes import kernel_build_tag
from harness.settings import cache_dir
from harness.specs import KernelSpec
from harness.suites import KERNEL_BUILD_SUITE

logger = logging.getLogger(__name__)

CONFIGURE_LIMIT_S = 900
PROGRESS_EVERY_S = 30
COMPILE_LINE_RE = re.compile(r"^\s+(CC|AS|LD|AR|OBJCOPY)\s+(?:\[M\]\s+)?(\S+)")


def build_limit_s() -> float:
    """How long one kernel build may take: 4 h by default (a full defconfig build with debug
    info takes 35 min on 2 cores here), STAPMATRIX_KERNEL_BUILD_LIMIT seconds if set."""
    value = os.environ.get("STAPMATRIX_KERNEL_BUILD_LIMIT", "")
    return float(value) if re.fullmatch(r"[0-9]{1,6}", value) else 4 * 3600.0


def _makefile_release(repo: str, commit: str) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL(EXTRAVERSION) from the commit's top Makefile (what `make
    kernelrelease` gives without a CONFIG_LOCALVERSION)."""
    try:
        makefile = gitrepo.show(repo, commit, "Makefile")
    except InfraError:
        return ""
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION) = ?(.*)$", makefile, re.MULTILINE))
    if "VERSION" not in fields:
        return ""
    return f"{fields['VERSION']}.{fields.get('PATCHLEVEL', '0')}.{fields.get('SUBLEVEL', '0')}{fields.get('EXTRAVERSION', '')}"


def resolve(spec: KernelSpec, where: str, archive: Archive) -> KernelBuild:
    repo = gitrepo.repository(spec.value, where)
    commit = gitrepo.resolve_ref(spec.value, spec.ref, where, hint_tags="v*")
    if not _makefile_release(repo, commit):
        raise MatrixError(f"{where}: {gitrepo.mask(spec.value)} at {spec.ref} ({commit[:12]}) has no kernel "
                          "Makefile (VERSION = ...): is it a Linux source tree?")
    items = kconfig.effective_items(spec.config)
    key = hashlib.sha256("\0".join(("git-v1", commit, kconfig.items_digest(items),
                                    kernel_build_tag())).encode()).hexdigest()[:24]
    release = _makefile_release(repo, commit)
    return KernelBuild(
        spec=spec, key="git-" + key, identity=f"commit {commit}", origin="git", release=release,
        base_suite=KERNEL_BUILD_SUITE, base_reason=f"the kernel is built with {KERNEL_BUILD_SUITE}'s gcc",
        commit=commit,
    )


def _workspace(spec: KernelSpec) -> Path:
    """The persistent checkout and build directory of one (repository, config)."""
    items = kconfig.effective_items(spec.config)
    name = hashlib.sha256(f"{spec.value}\0{kconfig.items_digest(items)}".encode()).hexdigest()[:16]
    path = cache_dir() / "kbuild" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _checkout(spec: KernelSpec, commit: str, source: Path) -> None:
    """`source` at `commit`, touching only the files that differ from what it holds."""
    repo = gitrepo.repository(spec.value, spec.spec)
    if not (source / ".git").exists():
        shutil.rmtree(source, ignore_errors=True)
        gitrepo.run("clone", "--quiet", "--shared", "--no-checkout", repo, str(source),
                    what=f"making a checkout of {spec.value}")
    gitrepo.run("checkout", "--quiet", "--force", "--detach", commit, cwd=str(source),
                what=f"checking out {commit[:12]} of {spec.value}")
    gitrepo.run("clean", "-q", "-ffdx", cwd=str(source), what="cleaning the checkout")


def _config_files(items: tuple[str, ...], directory: Path) -> tuple[str, list[str]]:
    """(base argument, fragment arguments) of build-kernel.sh, with files copied to /config.
    The copies are named by their position only: a user's file name (spaces, `*`, `$(...)`)
    never reaches the build script, and what is copied is what planning checked (read again
    as a regular file of bounded size, harness/kconfig.py)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    base = "defconfig"
    fragments: list[str] = []
    lines: list[str] = []
    for index, item in enumerate(items):
        kind, _, value = item.partition(":")
        if kind == "base":
            base = value
        elif kind == "full":
            (directory / "base.config").write_text(kconfig.read_config_file(Path(value), value))
            base = "file:/config/base.config"
        elif kind == "target":
            fragments.append(f"target:{value}")
        elif kind == "file":
            name = f"{index:02d}-fragment.config"
            (directory / name).write_text(kconfig.read_config_file(Path(value), value))
            fragments.append(f"/config/{name}")
        elif kind == "line":
            lines.append(value)
    if lines:
        (directory / "90-matrix-lines.config").write_text("\n".join(lines) + "\n")
        fragments.append("/config/90-matrix-lines.config")
    for name, text in kconfig.required_fragments().items():
        (directory / f"99-{name}").write_text(text)
        fragments.append(f"/config/99-{name}")
    return base, fragments


class BuildProgress:
    """Turns make's output into a line every PROGRESS_EVERY_S: how many files, how fast,
    which one last, and of about how many when an earlier build of this directory counted."""

    def __init__(self, what: str, progress: Progress, expected: int) -> None:
        self.what, self.progress, self.expected = what, progress, expected
        self.count = 0
        self.last = ""
        self.started = self.reported = time.monotonic()

    def line(self, text: str) -> None:
        match = COMPILE_LINE_RE.match(text)
        if match:
            self.count += 1
            self.last = match.group(2)
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY_S:
            self.reported = now
            self.progress(KernelBuildProgress(self.what, self.count, self.expected, now - self.started, self.last))


def _run_build_step(image: str, arguments: list[str], *, what: str, timeout_s: float, log: Path,
                    source: Path, out: Path, config_dir: Path, on_line: Callable[[str], None] | None = None) -> str:
    code, output = docker_env.run_to_completion(
        image, ["sh", "/usr/local/bin/build-kernel.sh", *arguments], what=what, timeout_s=timeout_s,
        log_path=log, role="kbuild", on_line=on_line,
        mounts=[docker.types.Mount("/usr/src/linux", str(source), type="bind", read_only=True),
                docker.types.Mount("/usr/src/linux-build", str(out), type="bind"),
                docker.types.Mount("/ccache", str(cache_dir() / "ccache"), type="bind"),
                docker.types.Mount("/config", str(config_dir), type="bind", read_only=True)],
    )
    if code != 0:
        tail = "\n    ".join(line for line in output.strip().splitlines()[-15:])
        message = f"{what} failed (exit {code}):\n    {tail}\n  full log: {log}"
        if code in (137, 139) or INFRA_FAILURE_RE.search(output[-5000:]):
            raise InfraError(message)
        raise BuildVerdictError(message)
    return output


def materialize(build: KernelBuild, archive: Archive, images: KernelImages, progress: Progress) -> KernelTree:
    spec = build.spec
    what = f"kernel {spec.label} ({spec.value} {build.commit[:12]})"

    def make(root: Path) -> dict[str, object]:
        image = images.kernel_build()
        (cache_dir() / "ccache").mkdir(exist_ok=True)
        workspace = _workspace(spec)
        log = kernel_store.build_log(build.key)
        with FileLock(str(workspace) + ".lock"):
            source, out, config_dir = workspace / "src", workspace / "out", workspace / "config"
            out.mkdir(exist_ok=True)
            progress(Step(f"{what}: checking out"))
            _checkout(spec, build.commit, source)
            base, fragments = _config_files(kconfig.effective_items(spec.config), config_dir)
            progress(Step(f"{what}: configuring ({', '.join(kconfig.effective_items(spec.config))} + systemtap's needs)"))
            _run_build_step(image, ["configure", base, *fragments], what=f"configuring {what}",
                            timeout_s=CONFIGURE_LIMIT_S, log=log, source=source, out=out, config_dir=config_dir)
            _check_config(out, spec, log)
            counted = out / ".stapmatrix-files"
            expected = int(counted.read_text()) if counted.exists() and counted.read_text().isdigit() else 0
            incremental = (out / "vmlinux").exists()  # an earlier build of this directory to build on
            tracker = BuildProgress(f"building {what}", progress, expected)
            started = time.monotonic()
            progress(Step(f"building {what} (log: {log})"))
            _run_build_step(image, ["build"], what=f"building {what}", timeout_s=build_limit_s(), log=log,
                            source=source, out=out, config_dir=config_dir, on_line=tracker.line)
            if tracker.count > expected:
                counted.write_text(str(tracker.count))
            progress(KernelBuilt(what, round(time.monotonic() - started, 1), tracker.count, incremental))
            fields: dict[str, object] = dict(kernel_package.package(source, out, root, image, log))
        fields["build_id"] = build_id(root / str(fields["vmlinux"]))
        fields["identity"] = f"{spec.value} {spec.ref} commit {build.commit}"
        fields["build_seconds"] = round(time.monotonic() - started, 1)
        return fields

    return kernel_store.ensure(build.key, what, make, progress)


def _check_config(out: Path, spec: KernelSpec, log: Path) -> None:
    """Every option the config pieces asked for must be in the resolved .config."""
    text = (out / ".config").read_text()
    items = kconfig.effective_items(spec.config)
    missing = kconfig.unmet(text, kconfig.wanted_options(items))
    if missing:
        raise BuildVerdictError(
            f"kernel {spec.label}: after olddefconfig, {len(missing)} option(s) did not take "
            "(a dependency is off, or this kernel has no such option):\n"
            + kconfig.describe_unmet(missing, kconfig.parse_config(text)) + f"\n  log: {log}")
