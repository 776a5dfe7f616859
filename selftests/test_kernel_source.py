"""Kernels from source, for real: Debian's linux-source-6.12 in a local git repository with a
"before" and an "after" commit (selftests/linux_source.py), built with a small config
(tinyconfig + what systemtap and the guest need), booted, and probed: the before-and-after
case end to end. Then the same source built by hand with make, as a kernel developer would,
used as a `path:` tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker.types
import pytest

from harness import docker_env, images, kconfig
from harness.cli import main
from harness.outcomes import Outcome, read_results
from selftests.linux_source import linux_source_repo

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("kernel-source")]

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = (ROOT / "tests/stap/begin_end.stp", ROOT / "tests/stap/kernel/marker.stp")


def test_before_and_after_a_kernel_change(deb_stap: str, tmp_path: Path) -> None:
    """Two rows, one repository at two refs: the probe on the function "after" adds fails in
    pass 2 before and fires after; begin_end passes on both kernels."""
    repo, before, after = linux_source_repo()
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "kernels:\n"
        f"  - {{git: {repo}, ref: before, name: before, config: [tinyconfig]}}\n"
        f"  - {{git: {repo}, ref: after, name: after, config: [tinyconfig]}}\n"
        f"stap: ['{deb_stap}']\n"
        f"tests: [{SCRIPTS[0]}, {SCRIPTS[1]}]\n"
    )
    env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(tmp_path / "artifacts"))
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", f"--matrix={matrix}", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    print(completed.stdout[-4000:], completed.stderr[-2000:])
    print(f"wall time {time.monotonic() - started:.0f} s")
    (run_dir,) = (tmp_path / "artifacts").glob("run-*")
    built = re.findall(r"built kernel linux-(\w+) .* in (\d+) s \((\d+) files compiled\)",
                       (run_dir / "progress.log").read_text())
    print("kernel builds (row, seconds, files):", built)
    results = {(r.kernel_name, r.test): r for r in read_results(run_dir)}
    assert results[("before", "begin_end")].outcome is Outcome.PASS
    assert results[("before", "marker")].outcome is Outcome.FAIL_PASS2
    assert "no match" in results[("before", "marker")].detail
    assert results[("after", "begin_end")].outcome is Outcome.PASS
    assert results[("after", "marker")].outcome is Outcome.PASS
    assert results[("before", "marker")].kernel_identity == f"commit {before}"
    assert results[("after", "marker")].kernel_identity == f"commit {after}"
    assert completed.returncode == 1  # the before row's marker fails, as it must


def _build_by_hand(workspace: Path) -> Path:
    """`make` in a clone of the repository, as a developer does (with ccache, in the kernel
    build image for its compilers), into an out-of-tree build directory. The directories sit
    at the same paths inside and outside the container, so the tree's `source` link works on
    the host, and under .../usr/src like the harness's own builds, so ccache finds them."""
    repo, _, after = linux_source_repo()
    source, out = workspace / "usr/src/linux", workspace / "usr/src/linux-build"
    subprocess.run(["git", "clone", "-q", "--shared", str(repo), str(source)], check=True)
    subprocess.run(["git", "-C", str(source), "checkout", "-q", after], check=True)
    out.mkdir(parents=True)
    for name in kconfig.REQUIRED_FRAGMENTS:  # what the README tells a developer to merge
        shutil.copy(kconfig.FRAGMENTS_DIR / name, workspace / name)
    fragments = " ".join(str(workspace / name) for name in kconfig.REQUIRED_FRAGMENTS)
    script = (f"set -e; cd {source}; make O={out} tinyconfig; "
              f"scripts/kconfig/merge_config.sh -m -O {out} {out}/.config {fragments}; "
              f"make O={out} olddefconfig; make O={out} -j$(nproc) CC='ccache gcc'")
    image = images.kernel_build_image(print)
    code, output = docker_env.run_to_completion(
        image, ["sh", "-c", script], what="building the kernel by hand", timeout_s=3600,
        log_path=workspace / "build.log",
        environment={"CCACHE_DIR": "/ccache", "CCACHE_BASEDIR": str(workspace / "usr/src"), "CCACHE_NOHASHDIR": "1"},
        mounts=[docker.types.Mount(str(workspace), str(workspace), type="bind"),
                docker.types.Mount(str(repo), str(repo), type="bind", read_only=True),
                docker.types.Mount("/ccache", str(images.cache_dir() / "ccache"), type="bind")])
    assert code == 0, output[-3000:]
    return out


def test_a_tree_built_by_hand_runs_a_cell(deb_stap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    out = _build_by_hand(tmp_path)
    print(f"built by hand in {time.monotonic() - started:.0f} s")
    json_path = tmp_path / "r.json"
    code = main(["run", "--kernel", f"path:{out}", "--stap", deb_stap, "--json", str(json_path), *map(str, SCRIPTS)])
    results = {r.test: r for r in read_results(json_path)}
    assert code == 0, {t: (r.outcome, r.detail) for t, r in results.items()}
    assert results["marker"].outcome is Outcome.PASS
    assert results["marker"].kernel_origin == "path"
    assert results["marker"].kernel_release == (out / "include/config/kernel.release").read_text().strip()
    shutil.rmtree(tmp_path / "usr", ignore_errors=True)
