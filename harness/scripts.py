"""Test scripts: a stap script plus a few directives written as comments.

    # stapmatrix: expect hello from begin        (a line that must appear in the output)
    # stapmatrix: expect-re ^read [0-9]+ bytes$  (a regular expression one output line must match)
    # stapmatrix: stap-arg -g                    (an extra stap option, one per directive)
    # stapmatrix: timeout 30                     (seconds the module may run in the guest)
    # stapmatrix: run /usr/local/bin/stapmatrix-target 3   (staprun -c: a command to trace)

Expectations must appear in order. A script without `expect` only has to load, run and exit 0.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.errors import MatrixError

DIRECTIVE_RE = re.compile(r"^\s*(?://|#)\s*stapmatrix:\s*(\S+)\s*(.*?)\s*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")
ARG_RE = re.compile(r"^[A-Za-z0-9_=.,/:+-]+$")
DEFAULT_TIMEOUT_S = 60
KNOWN = ("expect", "expect-re", "stap-arg", "timeout", "run")


@dataclass(frozen=True)
class TestScript:
    __test__ = False  # not a pytest class
    name: str
    path: Path
    text: str
    expect: tuple[tuple[str, str], ...] = ()  # ("line" | "re", text), in order
    stap_args: tuple[str, ...] = ()
    timeout_s: int = DEFAULT_TIMEOUT_S
    run: tuple[str, ...] = ()

    def output_problem(self, output: str) -> str | None:
        """None when the output meets every expectation, else what is missing."""
        lines = output.splitlines()
        position = 0
        for kind, wanted in self.expect:
            for index in range(position, len(lines)):
                line = lines[index]
                if (kind == "line" and line.strip() == wanted) or (kind == "re" and re.search(wanted, line)):
                    position = index + 1
                    break
            else:
                what = "a line" if kind == "line" else "a line matching"
                return f"expected {what} {wanted!r} in the output (after line {position})"
        return None


def _check_arg(arg: str, where: str) -> str:
    if not ARG_RE.match(arg):
        raise MatrixError(f"{where}: argument {arg!r} may only hold letters, digits and _=.,/:+-")
    return arg


def load_script(path: Path, extra_stap_args: tuple[str, ...] = (), timeout_s: int | None = None) -> TestScript:
    """Parse a script's directives; raises MatrixError naming the file and line."""
    path = Path(path).resolve()
    if not path.is_file():
        raise MatrixError(f"test script {path} does not exist")
    name = path.stem
    if not NAME_RE.match(name):
        raise MatrixError(
            f"{path}: the file name {name!r} becomes the test name: use letters, digits, _ and -"
        )
    text = path.read_text()
    expect: list[tuple[str, str]] = []
    stap_args: list[str] = []
    run: list[str] = []
    timeout = DEFAULT_TIMEOUT_S
    for number, line in enumerate(text.splitlines(), 1):
        match = DIRECTIVE_RE.match(line)
        if not match:
            continue
        key, value = match.groups()
        where = f"{path}:{number}"
        if key == "expect":
            expect.append(("line", value))
        elif key == "expect-re":
            try:
                re.compile(value)
            except re.error as error:
                raise MatrixError(f"{where}: bad regular expression {value!r}: {error}") from None
            expect.append(("re", value))
        elif key == "stap-arg":
            stap_args.append(_check_arg(value, where))
        elif key == "timeout":
            if not value.isdigit() or not 1 <= int(value) <= 3600:
                raise MatrixError(f"{where}: timeout {value!r} must be whole seconds between 1 and 3600")
            timeout = int(value)
        elif key == "run":
            run = [_check_arg(arg, where) for arg in shlex.split(value)]
        else:
            raise MatrixError(f"{where}: unknown directive {key!r}; known: {', '.join(KNOWN)}")
    return TestScript(
        name=name,
        path=path,
        text=text,
        expect=tuple(expect),
        stap_args=tuple(stap_args) + tuple(_check_arg(a, "--stap-arg") for a in extra_stap_args),
        timeout_s=timeout_s or timeout,
        run=tuple(run),
    )
