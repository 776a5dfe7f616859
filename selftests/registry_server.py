"""A real container registry for the selftests: Debian's docker-registry (distribution 2.8) on
a free loopback port, its storage in the test's temporary directory. Docker pushes to and
pulls from 127.0.0.0/8 over plain HTTP without any daemon configuration."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, storage in `directory`; yields its
    reference (127.0.0.1:PORT/stapmatrix) and stops it afterwards. RuntimeError when it is
    not installed or does not come up."""
    program = shutil.which("docker-registry")
    if program is None:
        raise FileNotFoundError("docker-registry is not installed: `apt-get install docker-registry` "
                                "(./sm test installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {directory}/data\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with (directory / "registry.log").open("w") as log:
        process = subprocess.Popen([program, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not come up: "
                                       + (directory / "registry.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}/stapmatrix"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def loopback_registry(tmp_path: Path) -> Iterator[str]:
    """A real registry for one test (its storage in tmp_path); its reference."""
    try:
        with serve(tmp_path / "registry") as reference:
            yield reference
    except FileNotFoundError as error:
        pytest.skip(str(error))
