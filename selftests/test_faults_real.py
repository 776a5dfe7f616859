"""Infrastructure faults, for real: real processes, real containers, a real tmpfs, real
sockets and servers on loopback, real files damaged in place. Nothing of the part under test
is mocked. The tests that need the images of test_real.py (the selftests' kernel and
systemtap, conftest.py) share its xdist group, so one worker builds them.
"""

from __future__ import annotations

import functools
import http.server
import lzma
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import docker
import pytest
from docker.models.containers import Container

from harness import (
    archive,
    cache,
    docker_env,
    gitrepo,
    guest,
    images,
    kernels,
    modules,
    settings,
    stap_git,
    staps,
    suites,
)
from harness.archive import Archive
from harness.cell import CellImages, _pack_stapsh
from harness.cli import main
from harness.errors import InfraError
from harness.outcomes import Outcome, read_results
from harness.plan import make_cell
from harness.scripts import load_script
from harness.specs import parse_kernel_spec, parse_stap_spec
from harness.stapsh_guest import StapshGuest
from selftests.checkouts import failing_checkout, source_image_tag
from selftests.children import interruptible_cli

pytestmark = [pytest.mark.real]
CELL = pytest.mark.xdist_group("real-cell")

ROOT = Path(__file__).resolve().parent.parent
STAP_DIR = ROOT / "tests" / "stap"


# --- isolation: source builds run configure and make without network ------------------------

CONFIGURE_PROBE = """#!/usr/bin/env python3
# Tries to reach the Debian mirror the dependencies came from, says whether it could, fails.
import sys, urllib.request
try:
    urllib.request.urlopen("{url}", timeout=10)
    print("configure: network: reached the mirror")
except Exception as error:
    print("configure: network: unreachable (" + type(error).__name__ + ")")
print("configure: error: broken on purpose", file=sys.stderr)
sys.exit(1)
"""


@CELL
def test_source_build_runs_configure_without_network(deb_kernel: str, tmp_path: Path) -> None:
    """The host reaches the mirror (the dependencies step downloads from it); configure, in
    the source build step, cannot."""
    settings.reset_mirrors()
    url = settings.mirror_url() + "/dists/sid/InRelease"
    urllib.request.urlopen(url, timeout=30).close()  # the host can: what follows is the build's isolation
    checkout = failing_checkout(tmp_path, CONFIGURE_PROBE.format(url=url))
    json_path = tmp_path / "r.json"
    code = main(["run", "--kernel", deb_kernel, "--stap", f"path:{checkout}", "--json", str(json_path),
                 str(STAP_DIR / "begin_end.stp")])
    (result,) = read_results(json_path)
    assert code == 1 and result.outcome is Outcome.ERROR
    log = Path(result.detail.split("full log: ")[1].strip()).read_text()
    assert "configure: network: unreachable (URLError)" in log, log[-2000:]
    # The log keeps every build of this tree; this run's checkout path is its own.
    assert "(network: none;" in log and log.count(f"=== building systemtap path:{checkout} ") == 1
    assert not docker_env.image_exists(source_image_tag(checkout))


# --- shared: the cell of test_real.py, a tmpfs, a Docker socket proxy ------------------------

@pytest.fixture(scope="module")
def cell_images(deb_kernel: str, deb_stap: str) -> tuple[CellImages, str]:
    """The images and kernel tree of test_real.py's cell (built there, or here when missing),
    found through the developer's cache; and the systemtap image id."""
    archive = Archive()
    kernel = kernels.resolve(parse_kernel_spec(deb_kernel, "test"), "test", archive)
    stap = staps.resolve(parse_stap_spec(deb_stap, "test"), "test", archive)
    found = CellImages(make_cell(kernel, stap, ()), archive, print)
    return found, images.image_id(found.stap)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STAPMATRIX_CACHE", str(root))
    return root


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs: a disk that fills up."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _workdir(path: Path) -> Path:
    for sub in ("build", "home", "modules"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def _no_entries(cache_root: Path) -> bool:
    modules_dir = cache_root / "modules"
    return not modules_dir.exists() or not any(modules_dir.iterdir())


# --- a full disk ---------------------------------------------------------------------------------

def test_full_disk_keeps_the_old_entry_and_says_so(full_disk: Path) -> None:
    path = full_disk / "entry.json"
    cache.write_entry(path, {"v": 1})
    with pytest.raises(InfraError, match=r"cannot write the cache entry .*entry\.json: No space left on device; "
                                         r"the previous entry, if any, is unchanged"):
        cache.write_entry(path, {"v": 2, "blob": "x" * 200_000})
    assert cache.read_entry(path) == {"v": 1}
    assert [p.name for p in full_disk.iterdir()] == ["entry.json"]  # no temporary file left


def test_full_disk_while_storing_a_compile_result(full_disk: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A module too big for the cache: an error naming the cache, and no partial entry."""
    monkeypatch.setenv("STAPMATRIX_CACHE", str(full_disk))
    work = tmp_path / "work"
    work.mkdir()
    (work / "compile.log").write_text("$ stap -p4\n")
    (work / "sm_x.ko").write_bytes(os.urandom(200_000))
    entry = full_disk / "modules" / "0123456789abcdef01234567"
    with pytest.raises(InfraError, match=r"cannot store the compile result in .*: No space left on device"):
        modules._store(entry, "sm_x", work / "compile.log", work / "sm_x.ko",
                       {"ok": True, "outcome": None, "detail": "", "seconds": 1.0})
    assert list((full_disk / "modules").iterdir()) == []


def test_full_disk_while_fetching_an_index(deb_kernel: str, deb_stap: str, full_disk: Path) -> None:
    """`stapmatrix check` with its cache on a full disk: one line naming the entry and the fix."""
    matrix = full_disk.parent / "m.yaml"
    (full_disk.parent / "t.stp").write_text("probe begin { exit() }\n")
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [t.stp]\n")
    env = dict(os.environ, STAPMATRIX_CACHE=str(full_disk))
    env.pop("STAPMATRIX_OFFLINE", None)
    completed = subprocess.run([sys.executable, "-m", "harness.cli", "check", "--matrix", str(matrix)], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "cannot write the cache entry" in completed.stderr and "No space left on device" in completed.stderr
    assert "STAPMATRIX_CACHE" in completed.stderr and "Traceback" not in completed.stderr


@CELL
def test_full_disk_during_a_compile_is_an_error_not_a_verdict(cell_images: tuple[CellImages, str],
                                                             full_disk: Path, own_cache: Path) -> None:
    """stap cannot write its module (the cell's directory is the full disk): an InfraError
    that says why, and nothing cached, so the next run compiles again."""
    found, stap_id = cell_images
    workdir = _workdir(full_disk)
    script = load_script(STAP_DIR / "begin_end.stp")
    stap_cache = modules.stap_cache_dir(stap_id, found.kernel)
    with modules.cell_container(found.cell, workdir, found.kernel, stap_cache) as container, \
            pytest.raises(InfraError, match="outside the script .*No space left on device.*not cached"):
        modules.compile_script(lambda: container, script, found.kernel, workdir, stap_id)
    assert _no_entries(own_cache)


# --- a killed compile, a renamed script ---------------------------------------------------------

def _docker_exec(container: str, *command: str) -> int:
    return subprocess.run(["docker", "exec", container, *command], capture_output=True, check=False).returncode


# The images' busybox has no pgrep/pkill: find stap by its /proc comm; "kill" when told to.
FIND_STAP = 'for d in /proc/[0-9]*; do [ "$(cat $d/comm 2>/dev/null)" = stap ] && {} && exit 0; done; exit 1'


@CELL
def test_killed_compile_is_an_error_and_not_cached(cell_images: tuple[CellImages, str], tmp_path: Path,
                                                   own_cache: Path) -> None:
    """stap killed with SIGKILL mid-compile (as the OOM killer does): an error naming the kill,
    no cache entry; the next compile of the same script runs and its verdict is cached."""
    found, stap_id = cell_images
    workdir = _workdir(tmp_path / "work")
    script = load_script(STAP_DIR / "begin_end.stp")
    with modules.cell_container(found.cell, workdir, found.kernel, modules.stap_cache_dir(stap_id, found.kernel)) \
            as container:
        killed: list[int] = []

        def kill_stap() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and _docker_exec(container.id, "sh", "-c", FIND_STAP.format("true")):
                time.sleep(0.2)
            time.sleep(1.5)  # in the middle of its passes
            killed.append(_docker_exec(container.id, "sh", "-c", FIND_STAP.format("kill -9 ${d#/proc/}")))

        killer = threading.Thread(target=kill_stap)
        killer.start()
        with pytest.raises(InfraError, match=r"compiling begin_end failed for a reason outside the script "
                                             r"\(stap was killed \(SIGKILL"):
            modules.compile_script(lambda: container, script, found.kernel, workdir, stap_id)
        killer.join()
        assert killed == [0], "stap was not running to be killed"
        assert _no_entries(own_cache)
        again = modules.compile_script(lambda: container, script, found.kernel, workdir, stap_id)
        assert again.ok and not again.cached
        third = modules.compile_script(lambda: container, script, found.kernel, workdir, stap_id)
        assert third.ok and third.cached


@CELL
def test_renamed_script_compiles_under_its_own_name(cell_images: tuple[CellImages, str], tmp_path: Path,
                                                    own_cache: Path) -> None:
    """Issue 12's crash: the same text under another name found the old name's entry and
    then no sm_NEWNAME.ko. Through compile_cell, as a run does it, twice."""
    found, stap_id = cell_images
    original = tmp_path / "original.stp"
    shutil.copy(STAP_DIR / "begin_end.stp", original)
    first = modules.compile_cell(found.cell, (load_script(original),), found.kernel, tmp_path / "one", stap_id)
    assert first["original"].ok
    renamed = tmp_path / "renamed_copy.stp"
    original.rename(renamed)
    second = modules.compile_cell(found.cell, (load_script(renamed),), found.kernel, tmp_path / "two", stap_id)
    assert second["renamed_copy"].ok and not second["renamed_copy"].cached
    assert (tmp_path / "two" / "modules" / "sm_renamed_copy.ko").is_file()
    assert "sm_renamed_copy" in (tmp_path / "two" / "list").read_text()


# --- commands with a time limit ---------------------------------------------------------------------

@pytest.fixture
def sleeper(cell_images: tuple[CellImages, str]) -> Iterator[Container]:
    container = docker_env.start_container(cell_images[0].runner, ["sleep", "infinity"], network_mode="none",
                                           labels=docker_env.container_labels("test"))
    try:
        yield container
    finally:
        docker_env.remove_quietly(container)


@CELL
def test_exec_that_hangs_is_stopped_and_named(sleeper: Container) -> None:
    started = time.monotonic()
    with pytest.raises(InfraError, match="packing the guest's initramfs did not finish within 2 s and was stopped"):
        docker_env.exec_with_limit(sleeper, ["sleep", "60"], what="packing the guest's initramfs", timeout_s=2)
    assert time.monotonic() - started < 20


@CELL
def test_exec_exit_124_or_a_kill_is_not_a_time_limit(sleeper: Container) -> None:
    """Our own: exit 124 of the command itself, and SIGKILL (137), long before the limit."""
    assert docker_env.exec_with_limit(sleeper, ["sh", "-c", "exit 124"], what="x", timeout_s=60)[0] == 124
    assert docker_env.exec_with_limit(sleeper, ["sh", "-c", "kill -9 $$"], what="x", timeout_s=60)[0] == 137


@CELL
def test_exec_in_a_container_that_stopped_is_an_error_not_a_result(sleeper: Container) -> None:
    """A run stopped under its compiles: the daemon's refusal is no compile verdict."""
    sleeper.kill()
    for run in (docker_env.exec_timed, docker_env.exec_with_limit):
        with pytest.raises(InfraError, match=f"compiling x: container {sleeper.name} could not run it .*stopped under the run"):
            run(sleeper, ["true"], what="compiling x", timeout_s=60)
    with pytest.raises(InfraError, match="stopped under the run"):
        docker_env.exec_watched(sleeper, ["true"], what="compiling x", timeout_s=60, stop_when=lambda _: False)


@CELL
def test_container_over_its_time_limit_is_killed_and_named(cell_images: tuple[CellImages, str],
                                                           tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InfraError, match="the test step did not finish within 3 s and was stopped; log: "):
        docker_env.run_to_completion(cell_images[0].runner, ["sh", "-c", "echo started; sleep 120"],
                                     what="the test step", timeout_s=3, log_path=tmp_path / "log", role="test")
    assert time.monotonic() - started < 30
    assert (tmp_path / "log").read_text() == "started\n"
    assert not docker_env.client().containers.list(all=True, filters={
        "label": [f"{docker_env.ROLE_LABEL}=test", f"{docker_env.OWNER_PID_LABEL}={os.getpid()}"]})


@CELL
def test_an_image_removed_mid_run_is_named_and_never_pulled(cell_images: tuple[CellImages, str]) -> None:
    """docker-py's containers.run pulls a missing image by its name from the daemon's default
    registry; a runner image removed by another run once ended in a read timeout reported as
    "lost the connection to Docker". Now: at once, one line naming the image."""
    gone = f"stapmatrix/gone:test-{os.getpid()}"
    docker_env.client().images.get(cell_images[0].runner).tag(*gone.split(":"))
    docker_env.client().images.remove(gone)  # the name only: the runner keeps its own
    started = time.monotonic()
    with pytest.raises(InfraError) as raised:
        docker_env.start_container(gone, ["true"], network_mode="none", labels=docker_env.container_labels("test"))
    assert time.monotonic() - started < 10, "it tried a pull"
    assert str(raised.value).startswith(f"image {gone} is gone from the Docker daemon: ")
    assert "run again" in str(raised.value) and "\n" not in str(raised.value)
    assert docker_env.image_exists(cell_images[0].runner)


# --- a dropped Docker connection while a guest runs ---------------------------------------------

PROXY = r"""
import socket, sys, threading
listen, target = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX)
server.bind(listen)
server.listen(64)
print("ready", flush=True)

def pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for end in (source, sink):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

while True:
    client, _ = server.accept()
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
"""
DAEMON_SOCKET = "/var/run/docker.sock"


@pytest.fixture
def docker_via_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """DOCKER_HOST at a unix-socket proxy (a process of its own) in front of the daemon."""
    socket_path = tmp_path / "docker.sock"
    proxy = subprocess.Popen([sys.executable, "-c", PROXY, str(socket_path), DAEMON_SOCKET], stdout=subprocess.PIPE)
    assert proxy.stdout is not None and proxy.stdout.readline() == b"ready\n"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    docker_env.client.cache_clear()
    try:
        yield proxy
    finally:
        proxy.kill()
        proxy.wait()
        monkeypatch.undo()
        docker_env.client.cache_clear()
        for container in docker_env.client().containers.list(all=True, filters={"label": [
                f"{docker_env.ROLE_LABEL}=guest", f"{docker_env.OWNER_PID_LABEL}={os.getpid()}"]}):
            docker_env.remove_quietly(container)


def _hanging_guest_dir(tmp_path: Path) -> Path:
    """A guest whose QEMU blocks for good: its kernel is a FIFO nobody writes (a real QEMU,
    hung, at no CPU cost)."""
    guest_dir = tmp_path / "guest"
    guest_dir.mkdir()
    os.mkfifo(guest_dir / "vmlinuz")
    (guest_dir / "initramfs.cpio").write_bytes(b"")
    return guest_dir


def _boot_in_thread(runner: str, guest_dir: Path, limit_s: float) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def boot() -> None:
        try:
            outcome["finished"] = guest._boot(runner, guest_dir, "tcg", "", 1, limit_s)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=boot)
    thread.start()
    return thread, outcome


def _wait_for_guest_container() -> None:
    real = docker.DockerClient(base_url=f"unix://{DAEMON_SOCKET}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if real.containers.list(filters={"label": [f"{docker_env.ROLE_LABEL}=guest",
                                                   f"{docker_env.OWNER_PID_LABEL}={os.getpid()}"]}):
            return
        time.sleep(0.2)
    pytest.fail("the guest's container did not start")


@CELL
def test_dropped_docker_connection_is_not_a_guest_hang(cell_images: tuple[CellImages, str], tmp_path: Path,
                                                       docker_via_proxy: subprocess.Popen[bytes]) -> None:
    """The proxy is killed while `_boot` waits on the guest: an InfraError that says the
    connection was lost, not `False` (a hang, which would make the test a `timeout`)."""
    thread, outcome = _boot_in_thread(cell_images[0].runner, _hanging_guest_dir(tmp_path), 300)
    _wait_for_guest_container()
    time.sleep(1)
    docker_via_proxy.kill()
    thread.join(90)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, InfraError), outcome
    assert "lost the connection to Docker while the guest ran" in str(error)


@CELL
def test_a_guest_that_hangs_with_docker_answering_is_a_hang(cell_images: tuple[CellImages, str],
                                                            tmp_path: Path,
                                                            docker_via_proxy: subprocess.Popen[bytes]) -> None:
    """The contrast: the same guest through the same proxy, which stays up: a hang (False),
    and the container is gone."""
    thread, outcome = _boot_in_thread(cell_images[0].runner, _hanging_guest_dir(tmp_path), 3)
    thread.join(90)
    assert outcome == {"finished": False}
    assert not docker_env.client().containers.list(all=True, filters={"label": [
        f"{docker_env.ROLE_LABEL}=guest", f"{docker_env.OWNER_PID_LABEL}={os.getpid()}"]})


# --- orphan clean-up shares the daemon with other hosts -----------------------------------------

@CELL
def test_orphan_clean_up_removes_only_this_hosts_dead_runs(cell_images: tuple[CellImages, str]) -> None:
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "300"])
    ours = docker_env.container_labels("test")
    cases = {
        "dead run of this host": dict(ours, **{docker_env.OWNER_PID_LABEL: str(dead.pid)}),
        "dead pid, another host or pid namespace": dict(ours, **{docker_env.OWNER_PID_LABEL: str(dead.pid),
                                                                docker_env.OWNER_HOST_LABEL: "other-machine/pid:[1]"}),
        "live run of this host": dict(ours, **{docker_env.OWNER_PID_LABEL: str(alive.pid)}),
        "this pid, but before this host booted": dict(ours, **{docker_env.OWNER_BOOT_LABEL: "an-older-boot"}),
        "no owner (a build's intermediate container)": {docker_env.LABEL: "1"},
    }
    started = {name: docker_env.client().containers.run(cell_images[0].runner, ["sleep", "300"], detach=True,
                                                        network_mode="none", labels=labels)
               for name, labels in cases.items()}
    try:
        removed = set(docker_env.remove_orphans())
        gone = {name for name, container in started.items() if container.name in removed}
        assert gone == {"dead run of this host", "this pid, but before this host booted"}
    finally:
        alive.kill()
        for container in started.values():
            docker_env.remove_quietly(container)


# --- git ------------------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                                   GIT_COMMITTER_EMAIL="t@t")).stdout.strip()


@pytest.fixture
def systemtap_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "systemtap"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "configure.ac").write_text("AC_INIT([systemtap], [9.9])\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    _git(repo, "tag", "release-9.9")
    return repo


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check(deb_kernel: str, tmp_path: Path, stap: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    (tmp_path / "t.stp").write_text("probe begin { exit() }\n")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{stap}']\ntests: [t.stp]\n")
    return subprocess.run([sys.executable, "-m", "harness.cli", "check", "--matrix", str(matrix)], cwd=ROOT,
                          env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout, check=False)


def test_unreachable_git_server_says_so_and_hides_credentials(deb_kernel: str, tmp_path: Path, own_cache: Path) -> None:
    port = _closed_port()
    completed = _check(deb_kernel, tmp_path, f"git:http://builder:s3cret-token@127.0.0.1:{port}/systemtap.git@release-5.5",
                       dict(os.environ, STAPMATRIX_CACHE=str(own_cache)))
    said = completed.stdout + completed.stderr
    assert completed.returncode == 2, said
    assert f"cloning http://***@127.0.0.1:{port}/systemtap.git" in said
    assert "Failed to connect" in said or "Couldn't connect" in said or "Connection refused" in said
    assert "s3cret-token" not in said and "has no commit named" not in said and "Traceback" not in said


def test_credentials_never_printed_by_a_plan_that_works(deb_kernel: str, tmp_path: Path, own_cache: Path) -> None:
    """A real repository behind an HTTP server on loopback (git's dumb protocol), its URL with a
    user and a token: `check` and pytest print the plan and the markers, with the token masked."""
    bare = tmp_path / "srv" / "systemtap.git"
    bare.parent.mkdir()
    source = tmp_path / "src"
    source.mkdir()
    _git(source, "init", "-q", "-b", "main")
    (source / "configure.ac").write_text("AC_INIT([systemtap], [9.9])\n")
    _git(source, "add", ".")
    _git(source, "commit", "-q", "-m", "one")
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(bare)], check=True)
    _git(bare, "update-server-info")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(bare.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://builder:s3cret-token@127.0.0.1:{server.server_address[1]}/systemtap.git"
    env = dict(os.environ, STAPMATRIX_CACHE=str(own_cache), STAPMATRIX_ARTIFACTS=str(tmp_path / "a"))
    try:
        completed = _check(deb_kernel, tmp_path, f"git:{url}@main", env)
        markers = subprocess.run([sys.executable, "-m", "pytest", "--markers", f"--matrix={tmp_path / 'm.yaml'}"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.shutdown()
    said = completed.stdout + completed.stderr + markers.stdout + markers.stderr
    assert completed.returncode == 0 and markers.returncode == 0, said
    assert f"systemtap git:http://***@127.0.0.1:{server.server_address[1]}/systemtap.git@main: commit" in said
    assert "s3cret" not in said


class _Silent(socketserver.BaseRequestHandler):
    """A server that accepts and never answers: a hung git server, a hung Docker daemon."""

    def handle(self) -> None:
        time.sleep(600)


class _UnixSilent(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpSilent(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True


def test_hung_git_server_is_stopped_at_the_time_limit(tmp_path: Path) -> None:
    server = _TcpSilent(("127.0.0.1", 0), _Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(InfraError, match="cloning .*: git clone did not finish within 3 s"):
            gitrepo.run("clone", "--bare", "--quiet", f"http://127.0.0.1:{server.server_address[1]}/x.git",
                        str(tmp_path / "m"), what=f"cloning http://127.0.0.1:{server.server_address[1]}/x.git",
                        timeout_s=3)
    finally:
        server.shutdown()
    assert time.monotonic() - started < 15


def test_ctrl_c_during_check_does_not_wait_on_a_hung_docker(deb_kernel: str, tmp_path: Path, own_cache: Path) -> None:
    """`check` blocked in a git clone from a hung server, with DOCKER_HOST at a daemon that
    accepts and never answers: Ctrl-C ends it at once, without touching Docker."""
    git_server = _TcpSilent(("127.0.0.1", 0), _Silent)
    docker_server = _UnixSilent(str(tmp_path / "hung-docker.sock"), _Silent)
    for server in (git_server, docker_server):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "t.stp").write_text("probe begin { exit() }\n")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['git:http://127.0.0.1:{git_server.server_address[1]}/s.git@main']\n"
                      "tests: [t.stp]\n")
    env = dict(os.environ, STAPMATRIX_CACHE=str(own_cache), DOCKER_HOST=f"unix://{tmp_path}/hung-docker.sock")
    process = subprocess.Popen(interruptible_cli("check", "--matrix", str(matrix)), cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)  # planning reads the indexes, then git hangs on the server
        assert process.poll() is None
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130 and time.monotonic() - interrupted < 10
        assert "interrupted" in stderr and "Traceback" not in stderr
    finally:
        process.kill()
        git_server.shutdown()
        docker_server.shutdown()


def test_repository_owned_by_another_user(systemtap_repo: Path) -> None:
    """git refuses such a repository as of "dubious ownership"; stapmatrix reads it."""
    shutil.chown(systemtap_repo, "nobody")
    for path in systemtap_repo.rglob("*"):
        shutil.chown(path, "nobody")
    commit = stap_git.resolve_ref(str(systemtap_repo), "release-9.9", "m:1")
    names = subprocess.run(["tar", "-t"], input=stap_git.git_tarball(str(systemtap_repo), commit),
                           capture_output=True, check=True).stdout.decode().split()
    assert names == ["configure.ac"]


MIRROR_DAMAGE = ["objects removed", "HEAD garbage", "a ref to a commit it lacks", "an empty directory"]


@pytest.mark.parametrize("damage", MIRROR_DAMAGE)
def test_broken_mirror_is_cloned_again(systemtap_repo: Path, own_cache: Path, damage: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    url = f"file://{systemtap_repo}"  # a URL, so the harness keeps a mirror as for a remote
    commit = stap_git.resolve_ref(url, "main", "m:1")
    (mirror,) = (own_cache / "git").glob("*[!k]")  # the mirror, not its .lock
    if damage == "objects removed":
        shutil.rmtree(mirror / "objects")
    elif damage == "HEAD garbage":
        (mirror / "HEAD").write_text("garbage\n")
    elif damage == "a ref to a commit it lacks":
        (mirror / "packed-refs").unlink(missing_ok=True)
        (mirror / "refs" / "heads" / "main").write_text("1" * 40 + "\n")
    else:
        shutil.rmtree(mirror)
        mirror.mkdir()
    assert stap_git.resolve_ref(url, "main", "m:1") == commit
    assert any("cloning it again" in r.getMessage() for r in caplog.records)
    assert len(stap_git.git_tarball(url, commit)) > 0


def test_broken_mirror_of_a_server_out_of_reach(systemtap_repo: Path, own_cache: Path) -> None:
    """The repair needs the server: without it the error is git's own, and the mirror stays."""
    url = f"file://{systemtap_repo}"
    stap_git.resolve_ref(url, "main", "m:1")
    (mirror,) = (own_cache / "git").glob("*[!k]")
    (mirror / "HEAD").write_text("garbage\n")
    systemtap_repo.rename(systemtap_repo.with_name("moved"))
    with pytest.raises(InfraError, match=r"cloning file://.*: fatal: .*(does not appear|not exist|not a git)"):
        stap_git.resolve_ref(url, "main", "m:1")
    assert mirror.is_dir()


# --- the archive's signature and checksums ------------------------------------------------------

SIGNED_SUITE = "experimental"


@pytest.fixture(scope="module")
def real_inrelease() -> bytes:
    settings.reset_mirrors()
    return archive._get(f"{settings.mirror_url()}/dists/{SIGNED_SUITE}/InRelease", "a test")


def test_real_inrelease_verifies(real_inrelease: bytes) -> None:
    assert "SHA256:" in archive.verified_release(real_inrelease, "InRelease")


@pytest.mark.parametrize("tamper", ["a checksum", "a suite name", "the signature"])
def test_tampered_inrelease_is_refused(real_inrelease: bytes, tamper: str) -> None:
    text = real_inrelease.decode()
    if tamper == "a checksum":
        line = next(line for line in text.splitlines() if "main/binary-amd64/Packages.xz" in line and len(line) > 70)
        changed = text.replace(line, line[:5] + ("0" if line[5] != "0" else "1") + line[6:], 1)
    elif tamper == "a suite name":
        changed = text.replace(f"Suite: {SIGNED_SUITE}", "Suite: stable", 1)
    else:
        start = text.index("-----BEGIN PGP SIGNATURE-----")
        body = text.index("\n\n", start) + 2
        changed = text[:body] + ("A" if text[body] != "A" else "B") + text[body + 1:]
    assert changed != text
    with pytest.raises(InfraError, match="the signature does not verify with Debian's archive keyring"):
        archive.verified_release(changed.encode(), "InRelease")


def test_inrelease_signed_by_another_key_is_refused(real_inrelease: bytes, tmp_path: Path) -> None:
    """Our own: a well-formed signature by a key that is not Debian's."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "mallory@example.invalid", "ed25519",
                    "sign", "1d"], env=env, check=True, capture_output=True, timeout=120)
    body = real_inrelease.decode()
    body = body[body.index("\n\n") + 2 : body.index("-----BEGIN PGP SIGNATURE-----")]
    signed = subprocess.run(["gpg", "--batch", "--clearsign"], input=body.encode(), env=env, check=True,
                            capture_output=True, timeout=120).stdout
    with pytest.raises(InfraError, match="does not verify with Debian's archive keyring"):
        archive.verified_release(signed, "InRelease")


class _Mirror(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_index_that_does_not_match_the_signed_checksum_is_refused(real_inrelease: bytes,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  own_cache: Path) -> None:
    """A mirror on loopback serving the real, signed InRelease and a Packages.xz of its own."""
    _Mirror.files = {
        f"/debian/dists/{SIGNED_SUITE}/InRelease": real_inrelease,
        f"/debian/dists/{SIGNED_SUITE}/main/binary-amd64/Packages.xz":
            lzma.compress(b"Package: systemtap\nVersion: 99.0-1\nFilename: pool/evil.deb\n\n"),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STAPMATRIX_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/debian")
    settings.reset_mirrors()
    try:
        with pytest.raises(InfraError, match="Packages.xz does not match the SHA256 its signed InRelease lists"):
            archive._load_suite(suites.SUITE_BY_NAME[SIGNED_SUITE])
        assert not list((own_cache / "indexes").glob("*.json"))
    finally:
        server.shutdown()
        monkeypatch.undo()
        settings.reset_mirrors()


# --- pytest without xdist runs the matrix ---------------------------------------------------------

@CELL
def test_matrix_runs_under_p_no_xdist(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    """`-p no:xdist`: addopts' `--dist loadgroup` is accepted, the cell runs in this process."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [{STAP_DIR / 'begin_end.stp'}]\n")
    env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(tmp_path / "artifacts"))
    completed = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", f"--matrix={matrix}"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
    print(completed.stdout[-3000:], completed.stderr[-2000:])
    assert completed.returncode == 0 and "Traceback" not in completed.stdout + completed.stderr
    (results_json,) = (tmp_path / "artifacts").glob("run-*/results.json")
    assert [r.outcome for r in read_results(results_json)] == [Outcome.PASS]


# --- stap --remote interrupted, as DejaGnu does it ----------------------------------------------

INTERRUPTED_SCRIPT = 'probe begin { println("started") } probe end { println("end probe ran") }'


@CELL
def test_an_interrupted_stap_remote_gets_the_end_probes_output(cell_images: tuple[CellImages, str],
                                                                deb_stap: str, tmp_path: Path) -> None:
    """SIGINT to a running `stap --remote` (DejaGnu's `kill -INT`, lib/stap_run.exp): the end
    probe runs in the guest and its output reaches stap, as on stap's own machine. Through
    stapsh's own `quit` it was lost (stapsh.c: do_quit -> cleanup never reads staprun's pipes
    again); the relay turns stap's `quit` into a SIGINT for the guest's staprun. The same
    guest then serves a second stap at once (one stapsh per connection, after init's `ready`)."""
    found, _ = cell_images
    stap_path = staps.resolve(parse_stap_spec(deb_stap, "test"), "test", Archive()).stap_path
    guest_dir = _workdir(tmp_path / "guest")
    _pack_stapsh(found, guest_dir)
    stapsh = StapshGuest(found.runner, guest_dir, "interrupt", "tcg")
    stapsh.boot()
    relay = stapsh.relay
    environment = {**modules.tests_environment(stap_path, found.kernel), "STAPMATRIX_STAPSH": "/work/interrupt.sock"}
    # stap in the background; on "started", SIGINT to it alone (its process group would be
    # the shell's), then what stap printed and its exit status.
    shell = (f"cd /work/home; stap -e '{INTERRUPTED_SCRIPT}' > out 2> err & pid=$!; "
             "n=0; until grep -q started out || [ $n -gt 600 ]; do sleep 0.2; n=$((n + 1)); done; "
             "kill -INT $pid; wait $pid; echo \"status $?\" >> out; cat out err")
    try:
        with modules.cell_container(found.cell, guest_dir, found.kernel, None, environment,
                                    modules.TESTS_PATH) as container:
            code, output = docker_env.exec_with_limit(container, ["sh", "-c", shell], what="interrupted stap",
                                                      timeout_s=600)
            again, second = docker_env.exec_with_limit(
                container, ["stap", "-e", 'probe begin { println("second"); exit() }'], what="second stap",
                timeout_s=600)
    finally:
        stapsh.stop()
    text = output.decode(errors="replace")
    assert code == 0 and text.splitlines()[:3] == ["started", "end probe ran", "status 0"], text
    assert relay is not None and len(relay.interrupted) == 1  # the SIGINT went to staprun, not stapsh's quit
    assert again == 0 and second.decode().strip() == "second", second
