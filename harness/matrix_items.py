"""The matrix as pytest items (see harness/pytest_plugin.py for how they are generated).

test_stap[KERNEL-stapVERSION-SCRIPT]: one per cell and script; passes only on `pass`.
test_image[KERNEL-stapVERSION]: testinfra checks of the cell's image against its kernel.
test_example[CELL-examples/DIR/NAME:KIND]: one of systemtap's examples' test commands.
test_testsuite[CELL-FILE]: systemtap's own testsuite file, one subtest per DejaGnu line.

This module is inside the package, not in a tests/ directory, so that an installed stapmatrix
can run a matrix from anywhere: the plugin adds this file to pytest's arguments when `--matrix`
or `--cell` is given (and the repository's `testpaths` name it, so plain `pytest` at the
repository root runs matrix.yaml). Its name does not match `test_*.py` on purpose: collecting
a directory never picks it up by accident (`pytest selftests` loads no matrix).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import testinfra

from harness import docker_env, kernel_store
from harness.errors import InfraError
from harness.outcomes import Outcome, Result
from harness.plan import Cell
from harness.pytest_plugin import MatrixSession
from harness.report.escape import terminal


def test_stap(stap_result: Result) -> None:
    # Details hold the guest's output: control characters shown escaped on pytest's terminal.
    detail = terminal(stap_result.detail)
    if stap_result.outcome is Outcome.FLAKY:
        # Neither a pass nor a failure of stap: shown, never silently retried into a pass.
        pytest.xfail(f"flaky: {detail}\nreproduce: {stap_result.reproduce}")
    if stap_result.outcome is Outcome.XFAIL:
        pytest.xfail(f"{stap_result.xfail_reason} (got {stap_result.actual}: {detail.splitlines()[0] if detail else ''})")
    if stap_result.outcome is Outcome.PASS and stap_result.detail:
        pytest.fail(detail, pytrace=False)  # a known failure that passed: strict xfail
    if stap_result.outcome is not Outcome.PASS:
        pytest.fail(
            f"{stap_result.outcome.value}: {detail}\n"
            f"artifacts: {stap_result.artifacts.get('dir')}\nreproduce: {stap_result.reproduce}",
            pytrace=False,
        )


@pytest.fixture
def cell_host(image_case: Cell, matrix_session: MatrixSession) -> Iterator[testinfra.host.Host]:
    """A testinfra host: a container of the cell's image with the kernel's tree mounted as in
    a compile, no network, removed afterwards."""
    results = matrix_session.cell_results(image_case)  # builds the images and boots the guest
    if all(r.outcome is Outcome.ERROR for r in results):
        pytest.fail(f"the cell did not build: {results[0].detail}", pytrace=False)
    tree = kernel_store.find(image_case.kernel.key)
    if tree is None:
        pytest.fail(f"kernel {image_case.kernel.spec.spec} is not in the kernel store", pytrace=False)
    container = docker_env.start_container(
        results[0].image, ["sleep", "infinity"], network_mode="none",
        labels=docker_env.container_labels("testinfra"), mounts=tree.mounts(),
    )
    try:
        yield testinfra.get_host(f"docker://{container.id}")
    finally:
        container.remove(force=True)


def test_image(image_case: Cell, cell_host: testinfra.host.Host, matrix_session: MatrixSession) -> None:
    """The kernel's files where stap looks for them, and the right systemtap."""
    results = matrix_session.cell_results(image_case)
    kver = results[0].kernel_release
    assert cell_host.file(f"/lib/modules/{kver}/build/Makefile").exists, "kernel headers missing"
    assert cell_host.file(f"/lib/modules/{kver}/build/.config").exists, "kernel .config missing"
    system_map = cell_host.file(f"/boot/System.map-{kver}")
    assert system_map.size > 1_000_000, f"System.map is {system_map.size} bytes: the placeholder, not the real one"
    vmlinux = f"/usr/lib/debug/boot/vmlinux-{kver}"
    sections = cell_host.check_output(f"readelf -S {vmlinux}")
    assert ".debug_info" in sections, f"{vmlinux} has no DWARF"
    notes = cell_host.check_output(f"readelf -n {vmlinux}")
    debug_build_id = next(line.split()[-1] for line in notes.splitlines() if "Build ID" in line)
    guest_build_id = results[0].guest_build_id
    if guest_build_id:
        assert debug_build_id == guest_build_id, "vmlinux debuginfo does not match the kernel that booted"
    else:
        pytest.fail("the guest reported no build-id (no module compiled, or it did not boot)", pytrace=False)
    version = cell_host.check_output("stap -V 2>&1")
    if image_case.stap.spec.kind == "deb":
        assert f"Debian version {image_case.stap.version}" in version, version
    else:  # source builds carry their commit (or tree hash) through configure --with-extra-version
        assert image_case.stap.version_label in version, version


def _judge_record(record: Result) -> None:
    """An example's or a DejaGnu line's outcome as pytest's: the same rules as test_stap."""
    if record.outcome is Outcome.ERROR:
        raise InfraError(f"{record.detail}\nreproduce: {record.reproduce}")
    if record.outcome is Outcome.SKIP:
        pytest.skip(record.detail)
    if record.outcome is Outcome.FLAKY:
        pytest.xfail(f"flaky: {record.detail}")
    if record.outcome is Outcome.XFAIL:
        pytest.xfail(f"{record.xfail_reason or record.detail} (got {record.actual})")
    if record.outcome is Outcome.PASS and record.detail:
        pytest.fail(record.detail, pytrace=False)  # a known failure that passed
    if record.outcome is not Outcome.PASS:
        where = record.artifacts.get("output") or record.artifacts.get("systemtap.log") or record.artifacts.get("dir")
        pytest.fail(f"{record.outcome.value}: {record.detail}\noutput: {where}\nreproduce: {record.reproduce}",
                    pytrace=False)


def test_example(example_case: tuple[Cell, str], matrix_session: MatrixSession) -> None:
    """One test_check or test_installcheck command of systemtap's examples."""
    cell, name = example_case
    (record,) = [r for r in matrix_session.cell_results(cell) if r.test == name]
    _judge_record(record)


def test_testsuite(testsuite_case: tuple[Cell, str], matrix_session: MatrixSession, subtests) -> None:  # type: ignore[no-untyped-def]
    """systemtap's own testsuite file against the guest: one subtest per DejaGnu line."""
    cell, exp = testsuite_case
    prefix = f"testsuite:{exp}"
    records = [r for r in matrix_session.cell_results(cell) if r.test == prefix or r.test.startswith(prefix + ":")]
    if not records:
        pytest.fail(f"{exp} produced no DejaGnu result: is it in this systemtap source?", pytrace=False)
    for record in records:
        with subtests.test(msg=record.test.removeprefix(prefix + ":") or exp):
            _judge_record(record)
