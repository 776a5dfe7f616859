"""End to end, for real: Debian's kernel and systemtap packages, Docker images, stap -p4,
QEMU boots (TCG here: nested KVM hangs on these machines and the probe says so).

These tests share one cell so that CI builds one kernel image and one systemtap image.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from docker.models.containers import Container

from harness import archive, docker_env, settings, suites
from harness.cli import main
from harness.errors import DockerUnavailableError
from harness.outcomes import Outcome, read_results
from selftests.cells import CellRun
from selftests.checkouts import failing_checkout, source_image_tag
from selftests.children import interruptible_cli

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("real-cell")]

ROOT = Path(__file__).resolve().parent.parent
STAP_DIR = ROOT / "tests" / "stap"


def test_crash_hang_and_pass_in_one_cell(run_cell: CellRun) -> None:
    """A panicking test, a hanging test, an oops, a kernel WARNING and normal tests in one
    cell: crash, timeout, crash, fail-load and pass, and the tests after a crash still run
    (the guest is booted again)."""
    code, results, seconds = run_cell(
        "faults", STAP_DIR / "begin_end.stp", STAP_DIR / "faults" / "crash.stp",
        STAP_DIR / "timer.stp", STAP_DIR / "faults" / "hang.stp", STAP_DIR / "faults" / "oops.stp",
        STAP_DIR / "faults" / "warn.stp",
    )
    print(json.dumps({t: (r.outcome.value, r.detail.splitlines()[:2]) for t, r in results.items()}, indent=1))
    print(f"wall time {seconds:.0f} s")
    assert code == 1
    assert results["begin_end"].outcome is Outcome.PASS
    assert results["crash"].outcome is Outcome.CRASH
    assert "Kernel panic - not syncing: stapmatrix: deliberate panic" in results["crash"].detail
    assert results["timer"].outcome is Outcome.PASS, "the test after a crash must still run"
    assert results["hang"].outcome is Outcome.TIMEOUT
    assert results["oops"].outcome is Outcome.CRASH
    assert "BUG: kernel NULL pointer dereference" in results["oops"].detail
    assert results["warn"].outcome is Outcome.FAIL_LOAD, "a WARNING fails the test even though staprun exited 0"
    assert "WARNING: CPU:" in results["warn"].detail and "deliberate warning" in results["warn"].detail
    assert Path(results["crash"].artifacts["console"]).read_text().count("deliberate panic") >= 1
    # hang: 10 s x3 under TCG plus kill; three boots of ~10 s; images and compiles cached or not.
    assert results["hang"].stages["run"].seconds < 300


def test_second_run_builds_and_compiles_nothing(run_cell: CellRun, tmp_path: Path) -> None:
    script = STAP_DIR / "begin_end.stp"
    run_cell("first", script)
    code, results, seconds = run_cell("second", script)
    result = results["begin_end"]
    assert code == 0 and result.outcome is Outcome.PASS
    assert result.stages["images"].cached and result.stages["compile"].cached
    assert result.stages["compile"].seconds == 0.0
    # The cell errs when the booted kernel's build-id is not its vmlinux's (harness/cell.py):
    # a pass says they matched, and the id is the GNU note's, not Xen's VIRT_BASE.
    assert re.fullmatch(r"[0-9a-f]{40}", result.guest_build_id), result.guest_build_id
    print(f"second run: {seconds:.0f} s, of which guest {result.stages['run'].seconds:.0f} s")


def test_pytest_front_end_runs_a_matrix(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    """The real pytest entry point on a one-cell matrix, with xdist and testinfra."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\n"
        f"tests: [{STAP_DIR / 'begin_end.stp'}, {STAP_DIR / 'faults' / 'hang.stp'}]\n"
        f"xfail:\n  - {{test: hang, reason: never exits on purpose}}\n"
    )
    junit = tmp_path / "junit.xml"
    env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(tmp_path / "artifacts"))
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", f"--matrix={matrix}", f"--junitxml={junit}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    print(completed.stdout[-3000:], completed.stderr[-2000:])
    assert completed.returncode == 0
    # xdist's loadgroup appends "@GROUP" to node ids; the readable id is what comes before.
    cases = {str(case.get("name")).split("@")[0]: case for case in ET.parse(junit).iter("testcase")}
    cell = f"{deb_kernel}-stap{deb_stap.split(':')[1]}"
    assert f"test_stap[{cell}-begin_end]" in cases
    assert cases[f"test_stap[{cell}-hang]"].find("skipped") is not None  # xfail
    assert cases[f"test_image[{cell}]"].find("failure") is None
    (results_json,) = (tmp_path / "artifacts").glob("run-*/results.json")
    outcomes = {r.test: r for r in read_results(results_json)}
    assert outcomes["hang"].outcome is Outcome.XFAIL and outcomes["hang"].actual == "timeout"


def _our_containers(pid: int | None = None) -> list[str]:
    """Containers of ours (of process `pid` only, when given: other runs may share the daemon)."""
    return [c.name for c in docker_env.client().containers.list(all=True, filters={"label": f"{docker_env.LABEL}=1"})
            if docker_env.OWNER_PID_LABEL in c.labels
            and (pid is None or c.labels[docker_env.OWNER_PID_LABEL] == str(pid))]


def test_ctrl_c_during_a_boot_leaves_nothing(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    process = subprocess.Popen(
        interruptible_cli("run", "--kernel", deb_kernel, "--stap", deb_stap,
                          "--json", str(tmp_path / "r.json"), str(STAP_DIR / "faults" / "hang.stp")),
        cwd=ROOT, env=dict(os.environ, STAPMATRIX_ARTIFACTS=str(tmp_path)),
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        guests = docker_env.client().containers.list(
            filters={"label": [f"{docker_env.ROLE_LABEL}=guest", f"{docker_env.OWNER_PID_LABEL}={process.pid}"]})
        if guests:
            break
        assert process.poll() is None, "the run ended before its guest booted"
        time.sleep(0.5)
    else:
        pytest.fail("no guest container appeared")
    qemu = _qemu_pids(guests[0], deadline)  # mid-boot: QEMU has started
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert _our_containers(process.pid) == []
    # This run's QEMU only: another xdist worker may be booting a guest of its own.
    assert [pid for pid in qemu if Path(f"/proc/{pid}").exists()] == [], f"QEMU still running: {qemu}"


def _qemu_pids(container: Container, deadline: float) -> list[int]:
    """The host PIDs of the QEMU processes in a guest container, once there is one."""
    while time.monotonic() < deadline:
        top = container.top(ps_args="-eo pid,args")
        pids = [int(row[0]) for row in top.get("Processes") or [] if "qemu-system" in row[1]]
        if pids:
            return pids
        time.sleep(0.5)
    pytest.fail("no QEMU process appeared in the guest container")


def test_containers_of_a_dead_run_are_reaped() -> None:
    """An xdist worker killed with SIGKILL runs no clean-up: the next run must."""
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    labels = dict(docker_env.container_labels("guest"), **{docker_env.OWNER_PID_LABEL: str(dead.pid)})
    images = docker_env.client().images.list(filters={"label": f"{docker_env.LABEL}=1"})
    container = docker_env.client().containers.run(images[0].id, ["sleep", "300"], detach=True,
                                                   network_mode="none", labels=labels)
    assert container.name in docker_env.remove_orphans()
    assert container.name not in _our_containers()


def test_docker_down_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    docker_env.client.cache_clear()
    try:
        with pytest.raises(DockerUnavailableError, match="dockerd"):
            docker_env.client()
    finally:
        docker_env.client.cache_clear()


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(503, "mirror down for this test")

    def log_message(self, *args: object) -> None:
        pass


def test_broken_download_is_an_error_and_tags_nothing(run_cell: CellRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mirror that answers 503 (on loopback): debootstrap fails, every test of the cell is
    `error` with the reason, and no image is tagged."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Plan from the indexes the earlier tests cached: they are keyed by their mirror's URL, so
    # copies are filed under the broken mirror's, in a cache of this test's own.
    settings.reset_mirrors()
    indexes = {suite.name: archive._index_paths(suite) for suite in suites.SUITES}
    monkeypatch.setenv("STAPMATRIX_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/debian")
    monkeypatch.setenv("STAPMATRIX_OFFLINE", "1")
    monkeypatch.setenv("STAPMATRIX_CACHE", str(tmp_path / "cache"))
    settings.reset_mirrors()
    for suite in suites.SUITES:
        for original, copy in zip(indexes[suite.name], archive._index_paths(suite), strict=True):
            if original.exists():  # the catalogue too: planning checks systemtap's dependencies
                shutil.copy(original, copy)
    tags_before = {t for i in docker_env.client().images.list() for t in i.tags}
    try:
        code, results, _ = run_cell("broken", STAP_DIR / "begin_end.stp")
    finally:
        server.shutdown()
        monkeypatch.undo()
        settings.reset_mirrors()  # later tests must not inherit the broken mirror
    assert code == 1
    assert results["begin_end"].outcome is Outcome.ERROR
    assert "debootstrap" in results["begin_end"].detail
    assert {t for i in docker_env.client().images.list() for t in i.tags} == tags_before


def test_failing_source_build_is_an_error_with_its_log(deb_kernel: str, tmp_path: Path) -> None:
    """A `path:` checkout whose configure fails: the column's tests are `error` with the end of
    the build log, the build is not retried (not a download problem) and nothing is tagged."""
    checkout = failing_checkout(tmp_path, "#!/bin/sh\necho 'configure: error: broken on purpose' >&2\nexit 1\n")
    json_path = tmp_path / "r.json"
    code = main(["run", "--kernel", deb_kernel, "--stap", f"path:{checkout}", "--json", str(json_path),
                 str(STAP_DIR / "begin_end.stp")])
    (result,) = read_results(json_path)
    assert code == 1 and result.outcome is Outcome.ERROR
    assert "configure: error: broken on purpose" in result.detail
    assert f"building systemtap path:{checkout}" in result.detail
    assert not docker_env.image_exists(source_image_tag(checkout))
    # The log keeps every build of this tree (same files, same key); this run's checkout path is its own.
    log = Path(result.detail.split("full log: ")[1].strip()).read_text()
    assert log.count(f"=== building systemtap path:{checkout} ") == 1, log[-2000:]
