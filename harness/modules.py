"""Compiling test scripts into modules for the cell's kernel, and packing the guest.

Compiles run in a networkless container of the cell image with the kernel's tree mounted
read-only from the kernel store: `stap -p4 -r KVER -m NAME`. `-m` turns off stap's script
cache, so the harness keeps one of its own, keyed by the systemtap image's content
(`stap_key`: images.content_key, which a rebuild of the same packages keeps, so the cache
carries over between machines and CI jobs), the kernel tree, the module name, the script text
and the options: an unchanged cell compiles nothing on the next run. Verdicts about the script (it compiled, or pass 2 or 4 failed) are cached; a
compile that died of the infrastructure (killed, out of memory, disk full, a time limit) is
an error and is not.

stap's own cache ($SYSTEMTAP_DIR/cache: tracepoint and type query modules) is kept per
(systemtap build, kernel), so only the first tracepoint script of a pair pays for building
the kernel's tracepoint queries.

The guest's initramfs is cached too, keyed by everything packed into it: a warm cell starts
no container before its guest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import docker.types
import requests.exceptions
from docker.models.containers import Container
from filelock import FileLock

from harness import cache, docker_env
from harness.bounded import MIB, UnreadableFile, read_bounded
from harness.errors import InfraError
from harness.files import GUEST_DIR
from harness.kernel_store import KernelTree
from harness.logs import INFRA_FAILURE_RE, classify_compile_failure, first_error_lines
from harness.outcomes import Outcome
from harness.progress import Progress, ScriptCompiled, Step, discard
from harness.resources import container_peak_mb, record_compile_peak
from harness.scripts import TestScript
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

CACHE_VERSION = "modules-v2"
COMPILE_LIMIT_S = 1800  # one script: tracepoint queries of a big kernel take minutes under load
PACK_LIMIT_S = 600


@dataclass
class Compiled:
    test: str
    ok: bool
    outcome: Outcome | None  # None when ok
    detail: str
    seconds: float
    cached: bool
    log_path: Path


def module_name(test: str) -> str:
    """A valid module name: stap wants [A-Za-z0-9_] and a short name."""
    return "sm_" + re.sub(r"[^A-Za-z0-9_]", "_", test)[:40]


def stap_cache_dir(stap_key: str, kernel: KernelTree) -> Path:
    """stap's own cache for one (systemtap build, kernel) pair."""
    name = hashlib.sha256(f"{stap_key}\0{kernel.key}".encode()).hexdigest()[:24]
    path = cache_dir() / "stap-cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# A tracepoint query that failed to build is cached by systemtap as an EMPTY file
# (tapsets.cxx, get_tracequery_modules: "cache an empty file for failures"; its make runs
# with -i), whatever the cause: a header that does not compile for this kernel, or a cc1
# killed for memory or a full disk. One such transient failure would make every later probe
# on that header's tracepoints fail pass 2 ("no match") for the (systemtap, kernel) pair for
# good. So a compile that fails to resolve a probe point removes the empty queries not yet
# confirmed and compiles again once; a query that builds empty again is a real failure and
# is recorded as confirmed, so it is not rebuilt on the next failure.
UNRESOLVED_PROBE_RE = re.compile(r"while resolving probe point")
CONFIRMED_EMPTY_QUERIES = "tracequery-failures.json"


def _empty_queries(stap_cache: Path) -> set[str]:
    return {str(path.relative_to(stap_cache)) for path in (stap_cache / "cache").glob("*/tracequery_*.o")
            if path.is_file() and not path.is_symlink() and path.stat().st_size == 0}


def _confirmed_empty_queries(stap_cache: Path) -> set[str]:
    known = cache.read_entry(stap_cache / CONFIRMED_EMPTY_QUERIES)
    return {str(name) for name in known} if isinstance(known, list) else set()


def forget_unconfirmed_failed_queries(stap_cache: Path, log: str) -> list[str]:
    """For a compile whose log says a probe point did not resolve: remove the empty tracepoint
    queries not confirmed yet (the next compile builds them again) and return them; [] when
    there are none, or the compile failed otherwise."""
    if not UNRESOLVED_PROBE_RE.search(log):
        return []
    suspects = sorted(_empty_queries(stap_cache) - _confirmed_empty_queries(stap_cache))
    for name in suspects:
        with contextlib.suppress(FileNotFoundError):  # another compile thread moved it first
            os.replace(stap_cache / name, _aside(stap_cache / name))
    if suspects:
        logger.info("%d failed tracepoint queries in %s not confirmed yet: building them again",
                    len(suspects), stap_cache)
    return suspects


def _aside(query: Path) -> Path:
    return query.with_name(query.name + ".retrying")  # not tracequery_*.o: stap never reads it


def confirm_failed_queries(stap_cache: Path, retried: list[str]) -> None:
    """After the second compile: a retried query it built empty again is a real failure for
    this pair (recorded), one it built whole was transient. One it did not build at all is put
    back, still unconfirmed: that compile's unresolved probe point was no tracepoint (a
    `process(...)` or `kernel.function(...)`), so it said nothing about the queries. Without
    this, every such failure removed them all and the next tracepoint compile rebuilt them."""
    again = set()
    for name in retried:
        query = stap_cache / name
        if query.is_file():
            if query.stat().st_size == 0:
                again.add(name)
            _aside(query).unlink(missing_ok=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.replace(_aside(query), query)
    if again:
        cache.write_entry(stap_cache / CONFIRMED_EMPTY_QUERIES,
                          sorted(_confirmed_empty_queries(stap_cache) | again))


# stap's cache limit (systemtap cache.cxx: 256 MB by default, then it evicts the oldest
# modules): the examples alone compile about 380 modules per kernel, which must all stay.
STAP_CACHE_MB = 8192
STAP_CACHE_IN_CONTAINER = "/stapcache"


@contextmanager
def cell_container(image: str, workdir: Path, kernel: KernelTree, stap_cache: Path | None = None,
                   extra_env: dict[str, str] | None = None, path_prefix: str = "") -> Iterator[Container]:
    """A long-lived container of the cell image: no network, the kernel's tree mounted
    read-only where stap looks for it, workdir at /work, stap's cache at /stapcache;
    `path_prefix` (directories with a colon after each) comes first on PATH."""
    mounts = kernel.mounts() + [
        docker.types.Mount("/work", str(workdir), type="bind"),
        docker.types.Mount("/guest", str(GUEST_DIR), type="bind", read_only=True),
    ]
    environment = {"HOME": "/work/home", **(extra_env or {})}
    path = path_prefix
    if kernel.cc == "gcc":
        # A kernel built from source calls plain `gcc`: make it the version that built the
        # kernel (harness/dockerfiles/gcc-links.sh), ahead of the image's own PATH.
        path += f"/usr/local/lib/stapmatrix/gcc-{kernel.cc_version}:"
    if path:
        environment["PATH"] = path + _image_path(image)
    if stap_cache is not None:
        mounts.append(docker.types.Mount(STAP_CACHE_IN_CONTAINER, str(stap_cache), type="bind"))
        environment["SYSTEMTAP_DIR"] = STAP_CACHE_IN_CONTAINER
        (stap_cache / "cache").mkdir(exist_ok=True)
        (stap_cache / "cache" / "cache_mb_limit").write_text(f"{STAP_CACHE_MB}\n")
    container = docker_env.start_container(
        image, ["sleep", "infinity"], network_mode="none",
        labels=docker_env.container_labels("compile"), mounts=mounts, environment=environment,
    )
    try:
        yield container
    finally:
        try:
            record_compile_peak(container_peak_mb(str(container.id), container.stats(stream=False)))
        except (docker.errors.APIError, OSError, ValueError, requests.exceptions.RequestException):
            pass  # a measurement only: worker sizing falls back to the largest one seen
        docker_env.remove_quietly(container)


def _image_path(image: str) -> str:
    for variable in docker_env.client().images.get(image).attrs["Config"].get("Env") or []:
        if variable.startswith("PATH="):
            return str(variable[5:])
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _cache_key(stap_image: str, kernel: KernelTree, script: TestScript) -> str:
    digest = hashlib.sha256()
    for part in (CACHE_VERSION, stap_image, kernel.key, kernel.release, module_name(script.name), script.text,
                 *script.stap_args):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


ENTRY_FILE_LIMIT = 256 * MIB  # a stap module of the largest test here is about 2 MiB


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(entry: Path, module: str, log_path: Path, target: Path, test: str) -> Compiled | None:
    """The cached verdict, or None when there is none or it is damaged (then it is dropped)."""
    record = cache.read_entry(entry / "result.json")
    if record is None:
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        return None
    try:
        # Regular files of bounded size only: a FIFO put in an entry must not hang the cell.
        log = read_bounded(entry / "compile.log", ENTRY_FILE_LIMIT, "a cached compile log")
        if record["ok"]:
            ko = read_bounded(entry / f"{module}.ko", ENTRY_FILE_LIMIT, "a cached module")
            if hashlib.sha256(ko).hexdigest() != record["ko_sha256"]:
                raise ValueError("the module does not match its digest")
            target.write_bytes(ko)
        log_path.write_bytes(log)
    except (OSError, KeyError, ValueError, UnreadableFile) as error:
        logger.warning("compile cache entry %s is damaged (%s): compiling again", entry, error)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    outcome = Outcome(record["outcome"]) if record["outcome"] else None
    return Compiled(test, bool(record["ok"]), outcome, str(record["detail"]), 0.0, True, log_path)


def _store(entry: Path, module: str, log_path: Path, target: Path, record: dict[str, object]) -> None:
    """Write a verdict into the cache: files first, in a directory renamed into place."""
    partial = entry.with_name(f".{entry.name}.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        shutil.copy(log_path, partial / "compile.log")
        if record["ok"]:
            shutil.copy(target, partial / f"{module}.ko")
            record["ko_sha256"] = _file_digest(target)
        cache.write_entry(partial / "result.json", record)
    except (OSError, InfraError) as error:  # a full disk: no half entry stays behind
        shutil.rmtree(partial, ignore_errors=True)
        why = error.strerror if isinstance(error, OSError) else str(error)
        raise InfraError(f"cannot store the compile result in {entry.parent}: {why}; free space there, or set "
                         "STAPMATRIX_CACHE to a directory with room") from None
    try:
        os.rename(partial, entry)
    except OSError:  # another process stored the same verdict first
        shutil.rmtree(partial, ignore_errors=True)


ContainerFactory = Callable[[], Container]


def _stap_compile(container: ContainerFactory, command: list[str], name: str) -> tuple[int, str]:
    exit_code, output = docker_env.exec_with_limit(
        container(), command, what=f"compiling {name} (stap -p4)", timeout_s=COMPILE_LIMIT_S, workdir="/work/build")
    return exit_code, output.decode("utf-8", "replace")


def compile_script(container: ContainerFactory, script: TestScript, kernel: KernelTree, workdir: Path,
                   stap_key: str, progress: Progress = discard) -> Compiled:
    """The script's verdict from the compile cache, or from `stap -p4` in the container
    `container()` gives (started only then)."""
    test_dir = workdir / "tests" / script.name
    test_dir.mkdir(parents=True, exist_ok=True)
    log_path = test_dir / "compile.log"
    module = module_name(script.name)
    target = workdir / "modules" / f"{module}.ko"  # staprun takes the module's name from the file's
    target.parent.mkdir(parents=True, exist_ok=True)
    entry = cache_dir() / "modules" / _cache_key(stap_key, kernel, script)

    cached = _cached(entry, module, log_path, target, script.name)
    if cached:
        return cached

    progress(Step(f"{kernel.release}: compiling {script.name}"))
    scripts = workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / f"{script.name}.stp").write_text(script.text)
    command = ["stap", "-p4", "-r", kernel.release, "-m", module, *script.stap_args, f"/work/scripts/{script.name}.stp"]
    started = time.monotonic()
    exit_code, log = _stap_compile(container, command, script.name)
    stap_cache = stap_cache_dir(stap_key, kernel)
    retried = forget_unconfirmed_failed_queries(stap_cache, log) if exit_code != 0 else []
    if retried:
        progress(Step(f"{kernel.release}: compiling {script.name} again: {len(retried)} failed tracepoint "
                      "queries built again"))
        exit_code, log = _stap_compile(container, command, script.name)
        confirm_failed_queries(stap_cache, retried)
    seconds = time.monotonic() - started
    log_path.write_text("$ " + " ".join(command) + "\n" + log)
    built = workdir / "build" / f"{module}.ko"
    ok = exit_code == 0 and built.exists()
    if not ok:
        infra = INFRA_FAILURE_RE.search(log)
        if infra or exit_code in (137, 139) or (exit_code == 0 and not built.exists()):
            killed = {137: "stap was killed (SIGKILL: out of memory, or by hand)", 139: "stap crashed (SIGSEGV)"}
            why = infra.group(0) if infra else killed.get(exit_code, f"stap exited {exit_code} without a module")
            raise InfraError(f"compiling {script.name} failed for a reason outside the script ({why}); "
                             f"not cached; log: {log_path}")
    outcome = None if ok else classify_compile_failure(log)
    detail = "" if ok else first_error_lines(log)
    if ok:
        shutil.move(str(built), target)
    _store(entry, module, log_path, target,
           {"ok": ok, "outcome": outcome.value if outcome else None, "detail": detail, "seconds": seconds})
    return Compiled(script.name, ok, outcome, detail, seconds, False, log_path)


def _initramfs_key(stap_key: str, kernel: KernelTree, workdir: Path, list_text: str, extra: str) -> str:
    digest = hashlib.sha256()
    parts = [CACHE_VERSION, stap_key, kernel.key, list_text, extra,
             (GUEST_DIR / "init").read_text(), (GUEST_DIR / "mkinitramfs.sh").read_text(),
             (GUEST_DIR / "staprun-parts").read_text(), (GUEST_DIR / "background.c").read_text()]
    for module in sorted((workdir / "modules").glob("*.ko")):
        parts += [module.name, _file_digest(module)]
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:24]


def pack_guest(container: ContainerFactory, kernel: KernelTree, workdir: Path, stap_key: str,
               with_stapsh: bool = False, programs: tuple[str, ...] = ()) -> Path:
    """OUT/initramfs[-stapsh].cpio and OUT/vmlinuz for the guest, from the cache when the
    same modules, list, init and systemtap build were packed before. A stapsh guest also
    gets `programs` (names) that busybox lacks, from the image (mkinitramfs.sh)."""
    name = "initramfs-stapsh.cpio" if with_stapsh else "initramfs.cpio"
    image = workdir / name
    shutil.copy(kernel.vmlinuz_path, workdir / "vmlinuz")
    list_text = (workdir / "list").read_text() if (workdir / "list").exists() else ""
    programs_text = "".join(f"{p}\n" for p in sorted(set(programs)))
    (workdir / "guest-programs").write_text(programs_text)
    key = _initramfs_key(stap_key, kernel, workdir, list_text, ("stapsh\n" + programs_text) if with_stapsh else "")
    cached = cache_dir() / "initramfs" / f"{key}.cpio"
    if cached.is_file():  # a regular file: a FIFO in its place would block the copy
        shutil.copy(cached, image)
        return image
    arguments = ["sh", "/guest/mkinitramfs.sh", kernel.release, "/work"] + (["stapsh"] if with_stapsh else [])
    code, output = docker_env.exec_with_limit(container(), arguments, what="packing the guest's initramfs",
                                              timeout_s=PACK_LIMIT_S)
    (workdir / ("mkinitramfs-stapsh.log" if with_stapsh else "mkinitramfs.log")).write_bytes(output)
    if code != 0:
        raise InfraError(f"packing the guest failed: {output.decode('utf-8', 'replace')[-800:]}")
    cache.atomic_write_bytes(cached, image.read_bytes())
    return image


def compile_cell(image: str, scripts: tuple[TestScript, ...], kernel: KernelTree, workdir: Path,
                 stap_key: str, progress: Progress = discard) -> dict[str, Compiled]:
    """Compile every script; pack the ones that compiled, and the kernel, for the guest. The
    container starts only when something needs it (a compile or a pack the cache lacks)."""
    (workdir / "build").mkdir(parents=True, exist_ok=True)
    (workdir / "home").mkdir(exist_ok=True)
    (workdir / "modules").mkdir(exist_ok=True)
    results: dict[str, Compiled] = {}
    stap_cache = stap_cache_dir(stap_key, kernel)
    with FileLock(str(stap_cache) + ".lock"), lazy_container(image, workdir, kernel, stap_cache) as container:
        for script in scripts:
            compiled = compile_script(container, script, kernel, workdir, stap_key, progress)
            results[script.name] = compiled
            verdict = "ok" if compiled.ok else compiled.outcome.value if compiled.outcome else "failed"
            progress(ScriptCompiled(kernel.release, script.name, verdict, compiled.seconds, compiled.cached))
        lines = [
            f"{s.name} {module_name(s.name)} {s.timeout_s} {','.join(s.staprun_args) or '-'} {' '.join(s.run)}".rstrip()
            for s in scripts if results[s.name].ok
        ]
        (workdir / "list").write_text("".join(line + "\n" for line in lines))
        pack_guest(container, kernel, workdir, stap_key)
    shutil.rmtree(workdir / "build", ignore_errors=True)
    shutil.rmtree(workdir / "home", ignore_errors=True)
    return results


# systemtap's own tests find the `stap` wrapper first on PATH (guest/remote-bin/stap: -r KVER,
# and --remote when STAPMATRIX_STAPSH is set): TESTS_PATH is cell_container's path_prefix.
TESTS_PATH = "/guest/remote-bin:"


def tests_environment(stap_path: str, kernel: KernelTree) -> dict[str, str]:
    """The wrapper's environment: the real stap it runs and the kernel under test."""
    return {"STAPMATRIX_STAP": stap_path, "STAPMATRIX_KVER": kernel.release, "LANG": "C"}


@contextmanager
def lazy_container(image: str, workdir: Path, kernel: KernelTree,
                   stap_cache: Path | None = None) -> Iterator[ContainerFactory]:
    """A function that starts the cell container on first use (and gives the same one after):
    a warm cell, whose compiles and guest all come from the caches, starts none."""
    with ExitStack() as stack:
        started: list[Container] = []

        def get() -> Container:
            if not started:
                started.append(stack.enter_context(cell_container(image, workdir, kernel, stap_cache)))
            return started[0]

        yield get
