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
from functools import cache
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from harness.errors import DockerUnavailableError

logger = logging.getLogger(__name__)

LABEL = "org.stapmatrix"
OWNER_PID_LABEL = "org.stapmatrix.pid"
OWNER_BOOT_LABEL = "org.stapmatrix.boot"
ROLE_LABEL = "org.stapmatrix.role"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def container_labels(role: str) -> dict[str, str]:
    return {LABEL: "1", ROLE_LABEL: role, OWNER_PID_LABEL: str(os.getpid()), OWNER_BOOT_LABEL: boot_id()}


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


def image_exists(tag: str) -> bool:
    try:
        client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _owner_alive(container: Container) -> bool:
    labels = container.labels
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
    for container in client().containers.list(all=True, filters={"label": [f"{LABEL}=1", OWNER_PID_LABEL]}):
        if not _owner_alive(container):
            try:
                container.remove(force=True)
                removed.append(container.name)
            except docker.errors.NotFound:
                pass
    if removed:
        logger.warning("removed %d container(s) left by an interrupted run: %s", len(removed), ", ".join(removed))
    return removed


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (pytest-timeout's kill, `kill PID`, a CI runner stopping) should unwind like
    Ctrl-C, so the `finally` blocks remove our containers; Python's default just dies."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def remove_own_containers() -> None:
    """At exit: remove what this process started and did not remove itself."""
    try:
        containers = client().containers.list(
            all=True, filters={"label": [f"{LABEL}=1", f"{OWNER_PID_LABEL}={os.getpid()}"]}
        )
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        return
    for container in containers:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
