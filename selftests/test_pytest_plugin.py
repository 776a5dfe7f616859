"""The pytest front end as a user meets it: the plugin comes from the installed package's
entry point (no conftest.py), `--matrix FILE` works with a space and from any directory,
`--cell` picks exactly one cell, and a run of the project's own tests loads no matrix.

These plan real matrices (package indexes from the cache or the mirror) with --collect-only:
nothing is built or booted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import join_option_values, parser
from selftests.archive_choice import systemtap_of

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
BEGIN_END = ROOT / "tests" / "stap" / "begin_end.stp"
@pytest.fixture
def cells(deb_kernel: str) -> tuple[str, str]:
    """The ids of the two cells of `matrix`: sid's systemtap, then trixie's."""
    return (f"{deb_kernel}-stap{systemtap_of('sid').removeprefix('deb:')}",
            f"{deb_kernel}-stap{systemtap_of('trixie').removeprefix('deb:')}")


@pytest.fixture
def matrix(tmp_path: Path, deb_kernel: str) -> Path:
    """One kernel x two systemtap packages, in a directory of its own (not the repository)."""
    path = tmp_path / "elsewhere" / "my.yaml"
    path.parent.mkdir()
    path.write_text(f"kernels: [{deb_kernel}]\nstap: ['{systemtap_of('sid')}', '{systemtap_of('trixie')}']\n"
                    f"tests: [{BEGIN_END}]\n")
    return path


def collect(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(cwd / "artifacts"))
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def item_ids(completed: subprocess.CompletedProcess[str]) -> list[str]:
    """The test ids, without the file part (which depends on pytest's rootdir)."""
    return sorted(line.split("::", 1)[1] for line in completed.stdout.splitlines() if "::" in line)


def test_the_plugin_is_an_entry_point_not_a_conftest() -> None:
    """An installed stapmatrix needs no conftest.py: the plugin is a pytest11 entry point, and
    the repository's conftest.py holds the selftests' fixtures and no hook of the plugin."""
    assert "def pytest_" not in (ROOT / "conftest.py").read_text()
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "stapmatrix"]
    assert entry.value == "harness.pytest_plugin"


def test_matrix_with_a_space_from_another_directory(matrix: Path, cells: tuple[str, str], tmp_path: Path) -> None:
    """pytest reads a bare value as a test path when it looks for its rootdir (pytest issue
    #8846): the items must be the same either way."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    spaced = collect(elsewhere, "--matrix", str(matrix))
    joined = collect(elsewhere, f"--matrix={matrix}")
    print(spaced.stdout[-2000:], spaced.stderr[-2000:])
    assert spaced.returncode == 0 and joined.returncode == 0
    expected = sorted([f"test_image[{cells[0]}]", f"test_image[{cells[1]}]", f"test_stap[{cells[0]}-begin_end]",
                       f"test_stap[{cells[1]}-begin_end]"])
    assert [i for i in item_ids(spaced) if not i.startswith("test_testsuite")] == expected
    assert item_ids(spaced) == item_ids(joined)


def test_relative_matrix_path_is_the_callers(matrix: Path, cells: tuple[str, str]) -> None:
    completed = collect(matrix.parent, "--matrix", matrix.name)
    assert completed.returncode == 0, completed.stderr
    assert f"test_stap[{cells[0]}-begin_end]" in item_ids(completed)


def test_cell_selects_exactly_one_cell(matrix: Path, cells: tuple[str, str], tmp_path: Path) -> None:
    completed = collect(tmp_path, "--matrix", str(matrix), "--cell", cells[0])
    assert completed.returncode == 0, completed.stderr
    assert [i for i in item_ids(completed) if not i.startswith("test_testsuite")] == [
        f"test_image[{cells[0]}]", f"test_stap[{cells[0]}-begin_end]"]


def test_cell_is_not_a_pattern_and_its_error_lists_the_cells(matrix: Path, cells: tuple[str, str],
                                                             tmp_path: Path) -> None:
    completed = collect(tmp_path, "--matrix", str(matrix), "--cell", cells[0][:-2])
    assert completed.returncode == 4  # pytest's usage error
    assert f"its 2 cell(s): {cells[0]}, {cells[1]}" in completed.stderr


def test_the_projects_own_tests_load_no_matrix() -> None:
    completed = collect(ROOT, "selftests/test_outcomes.py")
    assert completed.returncode == 0, completed.stderr
    assert "matrix_items" not in completed.stdout and "stapmatrix:" not in completed.stdout


def test_plain_pytest_at_the_root_runs_matrix_yaml(tmp_path: Path) -> None:
    """`./sm matrix` is `pytest -n auto` at the repository root: testpaths name the items."""
    env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(tmp_path))
    completed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "harness/matrix_items.py::test_stap[6.1.0-50-amd64-stap4.8-2-begin_end]" in completed.stdout


def test_load_becomes_loadgroup_and_other_modes_are_refused(matrix: Path, pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell's items must share a worker: `-n N` alone means `--dist load`, which ignores
    xdist groups; it must become loadgroup even when pytest found no configuration saying so."""
    monkeypatch.setenv("STAPMATRIX_ARTIFACTS", str(pytester.path / "artifacts"))
    config = pytester.parseconfigure("--collect-only", "--dist", "load", "--matrix", str(matrix))
    assert config.option.dist == "loadgroup"
    with pytest.raises(pytest.UsageError, match="--dist each: matrix items need --dist loadgroup"):
        pytester.parseconfigure("--collect-only", "--dist", "each", "--matrix", str(matrix))


def test_stap_arg_takes_an_option_as_its_value() -> None:
    """`stapmatrix run --stap-arg -g` as the README writes it: argparse alone would take -g
    for an option of its own."""
    argv = ["run", "--kernel", "6.12.117+deb13-amd64", "--stap", "deb:5.6-1", "--stap-arg", "-g",
            "--stap-arg", "--suppress-time-limits", "a.stp"]
    args = parser().parse_args(join_option_values(argv))
    assert args.stap_arg == ["-g", "--suppress-time-limits"] and args.scripts == ["a.stp"]
