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
PATTERN_RE = re.compile(r"^[0-9A-Za-z.+~:*?_/@-]+$")
URL_RE = re.compile(r"^[A-Za-z0-9_./:@+~-]+$")
REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
SHELL_METACHARACTERS = set(";&|$`<>()\\\"'{}[]!#\n\t ")
TOP_LEVEL_KEYS = ("kernels", "stap", "tests", "testsuite", "exclude", "xfail", "allow_splats")
EXP_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?\.exp$")
RULE_KEYS = ("kernel", "stap", "test", "reason")


@dataclass(frozen=True)
class Located(Generic[T]):
    value: T
    line: int


@dataclass(frozen=True)
class StapSpec:
    """A systemtap build: `deb:VERSION`, `git:URL@REF` or `path:DIR`."""

    kind: str  # deb | git | path
    value: str  # the package version, the repository URL or the checkout directory
    ref: str = ""  # git only: a commit, tag or branch

    @property
    def spec(self) -> str:
        return f"git:{self.value}@{self.ref}" if self.kind == "git" else f"{self.kind}:{self.value}"

    @property
    def label(self) -> str:
        """The short form used in test ids: `stap5.1-5`, `stap-release-5.5`, `stap-path-NAME`."""
        if self.kind == "deb":
            return f"stap{self.value}"
        if self.kind == "git":
            return "stap-" + re.sub(r"[^A-Za-z0-9._-]+", "_", self.ref)[:40]
        return "stap-path-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.value).name)[:30]


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
    testsuite: list[str] = field(default_factory=list)  # systemtap testsuite .exp files (source builds)

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
    """`deb:VERSION`, `git:URL@REF` (URL a local repository or a remote one) or `path:DIR`."""
    kind, _, value = text.partition(":")
    kind, value = kind.strip(), value.strip()
    if kind == "deb":
        check_value(value, DEB_VERSION_RE, where, "systemtap package version", "5.1-5")
        return StapSpec(kind, value)
    if kind == "git" and "@" in value:
        url, _, ref = value.rpartition("@")
        return git_spec(url, ref, where)
    if kind == "path" and value:
        return path_spec(value, where)
    raise MatrixError(
        f"{where}: systemtap build {text!r} is not deb:VERSION (deb:5.1-5), git:URL@REF "
        "(git:https://sourceware.org/git/systemtap.git@release-5.5) or path:DIR"
    )


def git_spec(url: str, ref: str, where: str) -> StapSpec:
    check_value(url, URL_RE, where, "git URL", "https://sourceware.org/git/systemtap.git")
    check_value(ref, REF_RE, where, "git ref", "release-5.5")
    return StapSpec("git", url, ref)


def path_spec(directory: str, where: str) -> StapSpec:
    check_value(directory, URL_RE, where, "source directory", "/home/me/systemtap")
    path = Path(directory).expanduser().resolve()
    if not (path / "configure.ac").is_file():
        raise MatrixError(f"{where}: {path} is not a systemtap checkout (it has no configure.ac)")
    return StapSpec("path", str(path))


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


def _parse_stap_node(node: yaml.Node, path: Path) -> StapSpec:
    """`- deb:5.1-5`, `- {git: URL, ref: REF}` or `- {path: DIR}` (relative to the matrix)."""
    where = f"{path}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        return parse_stap_spec(_scalar(node, where, "a systemtap build"), where)
    values = {_scalar(k, where, "a key"): _scalar(v, where, "a value") for k, v in node.value}
    unknown = set(values) - {"git", "ref", "path"}
    if unknown:
        name = min(unknown)
        raise MatrixError(f"{where}: unknown key {name!r} in a systemtap build "
                          f"(did you mean {nearest(name, ['git', 'ref', 'path'], 1)}?)")
    if "git" in values:
        if "ref" not in values:
            raise MatrixError(f"{where}: a git systemtap build needs a ref: (a commit, tag or branch)")
        url = values["git"]
        if "://" not in url and not url.startswith("/"):
            url = str((path.parent / url).resolve())
        return git_spec(url, values["ref"], where)
    if "path" in values:
        checkout = Path(values["path"]).expanduser()
        return path_spec(str(checkout if checkout.is_absolute() else (path.parent / checkout).resolve()), where)
    raise MatrixError(f"{where}: a systemtap build mapping needs git: and ref:, or path:")


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
        staps.append(Located(_parse_stap_node(node, path), _line(node)))

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
    if "testsuite" in sections:
        for node in _sequence(sections["testsuite"], path, "testsuite"):
            where = f"{path}:{_line(node)}"
            name = _scalar(node, where, "a testsuite file")
            check_value(name, EXP_RE, where, "testsuite file", "environment_sanity.exp")
            matrix.testsuite.append(name)
    if "allow_splats" in sections:
        for node in _sequence(sections["allow_splats"], path, "allow_splats"):
            pattern = _scalar(node, f"{path}:{_line(node)}", "a splat pattern")
            try:
                re.compile(pattern)
            except re.error as error:
                raise MatrixError(f"{path}:{_line(node)}: bad regular expression {pattern!r}: {error}") from None
            matrix.allow_splats.append(pattern)
    return matrix
