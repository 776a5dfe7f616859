"""./sm's set-up on this machine, for real. GitHub's runners come with docker-ce running, and
installing docker.io over it breaks containerd: a Docker daemon that answers must be left as
it is, whatever installed it. Here the running daemon is Debian's docker.io, which is as close
to "another Docker, already installed and running" as this machine allows: `./sm setup` must
neither install Docker packages nor start or restart a daemon."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parent.parent
DOCKER_PACKAGES = ("docker-ce", "docker-ce-cli", "docker.io", "containerd", "containerd.io", "runc")


def dockerd_pids() -> list[str]:
    completed = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False)
    return sorted(completed.stdout.split())


def docker_packages() -> str:
    """Status and version of every Docker package dpkg knows (absent ones say so)."""
    completed = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status} ${Version}\n", *DOCKER_PACKAGES],
                               capture_output=True, text=True, check=False)
    return completed.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="./sm setup installs packages: run as root (CI does)")
def test_setup_leaves_a_running_docker_alone() -> None:
    pids, packages = dockerd_pids(), docker_packages()
    assert pids, "no dockerd runs here: ./sm test starts one before the tests"
    completed = subprocess.run([str(ROOT / "sm"), "setup"], capture_output=True, text=True, timeout=1200, check=False)
    print(completed.stderr[-3000:])
    assert completed.returncode == 0
    assert "docker" not in completed.stderr.lower(), "set-up touched Docker"
    assert dockerd_pids() == pids, "the daemon was restarted"
    assert docker_packages() == packages
