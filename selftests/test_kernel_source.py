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
from harness.elf import build_id
from harness.outcomes import Outcome, Result, read_results
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


def _in_build_image(workspace: Path, script: str, what: str) -> None:
    """`sh -c SCRIPT` in the kernel build image (for its compilers), with ccache, the
    workspace at its own path and the source repository read-only."""
    repo, _, _ = linux_source_repo()
    image = images.kernel_build_image(print)
    started = time.monotonic()
    code, output = docker_env.run_to_completion(
        image, ["sh", "-c", script], what=what, timeout_s=3600, log_path=workspace / "build.log",
        environment={"CCACHE_DIR": "/ccache", "CCACHE_BASEDIR": str(workspace / "usr/src"), "CCACHE_NOHASHDIR": "1"},
        mounts=[docker.types.Mount(str(workspace), str(workspace), type="bind"),
                docker.types.Mount(str(repo), str(repo), type="bind", read_only=True),
                docker.types.Mount("/ccache", str(images.cache_dir() / "ccache"), type="bind")])
    assert code == 0, output[-3000:]
    print(f"{what}: {time.monotonic() - started:.0f} s")


def _build_by_hand(workspace: Path, *extra_fragments: str) -> Path:
    """`make` in a clone of the repository, as a developer does (with ccache, in the kernel
    build image for its compilers), into an out-of-tree build directory. The directories sit
    at the same paths inside and outside the container, so the tree's `source` link works on
    the host, and under .../usr/src like the harness's own builds, so ccache finds them.
    `extra_fragments`: config fragment texts merged after the ones the README names."""
    repo, _, after = linux_source_repo()
    source, out = workspace / "usr/src/linux", workspace / "usr/src/linux-build"
    subprocess.run(["git", "clone", "-q", "--shared", str(repo), str(source)], check=True)
    subprocess.run(["git", "-C", str(source), "checkout", "-q", after], check=True)
    out.mkdir(parents=True)
    names = list(kconfig.REQUIRED_FRAGMENTS)
    for name in kconfig.REQUIRED_FRAGMENTS:  # what the README tells a developer to merge
        shutil.copy(kconfig.FRAGMENTS_DIR / name, workspace / name)
    for index, text in enumerate(extra_fragments):
        names.append(f"extra-{index}.config")
        (workspace / names[-1]).write_text(text)
    fragments = " ".join(str(workspace / name) for name in names)
    _in_build_image(workspace, f"set -e; cd {source}; make O={out} tinyconfig; "
                               f"scripts/kconfig/merge_config.sh -m -O {out} {out}/.config {fragments}; "
                               f"make O={out} olddefconfig; make O={out} -j$(nproc) CC='ccache gcc'",
                    "building the kernel by hand")
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


# Xen PV guest support, as Debian's config has it (a common start for a developer's tree is
# `cp /boot/config-$(uname -r) .config`): arch/x86/xen/xen-head.S then puts Xen's ELF notes,
# XEN_ELFNOTE_VIRT_BASE (type 3) among them, before the linker's GNU build-id.
XEN_FRAGMENT = """CONFIG_HYPERVISOR_GUEST=y
CONFIG_PARAVIRT=y
CONFIG_XEN=y
CONFIG_XEN_PV=y
"""
# Which build of stapmatrix_marker() (selftests/linux_source.py) the kernel carries: its
# parameter is `pid` as committed, `rebuilt_pid` after the edit below. @defined is decided
# from the DWARF of the vmlinux the module is compiled against.
REBUILT_SCRIPT = """// stapmatrix: run /bin/sh -c true
// stapmatrix: expect-re ^marker (original|rebuilt) [0-9]+$
probe kernel.function("stapmatrix_marker") {
	if (pid() == target()) {
		printf("marker %s %d\\n", @defined($rebuilt_pid) ? "rebuilt" : "original",
		       @defined($rebuilt_pid) ? $rebuilt_pid : $pid)
		exit()
	}
}
"""


def _first_type_3_note_owner(vmlinux: Path) -> str:
    notes = subprocess.run(["readelf", "-n", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    owners = re.findall(r"^\s+(\S+)\s+0x[0-9a-f]+\s+(?:NT_GNU_BUILD_ID|Unknown note type: \(0x00000003\))",
                        notes, re.MULTILINE)
    return owners[0] if owners else ""


def test_a_xen_tree_rebuilt_in_place_is_tested_as_the_new_kernel(deb_stap: str, tmp_path: Path) -> None:
    """A `path:` tree with Xen PV guest support, rebuilt in place after a change to a function
    nothing exports (same .config, same Module.symvers): the next run must compile against
    and boot the new kernel. A rebuild of vmlinux alone (its bzImage still the old build) is
    an error naming both build-ids, never a run of the old kernel taken for the new one."""
    out = _build_by_hand(tmp_path, XEN_FRAGMENT)
    source, vmlinux = tmp_path / "usr/src/linux", out / "vmlinux"
    assert kconfig.parse_config((out / ".config").read_text()).get("CONFIG_XEN_PV") == "y"
    assert _first_type_3_note_owner(vmlinux) == "Xen", "the tree must have the notes that hid its build-id"
    script = tmp_path / "rebuilt.stp"
    script.write_text(REBUILT_SCRIPT)

    def run(name: str) -> tuple[int, Result]:
        json_path = tmp_path / f"{name}.json"
        code = main(["run", "--kernel", f"path:{out}", "--stap", deb_stap, "--json", str(json_path), str(script)])
        (result,) = read_results(json_path)
        print(name, code, result.outcome.value, result.detail[:600])
        return code, result

    code, first = run("first")
    assert (code, first.outcome) == (0, Outcome.PASS), first.detail
    assert re.match(r"marker original \d+$", Path(first.artifacts["stdout"]).read_text())
    assert first.guest_build_id == build_id(vmlinux)

    sys_c = source / "kernel" / "sys.c"
    text = sys_c.read_text()
    marker = "noinline int stapmatrix_marker(int pid)\n{\n\treturn pid;\n}"
    assert marker in text
    sys_c.write_text(text.replace(marker, "noinline int stapmatrix_marker(int rebuilt_pid)\n{\n\treturn rebuilt_pid;\n}"))
    _in_build_image(tmp_path, f"set -e; make -C {source} O={out} -j$(nproc) CC='ccache gcc' vmlinux",
                    "rebuilding vmlinux alone")
    new_id = build_id(vmlinux)
    assert new_id and new_id != first.guest_build_id

    code, stale = run("stale-bzimage")
    assert (code, stale.outcome) == (1, Outcome.ERROR)
    assert f"booted a kernel with build-id {first.guest_build_id}" in stale.detail
    assert f"build-id {new_id}" in stale.detail

    _in_build_image(tmp_path, f"set -e; make -C {source} O={out} -j$(nproc) CC='ccache gcc'", "rebuilding the rest")
    final_id = build_id(vmlinux)  # the full make links vmlinux once more (seen here: another build-id again)
    code, rebuilt = run("rebuilt")
    assert (code, rebuilt.outcome) == (0, Outcome.PASS), rebuilt.detail
    assert re.match(r"marker rebuilt \d+$", Path(rebuilt.artifacts["stdout"]).read_text())
    assert rebuilt.guest_build_id == final_id != first.guest_build_id
    assert rebuilt.kernel_identity != first.kernel_identity
    shutil.rmtree(tmp_path / "usr", ignore_errors=True)
