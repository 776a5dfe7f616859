"""Compiling test scripts into modules for the cell's kernel, and packing the guest.

Compiles run in the cell image with no network: `stap -p4 -r KVER -m NAME`. `-m` turns off
stap's own cache (~/.systemtap/cache), so the harness keeps one of its own, keyed by the
systemtap image, the kernel image, the script text and the options: an unchanged cell
compiles nothing on the next run. Failures are cached too (the same inputs fail the same way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from harness import docker_env
from harness.errors import InfraError
from harness.outcomes import Outcome
from harness.scripts import TestScript
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).resolve().parent / "guest"
CACHE_VERSION = "modules-v1"
# stap prints "Pass N: ... failed." when a pass gives up (also without -v).
PASS_FAILED_RE = re.compile(r"^Pass ([1-5]): .*failed", re.MULTILINE)
ERROR_LINE_RE = re.compile(r"(error|ERROR|Error|failed|undefined|No DWARF|WARNING: cannot)")


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


def first_error_lines(log: str, limit: int = 6) -> str:
    lines = [line for line in log.splitlines() if ERROR_LINE_RE.search(line)]
    return "\n".join((lines or log.splitlines()[-limit:])[:limit])


def classify_compile_failure(log: str) -> Outcome:
    """Passes 1-3 (parse, elaborate, translate) are the front end: a probe point or variable
    that no longer resolves. Pass 4 is the kernel build of the generated C."""
    match = PASS_FAILED_RE.search(log)
    if match and match.group(1) == "4":
        return Outcome.FAIL_PASS4
    if match:
        return Outcome.FAIL_PASS2
    if "make: ***" in log or "error: " in log and ".c:" in log:
        return Outcome.FAIL_PASS4
    return Outcome.FAIL_PASS2


@contextmanager
def cell_container(image: str, workdir: Path) -> Iterator[Container]:
    """A long-lived container of the cell image, no network, workdir mounted at /work."""
    container = docker_env.client().containers.run(
        image, ["sleep", "infinity"], detach=True, network_mode="none",
        labels=docker_env.container_labels("compile"),
        volumes={str(workdir): {"bind": "/work", "mode": "rw"}, str(GUEST_DIR): {"bind": "/guest", "mode": "ro"}},
        environment={"HOME": "/work/home"},
    )
    try:
        yield container
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass


def _cache_key(stap_image: str, kernel_image: str, script: TestScript, kver: str) -> str:
    digest = hashlib.sha256()
    for part in (CACHE_VERSION, stap_image, kernel_image, kver, script.text, *script.stap_args):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def compile_script(container: Container, script: TestScript, kver: str, workdir: Path,
                   stap_image_id: str, kernel_image_id: str) -> Compiled:
    test_dir = workdir / "tests" / script.name
    test_dir.mkdir(parents=True, exist_ok=True)
    log_path = test_dir / "compile.log"
    module = module_name(script.name)
    target = workdir / "modules" / f"{module}.ko"  # staprun takes the module's name from the file's
    target.parent.mkdir(parents=True, exist_ok=True)
    entry = cache_dir() / "modules" / _cache_key(stap_image_id, kernel_image_id, script, kver)

    if (entry / "result.json").exists():
        record = json.loads((entry / "result.json").read_text())
        shutil.copy(entry / "compile.log", log_path)
        if record["ok"]:
            shutil.copy(entry / f"{module}.ko", target)
        outcome = Outcome(record["outcome"]) if record["outcome"] else None
        return Compiled(script.name, record["ok"], outcome, record["detail"], 0.0, True, log_path)

    scripts = workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / f"{script.name}.stp").write_text(script.text)
    command = ["stap", "-p4", "-r", kver, "-m", module, *script.stap_args, f"/work/scripts/{script.name}.stp"]
    started = time.monotonic()
    exit_code, output = container.exec_run(command, workdir="/work/build")
    seconds = time.monotonic() - started
    log = output.decode("utf-8", "replace")
    log_path.write_text("$ " + " ".join(command) + "\n" + log)
    built = workdir / "build" / f"{module}.ko"
    ok = exit_code == 0 and built.exists()
    outcome = None if ok else classify_compile_failure(log)
    detail = "" if ok else first_error_lines(log)
    if ok:
        shutil.move(str(built), target)

    entry.mkdir(parents=True, exist_ok=True)
    shutil.copy(log_path, entry / "compile.log")
    if ok:
        shutil.copy(target, entry / f"{module}.ko")
    record = {"ok": ok, "outcome": outcome.value if outcome else None, "detail": detail, "seconds": seconds}
    (entry / "result.json").write_text(json.dumps(record))
    return Compiled(script.name, ok, outcome, detail, seconds, False, log_path)


def compile_cell(image: str, scripts: tuple[TestScript, ...], kver: str, workdir: Path,
                 stap_image_id: str, kernel_image_id: str,
                 progress: Callable[[str], None] = logger.info) -> dict[str, Compiled]:
    """Compile every script; pack the ones that compiled, and the kernel, for the guest."""
    (workdir / "build").mkdir(parents=True, exist_ok=True)
    (workdir / "home").mkdir(exist_ok=True)
    results: dict[str, Compiled] = {}
    with cell_container(image, workdir) as container:
        for script in scripts:
            compiled = compile_script(container, script, kver, workdir, stap_image_id, kernel_image_id)
            results[script.name] = compiled
            verdict = "ok" if compiled.ok else compiled.outcome.value if compiled.outcome else "failed"
            progress(f"{kver}: {script.name}: {verdict} ({'cached' if compiled.cached else f'{compiled.seconds:.0f} s'})")
        lines = [
            f"{s.name} {module_name(s.name)} {s.timeout_s} {' '.join(s.run)}".rstrip()
            for s in scripts if results[s.name].ok
        ]
        (workdir / "list").write_text("".join(line + "\n" for line in lines))
        exit_code, output = container.exec_run(["sh", "/guest/mkinitramfs.sh", kver, "/work"])
        (workdir / "mkinitramfs.log").write_text(output.decode("utf-8", "replace"))
        if exit_code != 0:
            raise InfraError(f"packing the guest failed: {output.decode('utf-8', 'replace')[-800:]}")
    shutil.rmtree(workdir / "build", ignore_errors=True)
    shutil.rmtree(workdir / "home", ignore_errors=True)
    return results
