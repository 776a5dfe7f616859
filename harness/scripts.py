"""Test scripts: a stap script plus a few directives written as comments.

    # stapmatrix: expect hello from begin        (a line that must appear in the output)
    # stapmatrix: expect-re ^read [0-9]+ bytes$  (a regular expression one output line must match)
    # stapmatrix: stap-arg -g                    (an extra stap option, one per directive)
    # stapmatrix: staprun-arg -vv                (an extra staprun option in the guest, one per directive)
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

DIRECTIVE_RE = re.compile(r"^\s*(?://|#|/\*)\s*stapmatrix:\s*(\S+)\s*(.*?)\s*(\*/)?\s*$")
# A comment that looks like a directive with a misspelt prefix ("stapmatrx:", "stap-matrix:"):
# silently ignoring it would drop an expectation, so it is an error.
# A missing colon ("// stapmatrix expect hi") is caught too, and block comments like the
# directive's own `/* stapmatrix: ... */` form.
NEAR_DIRECTIVE_RE = re.compile(r"^\s*(?://|#|/\*)\s*(stap[-_ ]?ma?t?r?i?x\w*\s*:?|sm\s*:)\s*"
                               r"(expect|expect-re|stap-arg|timeout|run)\b", re.IGNORECASE)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")
ARG_RE = re.compile(r"^[A-Za-z0-9_=.,/:+-]+$")
# Options the harness sets itself for every compile and run: a script may not change them.
# Also those that make stap print something instead of a module (-V, -l, -L, -h, --dump-*),
# and -e, whose script text would replace the script file.
RESERVED_STAP_OPTIONS = ("-r", "-p", "-m", "-o", "-c", "-x", "--remote", "--use-server", "--tmpdir",
                         "-V", "-l", "-L", "-h", "-e", "--help", "--version", "--dump-", "--list-servers",
                         "--clean-cache")
RESERVED_SHORT = "rpmocxVlLhe"
# stap's short options that take a value (its getopt string: hVvtp:I:e:E:o:R:r:a:m:kgPc:x:D:...):
# in a cluster such as `-vp2`, letters after one of these are its value, not options.
SHORT_WITH_VALUE = "pIeEoRramcxDsldLSBJGT"
DEFAULT_TIMEOUT_S = 60
KNOWN = ("expect", "expect-re", "stap-arg", "staprun-arg", "timeout", "run")
# staprun options a script may add (verbosity, buffer size, reader timeout); the others
# (-c, -o, -d, -L, -A, -x...) are how the guest runs a test.
STAPRUN_OPTIONS_RE = re.compile(r"^-(v{1,4}|b[0-9]{1,4}|T[0-9]{1,6}|w|u)$")


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
    staprun_args: tuple[str, ...] = ()

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


def _reserved_option(arg: str) -> str | None:
    """The reserved option `arg` sets, also inside a cluster of short options (`-vp2`)."""
    if arg.startswith("--"):
        # getopt_long also takes a unique abbreviation: `--rem=HOST` is --remote.
        name = arg.split("=", 1)[0]
        for option in RESERVED_STAP_OPTIONS:
            if option.startswith("--") and len(name) > 2 and (
                    option.startswith(name) or (option.endswith("-") and name.startswith(option))):
                return option
        return None
    if arg.startswith("-"):
        for letter in arg[1:]:
            if letter in RESERVED_SHORT:
                return "-" + letter
            if letter in SHORT_WITH_VALUE:
                return None  # the rest is this option's value
    return None


def check_stap_arg(arg: str, where: str) -> str:
    """An extra stap option: safe characters, and not one the harness sets itself."""
    _check_arg(arg, where)
    option = _reserved_option(arg)
    if option:
        raise MatrixError(f"{where}: stap option {arg!r} sets {option}, which stapmatrix reserves "
                          f"({', '.join(RESERVED_STAP_OPTIONS)}): the harness chooses the kernel, the pass, the "
                          "module name and output, and runs the module itself; options that print instead of "
                          "compiling leave no module to run")
    return arg


def _timeout(value: str, where: str) -> int:
    # str.isdigit() accepts other scripts' digits ("٣٠") and int() takes them: only ASCII here.
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= 3600:
        raise MatrixError(f"{where}: timeout {value!r} must be whole seconds between 1 and 3600, in ASCII digits")
    return int(value)


def _read_text(path: Path, where: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MatrixError(f"{where}: cannot read test script {path}: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MatrixError(f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x}); save the script as UTF-8") from None


def load_script(path: Path, extra_stap_args: tuple[str, ...] = (), timeout_s: int | None = None,
                where: str = "") -> TestScript:
    """Parse a script's directives; raises MatrixError naming the file and line."""
    where = where or str(path)
    try:
        path = Path(path).resolve()
    except (RuntimeError, OSError) as error:  # a symlink loop
        raise MatrixError(f"{where}: cannot resolve test script {path}: {error}") from None
    if not path.exists():
        raise MatrixError(f"{where}: test script {path} does not exist")
    if not path.is_file():
        raise MatrixError(f"{where}: test script {path} is not a regular file")
    if path.suffix != ".stp":
        raise MatrixError(f"{where}: test script {path} is not a .stp file; stapmatrix runs systemtap scripts")
    if path.stat().st_size > 1_000_000 or str(path).startswith(("/proc/", "/sys/", "/dev/")):
        raise MatrixError(f"{where}: {path} is not a test script (a special file, or over 1 MB)")
    name = path.stem
    if not NAME_RE.match(name):
        raise MatrixError(
            f"{path}: the file name {name!r} becomes the test name: use letters, digits, _ and -"
        )
    text = _read_text(path, where)
    expect: list[tuple[str, str]] = []
    stap_args: list[str] = []
    run: list[str] = []
    staprun_args: list[str] = []
    timeout = DEFAULT_TIMEOUT_S
    for number, line in enumerate(text.splitlines(), 1):
        match = DIRECTIVE_RE.match(line)
        where = f"{path}:{number}"
        if not match:
            near = NEAR_DIRECTIVE_RE.match(line)
            if near:
                raise MatrixError(f"{where}: {near.group(1)!r} looks like a misspelt 'stapmatrix:' directive prefix")
            continue
        key, value, _ = match.groups()
        if key == "expect":
            expect.append(("line", value))
        elif key == "expect-re":
            try:
                re.compile(value)
            except re.error as error:
                raise MatrixError(f"{where}: bad regular expression {value!r}: {error}") from None
            expect.append(("re", value))
        elif key == "stap-arg":
            stap_args.append(check_stap_arg(value, where))
        elif key == "staprun-arg":
            if not STAPRUN_OPTIONS_RE.match(value):
                raise MatrixError(f"{where}: staprun option {value!r} is not one a script may set "
                                  "(-v to -vvvv, -bN, -TN, -w, -u)")
            staprun_args.append(value)
        elif key == "timeout":
            timeout = _timeout(value, where)
        elif key == "run":
            try:
                words = shlex.split(value)
            except ValueError as error:
                raise MatrixError(f"{where}: run directive {value!r}: {error} (an unbalanced quote?)") from None
            if not words:
                raise MatrixError(f"{where}: run directive needs a command")
            run = [_check_arg(arg, where) for arg in words]
        else:
            raise MatrixError(f"{where}: unknown directive {key!r}; known: {', '.join(KNOWN)}")
    return TestScript(
        name=name,
        path=path,
        text=text,
        expect=tuple(expect),
        stap_args=tuple(stap_args) + tuple(check_stap_arg(a, "--stap-arg") for a in extra_stap_args),
        timeout_s=timeout if timeout_s is None else _timeout(str(timeout_s), "--timeout"),
        run=tuple(run),
        staprun_args=tuple(staprun_args),
    )
