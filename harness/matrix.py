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
from harness.gitrepo import mask
from harness.scripts import TestScript, load_script

T = TypeVar("T")

KERNEL_RE = re.compile(r"^[0-9]+\.[0-9]+[0-9A-Za-z.+~-]*-amd64$")
DEB_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+~:-]*$")
PATTERN_RE = re.compile(r"^[0-9A-Za-z.+~:*?_/@-]+$")
URL_RE = re.compile(r"^[A-Za-z0-9_./:@+~-]+$")
REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
SHELL_METACHARACTERS = set(";&|$`<>()\\\"'{}[]!#\n\t ")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:-]{0,63}$")
TOP_LEVEL_KEYS = ("kernels", "stap", "tests", "testsuite", "exclude", "xfail", "allow_splats")
KERNEL_KEYS = ("deb", "git", "ref", "path", "config", "name")
STAP_KEYS = ("deb", "git", "ref", "path", "name")
EXP_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?\.exp$")
RULE_KEYS = ("kernel", "stap", "test", "reason")


@dataclass(frozen=True)
class Located(Generic[T]):
    value: T
    line: int


def _id_part(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:limit]


@dataclass(frozen=True)
class StapSpec:
    """A systemtap build: `deb:VERSION`, `git:URL@REF` or `path:DIR`."""

    kind: str  # deb | git | path
    value: str  # the package version, the repository URL or the checkout directory
    ref: str = ""  # git only: a commit, tag or branch
    name: str = ""  # the column's name (matrix `name:`); default: the spec

    @property
    def spec(self) -> str:
        """The build as people and results name it; credentials in a URL are masked (the
        value itself, which git uses, keeps them)."""
        return f"git:{mask(self.value)}@{self.ref}" if self.kind == "git" else f"{self.kind}:{self.value}"

    @property
    def display_name(self) -> str:
        return self.name or self.spec

    @property
    def label(self) -> str:
        """The short form used in test ids: `stap5.1-5`, `stap-release-5.5`, `stap-path-NAME`,
        or `stap-NAME` for a named column."""
        if self.name:
            return "stap-" + _id_part(self.name, 40)
        if self.kind == "deb":
            return f"stap{self.value}"
        if self.kind == "git":
            return "stap-" + _id_part(self.ref, 40)
        return "stap-path-" + _id_part(Path(self.value).name, 30)


@dataclass(frozen=True)
class KernelSpec:
    """A kernel: a Debian ABI name, `git:URL@REF` (built from source) or `path:DIR` (a tree
    the developer built)."""

    kind: str  # deb | git | path
    value: str  # the ABI name, the repository URL or directory, or the build directory
    ref: str = ""  # git only
    config: tuple[str, ...] = ()  # git only: a base and fragments (see harness/kconfig.py)
    name: str = ""  # the row's name (matrix `name:`); default: the spec

    @property
    def spec(self) -> str:
        if self.kind == "deb":
            return self.value
        return f"git:{mask(self.value)}@{self.ref}" if self.kind == "git" else f"path:{self.value}"

    @property
    def display_name(self) -> str:
        return self.name or self.spec

    @property
    def label(self) -> str:
        """The row's part of test ids: the ABI name, `linux-REF`, `linux-path-DIR`, or the name."""
        if self.name:
            return _id_part(self.name, 40)
        if self.kind == "deb":
            return self.value
        if self.kind == "git":
            return "linux-" + _id_part(self.ref, 40)
        return "linux-path-" + _id_part(Path(self.value).name, 30)


@dataclass(frozen=True)
class Rule:
    """An exclusion or a known failure: fnmatch patterns over kernel, stap spec and test name."""

    kernel: str
    stap: str
    test: str
    reason: str
    line: int

    def matches(self, kernel: KernelSpec | str, stap: StapSpec | str, test: str) -> bool:
        """Kernel and systemtap patterns match the spec or the name."""
        kernels = (kernel.spec, kernel.display_name) if isinstance(kernel, KernelSpec) else (kernel,)
        staps = (stap.spec, stap.display_name) if isinstance(stap, StapSpec) else (stap,)
        return (
            any(fnmatch.fnmatchcase(k, self.kernel) for k in kernels)
            and any(fnmatch.fnmatchcase(s, self.stap) for s in staps)
            and fnmatch.fnmatchcase(test, self.test)
        )


@dataclass
class Matrix:
    path: Path
    kernels: list[Located[KernelSpec]]
    staps: list[Located[StapSpec]]
    tests: list[TestScript]
    exclude: list[Rule] = field(default_factory=list)
    xfail: list[Rule] = field(default_factory=list)
    allow_splats: list[str] = field(default_factory=list)
    testsuite: list[str] = field(default_factory=list)  # systemtap testsuite .exp files (source builds)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def excluded(self, kernel: KernelSpec | str, stap: StapSpec | str, test: str) -> Rule | None:
        return next((r for r in self.exclude if r.matches(kernel, stap, test)), None)

    def known_failure(self, kernel: KernelSpec | str, stap: StapSpec | str, test: str) -> Rule | None:
        return next((r for r in self.xfail if r.matches(kernel, stap, test)), None)


def nearest(value: str, choices: list[str], n: int = 4) -> str:
    """A human hint: the closest valid values, or a few of them when none is close."""
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    return ", ".join(close or choices[:n])


def check_value(value: str, pattern: re.Pattern[str], where: str, what: str, example: str) -> None:
    bad = sorted(set(value) & SHELL_METACHARACTERS)
    if bad:
        raise MatrixError(
            f"{where}: {what} {value!r} contains {''.join(bad)!r}; matrix values are names, "
            f"never shell text (for example {example})"
        )
    if not pattern.match(value):
        raise MatrixError(f"{where}: {what} {value!r} is not valid (for example {example})")


def expand_path(text: str, base: Path, where: str) -> Path:
    """`~`, `~user`, relative (to `base`) or absolute; a `~user` that does not exist is an error."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:
        raise MatrixError(f"{where}: cannot expand {text!r}: no such user's home directory") from None
    try:
        return (path if path.is_absolute() else base / path).resolve()
    except (RuntimeError, OSError) as error:  # Python 3.11 raises RuntimeError for a symlink loop
        raise MatrixError(f"{where}: cannot resolve {text!r}: {error}") from None


# --- systemtap builds -------------------------------------------------------------------------

def parse_stap_spec(text: str, where: str, name: str = "") -> StapSpec:
    """`deb:VERSION`, `git:URL@REF` (URL a local repository or a remote one) or `path:DIR`."""
    kind, _, value = text.partition(":")
    kind, value = kind.strip(), value.strip()
    if kind == "deb":
        check_value(value, DEB_VERSION_RE, where, "systemtap package version", "5.1-5")
        return StapSpec(kind, value, name=name)
    if kind == "git" and "@" in value:
        url, _, ref = value.rpartition("@")
        return git_spec(url, ref, where, name)
    if kind == "path" and value:
        return path_spec(str(expand_path(value, Path.cwd(), where)), where, name)
    raise MatrixError(
        f"{where}: systemtap build {text!r} is not deb:VERSION (deb:5.1-5), git:URL@REF "
        "(git:https://sourceware.org/git/systemtap.git@release-5.5) or path:DIR"
    )


def git_spec(url: str, ref: str, where: str, name: str = "") -> StapSpec:
    check_value(url, URL_RE, where, "git URL", "https://sourceware.org/git/systemtap.git")
    check_value(ref, REF_RE, where, "git ref", "release-5.5")
    return StapSpec("git", url, ref, name)


def path_spec(directory: str, where: str, name: str = "") -> StapSpec:
    check_value(directory, URL_RE, where, "source directory", "/home/me/systemtap")
    path = Path(directory)
    if not (path / "configure.ac").is_file():
        raise MatrixError(f"{where}: {path} is not a systemtap checkout (it has no configure.ac)")
    return StapSpec("path", str(path), name=name)


# --- kernels ------------------------------------------------------------------------------

def parse_kernel_spec(text: str, where: str, name: str = "", config: tuple[str, ...] = ()) -> KernelSpec:
    """A Debian ABI name (`6.12.117+deb13-amd64`, also as `deb:ABI`), `git:URL-or-DIR@REF` or `path:DIR`."""
    kind, separator, value = text.partition(":")
    if separator and kind == "git" and "@" in value:
        url, _, ref = value.rpartition("@")
        check_value(url, URL_RE, where, "git URL", "https://git.kernel.org/.../linux.git or /home/me/linux")
        check_value(ref, REF_RE, where, "git ref", "v6.12")
        if "://" not in url and not url.startswith("/") and not re.match(r"^[\w.-]+@[\w.-]+:", url):
            url = str(expand_path(url, Path.cwd(), where))
        return KernelSpec("git", url, ref, config, name)
    if separator and kind == "path" and value:
        if config:
            raise MatrixError(f"{where}: a path: kernel is used as it was built; config: applies to git: kernels")
        directory = expand_path(value, Path.cwd(), where)
        check_value(str(directory), URL_RE, where, "kernel build directory", "/home/me/linux")
        return KernelSpec("path", str(directory), name=name)
    abi = value if separator and kind == "deb" else text
    if config:
        raise MatrixError(f"{where}: config: applies to git: kernels; a Debian kernel comes built")
    check_value(abi, KERNEL_RE, where, "kernel ABI name", "6.12.117+deb13-amd64, git:DIR@REF or path:DIR")
    return KernelSpec("deb", abi, name=name)


# --- YAML helpers -------------------------------------------------------------------------

def _scalar(node: yaml.Node, where: str, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
        raise MatrixError(f"{where}: {what} must be a non-empty string")
    return str(node.value).strip()


def _sequence(node: yaml.Node, path: Path, key: str, allow_empty: bool = True) -> list[yaml.Node]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null") and allow_empty:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise MatrixError(f"{path}:{node.start_mark.line + 1}: '{key}' must be a list")
    if not node.value and not allow_empty:
        raise MatrixError(f"{path}:{node.start_mark.line + 1}: '{key}' is empty; a matrix needs at least one")
    return list(node.value)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _mapping(node: yaml.MappingNode, path: Path, allowed: tuple[str, ...], what: str) -> dict[str, yaml.Node]:
    """A mapping's keys and value nodes; an unknown or repeated key is an error with its line."""
    values: dict[str, yaml.Node] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node, f"{path}:{_line(key_node)}", "a key")
        if key not in allowed:
            raise MatrixError(f"{path}:{_line(key_node)}: unknown key {key!r} in {what} "
                              f"(did you mean {nearest(key, list(allowed), 1)}?)")
        if key in values:
            raise MatrixError(f"{path}:{_line(key_node)}: key {key!r} given twice in {what} "
                              f"(first at line {lines[key]}); YAML would silently keep only the last")
        values[key], lines[key] = value_node, _line(key_node)
    return values


def _name(values: dict[str, yaml.Node], path: Path) -> str:
    if "name" not in values:
        return ""
    node = values["name"]
    where = f"{path}:{_line(node)}"
    name = _scalar(node, where, "name")
    check_value(name, NAME_RE, where, "name", "before, after, stap-5.5")
    return name


def _parse_rule(node: yaml.Node, path: Path, key: str) -> Rule:
    where = f"{path}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        raise MatrixError(f"{where}: each '{key}' entry is a mapping with {', '.join(RULE_KEYS)}")
    values = {k: _scalar(v, f"{path}:{_line(v)}", k) for k, v in _mapping(node, path, RULE_KEYS, f"'{key}'").items()}
    if "reason" not in values:
        raise MatrixError(f"{where}: every '{key}' entry needs a reason")
    for name in ("kernel", "stap", "test"):
        check_value(values.get(name, "*"), PATTERN_RE, where, f"{key} pattern", "6.1.*")
    return Rule(
        values.get("kernel", "*"), values.get("stap", "*"), values.get("test", "*"),
        values["reason"], _line(node),
    )


def _source_fields(values: dict[str, yaml.Node], path: Path, where: str, what: str) -> tuple[str, str]:
    """(spec text, ...) from a mapping with exactly one of deb:, git: (+ ref:) or path:."""
    kinds = [k for k in ("deb", "git", "path") if k in values]
    if len(kinds) != 1:
        raise MatrixError(f"{where}: a {what} mapping needs exactly one of deb:, git: (with ref:) or path:")
    kind = kinds[0]
    value = _scalar(values[kind], f"{path}:{_line(values[kind])}", kind)
    if kind == "git":
        if "ref" not in values:
            raise MatrixError(f"{where}: a git {what} needs a ref: (a commit, tag or branch)")
        if "://" not in value and not value.startswith("/") and not re.match(r"^[\w.-]+@[\w.-]+:", value):
            value = str(expand_path(value, path.parent, where))
        return kind, f"git:{value}@{_scalar(values['ref'], where, 'ref')}"
    if "ref" in values:
        raise MatrixError(f"{where}: ref: belongs to a git: {what}")
    if kind == "path":
        return kind, f"path:{expand_path(value, path.parent, where)}"
    return kind, f"deb:{value}"


def _parse_stap_node(node: yaml.Node, path: Path) -> StapSpec:
    """`- deb:5.1-5`, `- {git: URL, ref: REF}`, `- {path: DIR}` or `- {deb: 5.1-5}`, each
    optionally with `name:`. Relative paths are relative to the matrix file."""
    where = f"{path}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        text = _scalar(node, where, "a systemtap build")
        if text.startswith("path:"):
            text = f"path:{expand_path(text[5:].strip(), path.parent, where)}"
        return parse_stap_spec(text, where)
    values = _mapping(node, path, STAP_KEYS, "a systemtap build")
    _, text = _source_fields(values, path, where, "systemtap build")
    return parse_stap_spec(text, where, _name(values, path))


def _parse_kernel_node(node: yaml.Node, path: Path) -> KernelSpec:
    """`- ABI`, `- git:DIR@REF`, `- path:DIR`, or a mapping with one of deb:, git: + ref:,
    path:, and optionally name: and (git only) config:."""
    from harness.kconfig import parse_config_items  # the fragments live beside the kernel builder

    where = f"{path}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        text = _scalar(node, where, "a kernel")
        if text.startswith("path:"):
            text = f"path:{expand_path(text[5:].strip(), path.parent, where)}"
        return parse_kernel_spec(text, where)
    values = _mapping(node, path, KERNEL_KEYS, "a kernel")
    _, text = _source_fields(values, path, where, "kernel")
    config: tuple[str, ...] = ()
    if "config" in values:
        config_node = values["config"]
        items = ([config_node] if isinstance(config_node, yaml.ScalarNode)
                 else _sequence(config_node, path, "config", allow_empty=False))
        config = parse_config_items(
            [(_scalar(item, f"{path}:{_line(item)}", "a config item"), f"{path}:{_line(item)}") for item in items],
            path.parent)
    return parse_kernel_spec(text, where, _name(values, path), config)


# --- the file -----------------------------------------------------------------------------

def _compose(path: Path) -> yaml.MappingNode:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise MatrixError(f"{path}:{line}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                          f"{error.start}); save the file as UTF-8") from None
    except OSError as error:
        raise MatrixError(f"{path}: cannot read the matrix file: {error.strerror}") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise MatrixError(f"{path}{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    except RecursionError:
        raise MatrixError(f"{path}: nested too deeply to be a matrix (a matrix is a mapping of lists)") from None
    if not isinstance(root, yaml.MappingNode):
        raise MatrixError(f"{path}: the matrix must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    return root


def _unique(path: Path, what: str, items: list[Located[str]]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        if item.value in seen:
            raise MatrixError(f"{path}:{item.line}: {what} {item.value!r} listed twice (first at line {seen[item.value]})")
        seen[item.value] = item.line


def load_matrix(path: Path) -> Matrix:
    """Read and check a matrix file; raises MatrixError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise MatrixError(f"matrix file {path} does not exist")
    if not path.is_file():
        raise MatrixError(f"matrix file {path} is not a regular file (a directory or a device): give the YAML file")
    sections = _mapping(_compose(path), path, TOP_LEVEL_KEYS, "the matrix")
    for required in ("kernels", "stap", "tests"):
        if required not in sections:
            raise MatrixError(f"{path}: the matrix needs a '{required}' list")

    kernels = [Located(_parse_kernel_node(n, path), _line(n))
               for n in _sequence(sections["kernels"], path, "kernels", allow_empty=False)]
    staps = [Located(_parse_stap_node(n, path), _line(n))
             for n in _sequence(sections["stap"], path, "stap", allow_empty=False)]
    tests = []
    for node in _sequence(sections["tests"], path, "tests", allow_empty=False):
        where = f"{path}:{_line(node)}"
        script = expand_path(_scalar(node, where, "a test script"), path.parent, where)
        tests.append(Located(load_script(script, where=where), _line(node)))

    _unique(path, "kernel", [Located(k.value.spec, k.line) for k in kernels])
    _unique(path, "kernel name", [Located(k.value.display_name, k.line) for k in kernels])
    _unique(path, "systemtap build", [Located(s.value.spec, s.line) for s in staps])
    _unique(path, "systemtap name", [Located(s.value.display_name, s.line) for s in staps])
    _unique(path, "test", [Located(t.value.name, t.line) for t in tests])
    _unique(path, "kernel id", [Located(k.value.label, k.line) for k in kernels])
    _unique(path, "systemtap id", [Located(s.value.label, s.line) for s in staps])

    matrix = Matrix(path, kernels, staps, [t.value for t in tests])
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
