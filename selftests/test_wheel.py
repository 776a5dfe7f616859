"""stapmatrix as a wheel: built from this checkout, installed into a fresh virtual environment
(not editable), and run from a directory outside the checkout. The Dockerfiles, the guest's
init, the config fragments and the report template must travel inside the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("real-cell")]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ("harness/dockerfiles/stap-deb.Dockerfile", "harness/dockerfiles/extract-kernel.sh",
                 "harness/dockerfiles/stapmatrix-target.c", "harness/guest/init", "harness/guest/mkinitramfs.sh",
                 "harness/kernel-config/systemtap.config", "harness/templates/report.html.j2",
                 "harness/report/html.py")


def _run(command: list[str], cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH is dropped: the installed package must be found, not this checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"$ {' '.join(command)}\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh virtual environment holding the wheel built from here."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building must not leave build/ or *.egg-info in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "artifacts", "bench", "__pycache__",
                                                                "*.egg-info", "build"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                  str(work / "dist"), str(source)], work)
    assert built.returncode == 0
    (wheel,) = (work / "dist").glob("stapmatrix-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_FILES) <= names, sorted(set(PACKAGE_FILES) - names)
    assert not any(name.startswith(("selftests/", "images/")) for name in names)
    venv = work / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], work).returncode == 0
    assert _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                work).returncode == 0
    return venv / "bin"


def test_installed_wheel_checks_and_runs_a_cell_from_elsewhere(installed: Path, tmp_path: Path, deb_kernel: str,
                                                               deb_stap: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(installed / "python"), "-c", "import harness.files as f; print(f.DOCKERFILES_DIR)"], elsewhere)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout
    shutil.copy(ROOT / "tests" / "stap" / "begin_end.stp", elsewhere / "begin_end.stp")
    (elsewhere / "m.yaml").write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [begin_end.stp]\n")
    check = _run([str(installed / "stapmatrix"), "check", "--matrix", "m.yaml"], elsewhere)
    assert check.returncode == 0 and f"cell {deb_kernel}-stap" in check.stdout
    run = _run([str(installed / "stapmatrix"), "run", "--kernel", deb_kernel, "--stap", deb_stap, "--json", "r.json",
                "begin_end.stp"], elsewhere)
    assert run.returncode == 0
    (record,) = json.loads((elsewhere / "r.json").read_text())
    assert (record["test"], record["outcome"]) == ("begin_end", "pass")
    assert (elsewhere / "artifacts").is_dir(), "the run directory goes where the user is"
