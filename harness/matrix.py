"""The matrix file: kernels x systemtap builds x test scripts, validated before any work starts.

Every value keeps the line it came from, so a later check (an unknown kernel, say) can still
name `matrix.yaml:LINE`. Values are checked against strict patterns here: nothing from the
matrix ever reaches a shell, but a value with shell metacharacters is a typo or worse, and
is refused with its line.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import yaml

from harness.errors import MatrixError
from harness.scripts import TestScript, load_script

T = TypeVar("T")

KERNEL_RE = re.compile(r"^[0-9]+\.[0-9]+[0-9A-Za-z.+~-]*-amd64$")
DEB_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+~:-]*$")
PATTERN_RE = re.compile(r"^[0-9A-Za-z.+~:*?_-]+$")
SHELL_METACHARACTERS = set(";&|$`<>()\\\"'{}[]!#\n\t ")
TOP_LEVEL_KEYS = ("kernels", "stap", "tests", "exclude", "xfail", "allow_splats")
RULE_KEYS = ("kernel", "stap", "test", "reason")


@dataclass(frozen=True)
class Located(Generic[T]):
    value: T
    line: int


@dataclass(frozen=True)
class StapSpec:
    """A systemtap build: `deb:VERSION` today; `git:` and `path:` sources come later."""

    kind: str
    value: str

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def label(self) -> str:
        """The short form used in test ids: `stap5.1-5`."""
        return f"stap{self.value}"


@dataclass(frozen=True)
class Rule:
    """An exclusion or a known failure: fnmatch patterns over kernel, stap spec and test name."""

    kernel: str
    stap: str
    test: str
    reason: str
    line: int

    def matches(self, kernel: str, stap: str, test: str) -> bool:
        return (
            fnmatch.fnmatchcase(kernel, self.kernel)
            and fnmatch.fnmatchcase(stap, self.stap)
            and fnmatch.fnmatchcase(test, self.test)
        )


@dataclass
class Matrix:
    path: Path
    kernels: list[Located[str]]
    staps: list[Located[StapSpec]]
    tests: list[TestScript]
    exclude: list[Rule] = field(default_factory=list)
    xfail: list[Rule] = field(default_factory=list)
    allow_splats: list[str] = field(default_factory=list)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def excluded(self, kernel: str, stap: str, test: str) -> Rule | None:
        return next((r for r in self.exclude if r.matches(kernel, stap, test)), None)

    def known_failure(self, kernel: str, stap: str, test: str) -> Rule | None:
        return next((r for r in self.xfail if r.matches(kernel, stap, test)), None)


def nearest(value: str, choices: list[str], n: int = 4) -> str:
    """A human hint: the closest valid values, or a few of them when none is close."""
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    return ", ".join(close or choices[:n])


def parse_stap_spec(text: str, where: str) -> StapSpec:
    kind, sep, value = text.partition(":")
    kind, value = kind.strip(), value.strip()
    if not sep or kind not in ("deb",):
        hint = "git: and path: sources are not supported yet" if kind in ("git", "path") else ""
        raise MatrixError(
            f"{where}: systemtap build {text!r} is not of the form deb:VERSION "
            f"(for example deb:5.1-5){'; ' + hint if hint else ''}"
        )
    check_value(value, DEB_VERSION_RE, where, "systemtap package version", "5.1-5")
    return StapSpec(kind, value)


def check_value(value: str, pattern: re.Pattern[str], where: str, what: str, example: str) -> None:
    bad = sorted(set(value) & SHELL_METACHARACTERS)
    if bad:
        raise MatrixError(
            f"{where}: {what} {value!r} contains {''.join(bad)!r}; matrix values are names, "
            f"never shell text (for example {example})"
        )
    if not pattern.match(value):
        raise MatrixError(f"{where}: {what} {value!r} is not valid (for example {example})")


def _scalar(node: yaml.Node, where: str, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
        raise MatrixError(f"{where}: {what} must be a non-empty string")
    return str(node.value).strip()


def _sequence(node: yaml.Node, path: Path, key: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        raise MatrixError(f"{path}:{node.start_mark.line + 1}: '{key}' must be a list")
    return list(node.value)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _parse_rule(node: yaml.Node, path: Path, key: str) -> Rule:
    where = f"{path}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        raise MatrixError(f"{where}: each '{key}' entry is a mapping with {', '.join(RULE_KEYS)}")
    values: dict[str, str] = {}
    for key_node, value_node in node.value:
        name = _scalar(key_node, where, "a key")
        if name not in RULE_KEYS:
            raise MatrixError(
                f"{path}:{_line(key_node)}: unknown key {name!r} in '{key}' "
                f"(did you mean {nearest(name, list(RULE_KEYS), 1)}?)"
            )
        values[name] = _scalar(value_node, f"{path}:{_line(value_node)}", name)
    if "reason" not in values:
        raise MatrixError(f"{where}: every '{key}' entry needs a reason")
    for name in ("kernel", "stap", "test"):
        check_value(values.get(name, "*"), PATTERN_RE, where, f"{key} pattern", "6.1.*")
    return Rule(
        values.get("kernel", "*"), values.get("stap", "*"), values.get("test", "*"),
        values["reason"], _line(node),
    )


def load_matrix(path: Path) -> Matrix:
    """Read and check a matrix file; raises MatrixError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise MatrixError(f"matrix file {path} does not exist")
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise MatrixError(f"{path}{line}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(root, yaml.MappingNode):
        raise MatrixError(f"{path}: the matrix must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")

    sections: dict[str, yaml.Node] = {}
    for key_node, value_node in root.value:
        key = _scalar(key_node, f"{path}:{_line(key_node)}", "a key")
        if key not in TOP_LEVEL_KEYS:
            raise MatrixError(
                f"{path}:{_line(key_node)}: unknown key {key!r} "
                f"(did you mean {nearest(key, list(TOP_LEVEL_KEYS), 1)}?)"
            )
        sections[key] = value_node
    for required in ("kernels", "stap", "tests"):
        if required not in sections:
            raise MatrixError(f"{path}: the matrix needs a '{required}' list")

    kernels = []
    for node in _sequence(sections["kernels"], path, "kernels"):
        where = f"{path}:{_line(node)}"
        value = _scalar(node, where, "a kernel")
        check_value(value, KERNEL_RE, where, "kernel ABI name", "6.12.117+deb13-amd64")
        kernels.append(Located(value, _line(node)))

    staps = []
    for node in _sequence(sections["stap"], path, "stap"):
        where = f"{path}:{_line(node)}"
        staps.append(Located(parse_stap_spec(_scalar(node, where, "a systemtap build"), where), _line(node)))

    tests = []
    for node in _sequence(sections["tests"], path, "tests"):
        where = f"{path}:{_line(node)}"
        script = (path.parent / _scalar(node, where, "a test script")).resolve()
        if not script.is_file():
            raise MatrixError(f"{where}: test script {script} does not exist")
        tests.append(load_script(script))

    for what, items in (("kernel", [k.value for k in kernels]), ("stap", [s.value.spec for s in staps]),
                        ("test", [t.name for t in tests])):
        duplicates = sorted({x for x in items if items.count(x) > 1})
        if duplicates:
            raise MatrixError(f"{path}: {what} listed twice: {', '.join(duplicates)}")

    matrix = Matrix(path, kernels, staps, tests)
    for key, target in (("exclude", matrix.exclude), ("xfail", matrix.xfail)):
        if key in sections:
            target.extend(_parse_rule(n, path, key) for n in _sequence(sections[key], path, key))
    if "allow_splats" in sections:
        for node in _sequence(sections["allow_splats"], path, "allow_splats"):
            pattern = _scalar(node, f"{path}:{_line(node)}", "a splat pattern")
            try:
                re.compile(pattern)
            except re.error as error:
                raise MatrixError(f"{path}:{_line(node)}: bad regular expression {pattern!r}: {error}") from None
            matrix.allow_splats.append(pattern)
    return matrix
