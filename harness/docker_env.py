"""The Docker daemon: connecting with a useful error, labelling what we start, cleaning up.

Everything the harness creates (images, containers) carries the label `org.stapmatrix=1`;
containers also carry the pid and boot id of the process that started them, so a later run
can tell a container of a dead run (Ctrl-C, killed xdist worker) from one still in use and
remove only the former.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions
from docker.models.containers import Container

from harness.errors import DockerUnavailableError, InfraError

logger = logging.getLogger(__name__)

LABEL = "org.stapmatrix"
OWNER_PID_LABEL = "org.stapmatrix.pid"
OWNER_BOOT_LABEL = "org.stapmatrix.boot"
OWNER_HOST_LABEL = "org.stapmatrix.host"
ROLE_LABEL = "org.stapmatrix.role"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@cache
def host_identity() -> str:
    """This host and PID namespace: a pid means something only where it was taken. Another
    host or container sharing the daemon has other pids, and its runs are not ours to reap."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = os.uname().nodename
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "unknown"
    return f"{machine}/{namespace}"


def container_labels(role: str) -> dict[str, str]:
    return {LABEL: "1", ROLE_LABEL: role, OWNER_PID_LABEL: str(os.getpid()), OWNER_BOOT_LABEL: boot_id(),
            OWNER_HOST_LABEL: host_identity()}


@cache
def client() -> docker.DockerClient:
    """A connected client, or an error that says how to start the daemon."""
    try:
        connection = docker.from_env(timeout=900)
        connection.ping()
    except docker.errors.DockerException as error:
        raise DockerUnavailableError(
            f"no Docker daemon answers ({error}). Start one: `apt-get install docker.io` then "
            "`dockerd >/var/log/dockerd.log 2>&1 &` (or `./sm setup`, which does both), "
            "or point DOCKER_HOST at a running daemon."
        ) from None
    return connection


def daemon_answers() -> bool:
    try:
        return bool(client().ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


def image_exists(tag: str) -> bool:
    try:
        client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _owner_alive(labels: dict[str, str]) -> bool:
    """Whether the run that started a container with these labels may still be alive. Only
    containers of this host and PID namespace are judged: elsewhere, assume alive."""
    if labels.get(OWNER_HOST_LABEL) != host_identity():
        return True
    if labels.get(OWNER_BOOT_LABEL) != boot_id():
        return False
    try:
        os.kill(int(labels.get(OWNER_PID_LABEL, "0")), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def remove_orphans() -> list[str]:
    """Remove containers left by runs whose process is gone; returns their names."""
    removed = []
    # Filter on the owner label, not just LABEL: the classic builder's intermediate containers
    # inherit LABEL from our base image, and a concurrent build's must not be reaped.
    # The list call's own records, not containers.list(), which inspects each container in a
    # second request: a concurrent run's container removed in between made that raise NotFound.
    for summary in client().api.containers(all=True, filters={"label": [f"{LABEL}=1", OWNER_PID_LABEL]}):
        if not _owner_alive(summary.get("Labels") or {}):
            try:
                client().api.remove_container(summary["Id"], force=True)
                removed.append(str((summary.get("Names") or [summary["Id"][:12]])[0]).lstrip("/"))
            except docker.errors.NotFound:
                pass
    if removed:
        logger.warning("removed %d container(s) left by an interrupted run: %s", len(removed), ", ".join(removed))
    return removed


def remove_quietly(container: Container) -> None:
    """Remove a container in a `finally`: a failure here must not hide the error being raised.
    With the daemon out of reach it stays behind, and the next run's orphan clean-up removes it."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        logger.warning("could not remove container %s (%s); the next run removes it", container.name,
                       error.__class__.__name__)


_REMOVALS: list[threading.Thread] = []


def remove_in_background(container: Container) -> None:
    """Remove an exited container without waiting for it; `remove_own_containers` (at exit)
    waits for these and removes whatever is still there."""
    thread = threading.Thread(target=remove_quietly, args=(container,), name="stapmatrix-remove", daemon=True)
    thread.start()
    _REMOVALS.append(thread)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (pytest-timeout's kill, `kill PID`, a CI runner stopping) should unwind like
    Ctrl-C, so the `finally` blocks remove our containers; Python's default just dies."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def connected() -> bool:
    """Whether this process has connected to Docker (and so may have started containers)."""
    return client.cache_info().currsize > 0


def remove_own_containers() -> None:
    """At exit: remove what this process started and did not remove itself. A process that
    never connected started nothing, and must not wait on a daemon that may hang (Ctrl-C
    during `check`)."""
    if not connected():
        return
    for thread in _REMOVALS:
        thread.join(timeout=30)
    try:
        containers = client().containers.list(
            all=True, filters={"label": [f"{LABEL}=1", f"{OWNER_PID_LABEL}={os.getpid()}"]}
        )
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        return
    for container in containers:
        remove_quietly(container)


def start_container(image: str, command: list[str], **options: Any) -> Container:
    """A detached container of an image the daemon has. Unlike docker-py's containers.run, a
    missing image is not pulled implicitly (from whatever registry the daemon knows: images.py
    alone builds or pulls stapmatrix images, checked): it is one line naming the image."""
    try:
        container = client().containers.create(image, command, detach=True, **options)
    except docker.errors.ImageNotFound:
        raise InfraError(f"image {image} is gone from the Docker daemon: it was removed while this run went on "
                         "(`stapmatrix clean --images`, `docker image prune`, another run); run again and it is "
                         "made again") from None
    try:
        container.start()
    except BaseException:
        remove_quietly(container)
        raise
    return container


def run_to_completion(image: str, command: list[str], *, what: str, timeout_s: float, log_path: Path,
                      role: str = "build", network: str = "none", mounts: list[docker.types.Mount] | None = None,
                      volumes: dict[str, dict[str, str]] | None = None, environment: dict[str, str] | None = None,
                      on_line: Callable[[str], None] | None = None, workdir: str | None = None) -> tuple[int, str]:
    """Run a container to its end, streaming its output into `log_path` (and, line by line,
    to `on_line` when given); (exit code, output). A container that outlives `timeout_s`
    is killed and named in the error, so no step can hang a run silently."""
    container = start_container(
        image, command, network_mode=network, labels=container_labels(role),
        mounts=mounts or [], volumes=volumes or {}, environment=environment or {}, working_dir=workdir,
    )
    deadline = time.monotonic() + timeout_s
    output: list[str] = []
    try:
        watcher = threading.Thread(target=_kill_at, args=(container, deadline), daemon=True)
        watcher.start()
        with log_path.open("a") as log:
            for chunk in container.logs(stream=True, follow=True):
                text = chunk.decode("utf-8", "replace")
                log.write(text)
                log.flush()
                output.append(text)
                if on_line:
                    for line in text.splitlines():
                        on_line(line)
        status = container.wait(timeout=max(10.0, deadline - time.monotonic() + 10))
        if time.monotonic() >= deadline:
            raise InfraError(f"{what} did not finish within {timeout_s:.0f} s and was stopped; log: {log_path}")
        return int(status.get("StatusCode", 1)), "".join(output)
    except requests.exceptions.RequestException as error:
        raise InfraError(f"{what}: lost the connection to Docker ({error.__class__.__name__}); log: {log_path}") from None
    finally:
        remove_quietly(container)


def _kill_at(container: Container, deadline: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
        try:
            container.reload()
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return  # gone, or the daemon is: the main thread reports that
        if container.status != "running":
            return
    try:
        container.kill()
    except (docker.errors.APIError, requests.exceptions.RequestException):
        pass


# What the daemon gives as an exec's output, with exit code 126, when the container stopped
# between the exec's creation and its start (the run was stopped, the daemon restarted): the
# runtime's words, not the command's. Taken for the command's, a compile's "fail-pass2" was
# cached for good (examples whythefail and sizeof_interactive on 7.3-amd64, 2026-12-03).
RUNTIME_EXEC_FAILURES = (b"OCI runtime exec failed", b"cannot exec in a stopped")


def runtime_exec_failed(code: int, output: bytes | str) -> bool:
    """Whether an exec's (code, output) is the runtime refusing to start it."""
    head = (output.encode("utf-8", "replace") if isinstance(output, str) else output)[:200].lstrip()
    return code == 126 and head.startswith(RUNTIME_EXEC_FAILURES)


def _exec_refused(container: Container, what: str, reason: str) -> InfraError:
    return InfraError(f"{what}: container {container.name} could not run it ({reason}): "
                      "it stopped under the run (was the run stopped, or the daemon restarted?)")


def _raise_if_refused(container: Container, what: str, code: int, output: bytes) -> None:
    if runtime_exec_failed(code, output):
        raise _exec_refused(container, what, output.decode("utf-8", "replace").strip()[:200])


def exec_timed(container: Container, command: list[str], *, what: str, timeout_s: float, workdir: str | None = None,
               environment: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """`exec_run` under coreutils' timeout inside the container (docker's exec has no time
    limit of its own): (exit code, output, whether the limit stopped it)."""
    wrapped = ["timeout", "--kill-after=10", str(int(timeout_s)), *command]
    started = time.monotonic()
    try:
        code, output = container.exec_run(wrapped, workdir=workdir, environment=environment)
    except docker.errors.APIError as error:  # 409, the container is not running (an HTTPError: caught first)
        raise _exec_refused(container, what, str(error.explanation or error)[:200]) from None
    except requests.exceptions.RequestException as error:
        raise InfraError(f"{what}: lost the connection to Docker ({error.__class__.__name__})") from None
    _raise_if_refused(container, what, code, bytes(output))
    # 124 and 137 are also what a command says when it exits 124 or is killed (the OOM killer,
    # `kill -9`) well before the limit: only the clock tells a time limit from those.
    timed_out = code in (124, 137) and time.monotonic() - started >= timeout_s
    return int(code), bytes(output), timed_out


def exec_watched(container: Container, command: list[str], *, what: str, timeout_s: float, stop_when: Callable[[str], bool],
                 workdir: str | None = None, environment: dict[str, str] | None = None
                 ) -> tuple[int, bytes, str]:
    """`exec_timed`, reading the output as it comes: when `stop_when(output so far)` is true the
    command is stopped (SIGTERM to the `timeout` that runs it, which passes it on). (exit
    code, output, why it ended early: "timeout", "stopped" or "")."""
    wrapped = ["sh", "-c", 'echo $$ > /tmp/.stapmatrix-exec-$1; shift; exec "$@"', "sh", "%s",
               "timeout", "--kill-after=10", str(int(timeout_s)), *command]
    started = time.monotonic()
    api = container.client.api
    try:
        token = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        wrapped[4] = token
        exec_id = api.exec_create(container.id, wrapped, workdir=workdir, environment=environment)["Id"]
        chunks: list[bytes] = []
        stopped = False
        for chunk in api.exec_start(exec_id, stream=True):
            chunks.append(chunk)
            if not stopped and stop_when(b"".join(chunks[-64:]).decode("utf-8", "replace")):
                stopped = True
                container.exec_run(["sh", "-c", f'kill -TERM "$(cat /tmp/.stapmatrix-exec-{token})"'])
        code = api.exec_inspect(exec_id).get("ExitCode")
        container.exec_run(["rm", "-f", f"/tmp/.stapmatrix-exec-{token}"])
    except docker.errors.APIError as error:  # 409, the container is not running (an HTTPError: caught first)
        raise _exec_refused(container, what, str(error.explanation or error)[:200]) from None
    except requests.exceptions.RequestException as error:
        raise InfraError(f"{what}: lost the connection to Docker ({error.__class__.__name__})") from None
    exit_code, output = int(code if code is not None else 1), b"".join(chunks)
    _raise_if_refused(container, what, exit_code, output)
    timed_out = exit_code in (124, 137) and time.monotonic() - started >= timeout_s
    return exit_code, output, "stopped" if stopped else "timeout" if timed_out else ""


def exec_with_limit(container: Container, command: list[str], *, what: str, timeout_s: float,
                    workdir: str | None = None, environment: dict[str, str] | None = None) -> tuple[int, bytes]:
    """`exec_timed`, where running out of time is an error that names the step."""
    code, output, timed_out = exec_timed(container, command, what=what, timeout_s=timeout_s, workdir=workdir,
                                         environment=environment)
    if timed_out:
        raise InfraError(f"{what} did not finish within {timeout_s:.0f} s and was stopped")
    return code, output
