"""`stapmatrix bisect` for real: a kernel history of 17 commits on Debian's linux-source-6.12
(selftests/linux_source.py) where one commit adds the function a probe needs and another does
not build, bisected with tinyconfig + systemtap's needs and the selftests' systemtap package;
and a systemtap history on top of release-5.5 (selftests/stap_history.py), bisected on the
selftests' Debian kernel when a systemtap repository is given (STAPMATRIX_SYSTEMTAP_SOURCE).
Every step is a real build and a real cell; the user's repository must come out untouched.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pytest

from harness import kernel_store, kernels
from harness.archive import Archive
from harness.cli import main
from harness.kconfig import parse_config_items
from harness.specs import parse_kernel_spec
from selftests.linux_source import BROKEN_COMMIT, HISTORY_LENGTH, MARKER_COMMIT, bisect_history
from selftests.stap_history import CHANGING_COMMIT, SOURCE_VARIABLE, stap_history, systemtap_source

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("kernel-source")]

ROOT = Path(__file__).resolve().parent.parent


def repository_state(repo: Path) -> dict[str, object]:
    """Everything of a repository bisect could change: HEAD, the index, every ref (loose and
    packed), bisect's state files, the work tree's status."""
    git_dir = repo / ".git"
    files = {str(p.relative_to(git_dir)): p.read_bytes() for p in (git_dir / "refs").rglob("*") if p.is_file()}
    for name in ("HEAD", "index", "packed-refs", "ORIG_HEAD", "FETCH_HEAD"):
        if (git_dir / name).exists():
            files[name] = (git_dir / name).read_bytes()
    bisect_files = sorted(p.name for p in git_dir.glob("BISECT_*"))
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain=v1", "--untracked-files=all"],
                            check=True, capture_output=True).stdout
    return {"files": files, "bisect": bisect_files, "status": status}


def print_steps(report: dict[str, object]) -> None:
    print("step  commit        role      outcome      build s  incremental  run s")
    for step in report["steps"]:  # type: ignore[attr-defined]
        build = "cached" if not step["built"] and step["outcome"] != "skip" else f"{step['build_seconds']:.0f}"
        print(f"{step['step']:<5} {step['commit'][:12]}  {step['role']:<9} {step['outcome']:<12} {build:>7}  "
              f"{'yes' if step['incremental'] else 'no':<11}  {step['run_seconds']:.0f}")
    print(f"builds {report['builds']}, total {report['seconds']:.0f} s")


def forget_built_kernels(repo: Path, commits: list[str], config_item: str) -> int:
    """Take this history's kernels out of the kernel store (and forget the broken commit's
    failed build), so every step of the bisection is built now, on the kept build directory."""
    config = parse_config_items([(config_item, "--kernel-config")], ROOT)
    archive = Archive()
    return sum(kernel_store.forget(kernels.resolve(parse_kernel_spec(f"git:{repo}@{commit}", "--kernel",
                                                                     config=config), "--kernel", archive).key)
               for commit in commits)


def test_kernel_bisect_names_the_commit_and_skips_the_one_that_does_not_build(deb_stap: str,
                                                                                tmp_path: Path) -> None:
    repo, commits = bisect_history()
    print(f"{forget_built_kernels(repo, commits, 'tinyconfig')} kernel(s) of this history forgotten by the store")
    before = repository_state(repo)
    json_path = tmp_path / "bisect.json"
    started = time.monotonic()
    code = main(["bisect", "--kernel", f"git:{repo}", "--good", commits[0], "--bad", "history", "--stap", deb_stap,
                 "--kernel-config", "tinyconfig", "--json", str(json_path),
                 str(ROOT / "tests/stap/kernel/marker.stp")])
    print(f"wall time {time.monotonic() - started:.0f} s")
    report = json.loads(json_path.read_text())
    print_steps(report)
    assert code == 0, report["stopped"]
    assert report["first_changed"]["commit"] == commits[MARKER_COMMIT]
    assert report["first_changed"]["subject"].startswith("kernel/sys.c: add stapmatrix_marker()")
    assert report["first_changed"]["outcome_before"] == "fail-pass2"
    assert report["first_changed"]["detail_before"]  # the real error line
    assert report["first_changed"]["outcome_after"] == "pass"
    assert report["target"] == "pass"
    assert report["skipped"] == [commits[BROKEN_COMMIT]]
    assert report["builds"] <= math.ceil(math.log2(HISTORY_LENGTH)) + 2
    # Every step but the skipped one built its kernel now; every build after the first is
    # incremental (the first one too when an earlier run left the build directory).
    built = [s for s in report["steps"] if s["outcome"] != "skip"]
    assert all(s["built"] for s in built), [s["commit"][:12] for s in built if not s["built"]]
    assert all(s["incremental"] for s in built[1:]), [s["commit"][:12] for s in built if not s["incremental"]]
    assert commits[MARKER_COMMIT] in report["reproduce"]["commit"]
    assert commits[MARKER_COMMIT - 1] in report["reproduce"]["parent"]
    assert repository_state(repo) == before, "bisect changed the user's repository"


def test_stap_bisect_names_the_tapset_commit(deb_kernel: str, tmp_path: Path) -> None:
    source = systemtap_source()
    if not source:
        pytest.skip(f"{SOURCE_VARIABLE} names no systemtap git repository (a directory) to build from")
    repo, commits = stap_history(source)
    before = repository_state(repo)
    json_path = tmp_path / "bisect.json"
    started = time.monotonic()
    code = main(["bisect", "--stap", f"git:{repo}", "--good", commits[0], "--bad", commits[-1], "--kernel",
                 deb_kernel, "--json", str(json_path), str(ROOT / "tests/stap/bisect/answer.stp")])
    print(f"wall time {time.monotonic() - started:.0f} s")
    report = json.loads(json_path.read_text())
    print_steps(report)
    assert code == 0, report["stopped"]
    assert report["first_changed"]["commit"] == commits[CHANGING_COMMIT]
    assert report["first_changed"]["outcome_before"] == "fail-output"
    assert report["first_changed"]["outcome_after"] == "pass"
    assert report["skipped"] == []
    assert repository_state(repo) == before, "bisect changed the user's repository"
