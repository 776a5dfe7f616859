"""Script directives and output expectations."""

from __future__ import annotations

import pytest

from harness.errors import MatrixError
from harness.scripts import load_script


def test_directives(write) -> None:  # type: ignore[no-untyped-def]
    path = write("probe_one.stp", "// stapmatrix: expect hello\n# stapmatrix: expect-re ^n=[0-9]+$\n"
                 "// stapmatrix: stap-arg -g\n// stapmatrix: timeout 7\n// stapmatrix: run /bin/true 3\n")
    script = load_script(path)
    assert script.name == "probe_one" and script.stap_args == ("-g",) and script.timeout_s == 7
    assert script.run == ("/bin/true", "3")
    assert script.output_problem("x\nhello\nn=12\n") is None
    assert "n=" in (script.output_problem("n=12\nhello\n") or "")  # order matters


def test_unknown_directive(write) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MatrixError, match=r"x.stp:1: unknown directive 'expext'"):
        load_script(write("x.stp", "// stapmatrix: expext hi\n"))


def test_shell_in_run_directive(write) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MatrixError, match="may only hold"):
        load_script(write("x.stp", "// stapmatrix: run /bin/sh -c 'rm -rf /;'\n"))


def test_bad_name(write) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MatrixError, match="becomes the test name"):
        load_script(write("bad name.stp", "probe begin {}\n"))
