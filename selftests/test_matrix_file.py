"""matrix.yaml validation: real malformed files get errors naming file, line and a fix.

Planning errors are checked against recorded package indexes (selftests/data/indexes/, made
by selftests/record_indexes.py from the real archive on the date in its RECORDED file): what
they assert does not change when Debian's next point release or security update does. The
plan test at the end reads today's archive, choosing its kernels by series."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import kernels
from harness.archive import Archive
from harness.errors import MatrixError
from harness.kernel_build import KernelBuild
from harness.matrix import load_matrix
from harness.plan import make_plan
from selftests.archive_choice import newest_kernel, systemtap_of

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "probe begin { exit() }\n"
RECORDED = ROOT / "selftests" / "data" / "indexes"


def recorded() -> Archive:
    return Archive(recorded=RECORDED)


def matrix_text(kernels: str = "  - 6.12.117+deb13-amd64\n", stap: str = "  - deb:5.1-5\n",
                extra: str = "") -> str:
    return f"kernels:\n{kernels}stap:\n{stap}tests:\n  - hello.stp\n{extra}"


def error_of(write, text: str) -> str:  # type: ignore[no-untyped-def]
    write("hello.stp", SCRIPT)
    path = write("matrix.yaml", text)
    with pytest.raises(MatrixError) as caught:
        make_plan(load_matrix(path), recorded())
    return str(caught.value)


def test_default_matrix_is_valid() -> None:
    matrix = load_matrix(ROOT / "matrix.yaml")
    assert len(matrix.kernels) >= 2 and len(matrix.staps) >= 3 and len(matrix.tests) >= 5


def test_misspelled_key_names_line_and_suggestion(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(extra="exlude: []\n"))
    assert "matrix.yaml:7" in message and "'exlude'" in message and "exclude" in message


def test_yaml_syntax_error_names_line(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, "kernels:\n  - 6.1.0-50-amd64\nstap: [deb:5.1-5\ntests: []\n")
    assert "matrix.yaml:" in message and "not valid YAML" in message


def test_shell_metacharacters_are_refused(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(kernels="  - '6.1.0-50-amd64; rm -rf /'\n"))
    assert "matrix.yaml:2" in message and "never shell text" in message


def test_bad_stap_spec(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(stap="  - stap-5.1\n"))
    assert "matrix.yaml:4" in message and "deb:VERSION" in message


def test_missing_script_names_line(write) -> None:  # type: ignore[no-untyped-def]
    write("hello.stp", SCRIPT)
    path = write("matrix.yaml", matrix_text().replace("hello.stp", "nope.stp"))
    with pytest.raises(MatrixError, match=r"matrix.yaml:6: test script .*nope.stp does not exist"):
        load_matrix(path)


def test_unknown_kernel_names_the_newest_of_its_series(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(kernels="  - 6.12.999+deb13-amd64\n"))
    assert "matrix.yaml:2" in message and "6.12.999+deb13-amd64" in message
    assert "the newest 6.12+deb13 kernel is 6.12.118+deb13-amd64 (trixie-security)" in message


def test_a_kernel_that_left_the_archive_says_so(write) -> None:  # type: ignore[no-untyped-def]
    """Security updates replace each other: an old 6.1 ABI is gone, and the error names the
    newest 6.1 kernel (from bookworm-security), never a metapackage name."""
    message = error_of(write, matrix_text(kernels="  - 6.1.0-10-amd64\n"))
    assert "not in the archive any more" in message
    assert "the newest 6.1 kernel is 6.1.0-57-amd64 (bookworm-security)" in message


def test_suggestions_are_abi_names_only(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(kernels="  - 9.9-amd64\n"))
    suggested = [s.split()[0] for s in message.split("the archive has: ")[1].split(", ")]
    assert suggested and all(s[0].isdigit() for s in suggested), suggested


def test_unknown_stap_version_lists_available(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(stap="  - deb:5.2-1\n"))
    assert "matrix.yaml:4" in message and "deb:5.1-5 (trixie)" in message


def kernel_of(write, abi: str) -> KernelBuild:  # type: ignore[no-untyped-def]
    write("hello.stp", SCRIPT)
    matrix = load_matrix(write("matrix.yaml", matrix_text(kernels=f"  - {abi}\n")))
    return kernels.resolve(matrix.kernels[0].value, "matrix.yaml:2", recorded())


def test_a_kernel_whose_signed_image_lags_is_taken_unsigned(write) -> None:  # type: ignore[no-untyped-def]
    """bookworm-security on 2026-12-02: 6.12.118's -unsigned image, -dbg and headers, no
    signed image yet (signed builds lag their unsigned twins): the kernel is there."""
    kernel = kernel_of(write, "6.12.118+deb12-amd64")
    names = {p.split("=")[0] for p in kernel.packages}
    assert kernel.origin == "bookworm-security" and kernel.identity == "6.12.118-1~deb12u1 (bookworm-security)"
    assert "linux-image-6.12.118+deb12-amd64-unsigned" in names and "linux-image-6.12.118+deb12-amd64" not in names
    assert {"linux-headers-6.12.118+deb12-amd64", "linux-headers-6.12.118+deb12-common"} <= names
    assert kernel.dbg_package == "linux-image-6.12.118+deb12-amd64-dbg" and kernel.compilers == ("gcc-12",)
    # ...and one whose signed image is out takes that
    signed = {p.split("=")[0] for p in kernel_of(write, "6.12.117+deb12-amd64").packages}
    assert "linux-image-6.12.117+deb12-amd64" in signed and "linux-image-6.12.117+deb12-amd64-unsigned" not in signed


def test_the_7x_layout_from_a_recorded_index(write) -> None:  # type: ignore[no-untyped-def]
    """sid's 7.2: linux-image-ABI is a metapackage over linux-binary, -modules and -base."""
    kernel = kernel_of(write, "7.2.13+deb14-amd64")
    names = {p.split("=")[0] for p in kernel.packages}
    assert {"linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64", "linux-base-7.2.13+deb14-amd64",
            "linux-headers-7.2.13+deb14-amd64"} <= names
    assert kernel.origin == "sid" and kernel.base_suite == "sid" and kernel.compilers == ("gcc-16-for-host",)


def test_xfail_entry_needs_reason(write) -> None:  # type: ignore[no-untyped-def]
    message = error_of(write, matrix_text(extra="xfail:\n  - {kernel: '6.12.*'}\n"))
    assert "matrix.yaml:8" in message and "reason" in message


def test_rules_match_by_pattern(write) -> None:  # type: ignore[no-untyped-def]
    write("hello.stp", SCRIPT)
    path = write("matrix.yaml", matrix_text(extra="xfail:\n  - {kernel: '6.12.*', stap: 'deb:5.1*', reason: r}\n"))
    matrix = load_matrix(path)
    assert matrix.known_failure("6.12.117+deb13-amd64", "deb:5.1-5", "hello")
    assert matrix.known_failure(matrix.kernels[0].value, matrix.staps[0].value, "hello")
    assert not matrix.known_failure("6.1.0-50-amd64", "deb:5.1-5", "hello")


def test_plan_resolves_suites_layouts_and_bases(write) -> None:  # type: ignore[no-untyped-def]
    """bookworm's newest 6.1 (a security update), its 6.12 backport, sid's 7.2 and
    experimental's 7.3 release candidate, chosen from today's archive by series: each from a
    suite of its release, 7.x in the 7.x package layout, on a base that has gcc-16."""
    six_one, six_twelve = newest_kernel("6.1", "bookworm"), newest_kernel("6.12", "bookworm")
    seven_two, seven_three = newest_kernel("7.2", "sid"), newest_kernel("7.3", "sid")
    write("hello.stp", SCRIPT)
    path = write("matrix.yaml", matrix_text(
        kernels="".join(f"  - {k}\n" for k in (six_one, six_twelve, seven_two, seven_three)),
        stap=f"  - {systemtap_of('sid')}\n"))
    plan = make_plan(load_matrix(path), Archive())
    kernels = {k.spec.value: k for k in plan.kernels}
    assert kernels[six_one].origin in ("bookworm", "bookworm-security")
    assert kernels[six_one].compilers == ("gcc-12",)
    assert kernels[six_twelve].origin in ("bookworm-security", "bookworm-backports")
    assert kernels[seven_two].origin == "sid"
    seven = {p.split("=")[0] for p in kernels[seven_two].packages}
    assert {f"linux-binary-{seven_two}", f"linux-modules-{seven_two}", f"linux-base-{seven_two}",
            f"linux-headers-{seven_two}"} <= seven
    bases = {c.kernel.spec.value: (c.base_suite, c.base_reason) for c in plan.cells}
    assert bases[six_one][0] == "trixie" and bases[seven_three][0] == "sid"
    assert "gcc-16" in bases[seven_three][1]
