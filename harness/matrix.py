"""The matrix file: kernels x systemtap builds x test scripts, read and validated before any
work starts. The types it yields (specs, rules) are harness/specs.py's.

Every value keeps the line it came from, so a later check (an unknown kernel, say) can still
name `matrix.yaml:LINE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import yaml

from harness.bounded import MIB, UnreadableFile, read_bounded
from harness.errors import MatrixError
from harness.kconfig import parse_config_items
from harness.scripts import TestScript, load_script
from harness.specs import (
    NAME_RE,
    PATTERN_RE,
    KernelSpec,
    Rule,
    StapSpec,
    cell_id,
    check_value,
    expand_path,
    git_location,
    nearest,
    parse_kernel_spec,
    parse_stap_spec,
)
from harness.testsets import TestSet, check_patterns, make_test_set

T = TypeVar("T")

TOP_LEVEL_KEYS = ("kernels", "stap", "tests", "testsuite", "exclude", "xfail", "allow_splats")
KERNEL_KEYS = ("deb", "git", "ref", "path", "config", "name")
STAP_KEYS = ("deb", "git", "ref", "path", "name")
RULE_KEYS = ("kernel", "stap", "test", "reason")
TEST_SET_KEYS = ("set", "include", "exclude", "path")


@dataclass(frozen=True)
class Located(Generic[T]):
    value: T
    line: int


@dataclass
class Matrix:
    path: Path
    kernels: list[Located[KernelSpec]]
    staps: list[Located[StapSpec]]
    tests: list[TestScript]
    exclude: list[Rule] = field(default_factory=list)
    xfail: list[Rule] = field(default_factory=list)
    allow_splats: list[str] = field(default_factory=list)
    testsuite: list[TestSet] = field(default_factory=list)  # systemtap's own tests (harness/testsets.py)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def excluded(self, kernel: KernelSpec | str, stap: StapSpec | str, test: str) -> Rule | None:
        return next((r for r in self.exclude if r.matches(kernel, stap, test)), None)

    def known_failure(self, kernel: KernelSpec | str, stap: StapSpec | str, test: str) -> Rule | None:
        return next((r for r in self.xfail if r.matches(kernel, stap, test)), None)


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
    for name in ("kernel", "stap"):
        check_value(values.get(name, "*"), PATTERN_RE, where, f"{key} pattern", "6.1.*")
    check_patterns([values.get("test", "*")], where, f"{key} test")  # test names hold spaces: `examples/io/iotop: check`
    return Rule(
        values.get("kernel", "*"), values.get("stap", "*"), values.get("test", "*"),
        values["reason"], _line(node),
    )


def _parse_test_set(node: yaml.Node, path: Path) -> TestSet:
    """`- examples`, `- smoke`, `- systemtap.base/*.exp`, or `- {set: examples, include: [...],
    exclude: [...], path: DIR}` (DIR relative to the matrix file)."""
    where = f"{path}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        return make_test_set(_scalar(node, where, "a test set"), where)
    values = _mapping(node, path, TEST_SET_KEYS, "a test set")
    if "set" not in values:
        raise MatrixError(f"{where}: a test set mapping needs set: (examples, smoke, all or a DejaGnu file or glob)")
    filters = {key: [_scalar(item, f"{path}:{_line(item)}", f"an {key} pattern")
                     for item in _sequence(values[key], path, key, allow_empty=False)]
               for key in ("include", "exclude") if key in values}
    directory = expand_path(_scalar(values["path"], where, "path"), path.parent, where) if "path" in values else None
    return make_test_set(_scalar(values["set"], where, "set"), where, filters.get("include"), filters.get("exclude"),
                         directory)


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
        value = git_location(value, path.parent, where)
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

MATRIX_LIMIT = 16 * MIB  # a matrix of 256 cells is a few KiB


def _compose(path: Path) -> yaml.MappingNode:
    try:
        data = read_bounded(path, MATRIX_LIMIT, "a matrix file")
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MatrixError(f"{path}:{line}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                          f"{error.start}); save the file as UTF-8") from None
    except UnreadableFile as error:
        raise MatrixError(f"{path}: the matrix file {error}") from None
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


def _unique_cells(path: Path, kernels: list[Located[KernelSpec]], staps: list[Located[StapSpec]]) -> None:
    """Two (kernel, systemtap) pairs must not share a cell id: the id names the CI job that
    runs the cell, its artifact, its cache keys and its directory, so one of the two would
    never run and the other's results would be taken for both."""
    seen: dict[str, tuple[Located[KernelSpec], Located[StapSpec]]] = {}
    for kernel in kernels:
        for stap in staps:
            cell = cell_id(kernel.value.label, stap.value.label)
            if cell in seen:
                first_kernel, first_stap = seen[cell]
                raise MatrixError(
                    f"{path}:{kernel.line}: kernel {kernel.value.display_name!r} x systemtap "
                    f"{stap.value.display_name!r} (line {stap.line}) has the cell id {cell!r}, as kernel "
                    f"{first_kernel.value.display_name!r} (line {first_kernel.line}) x systemtap "
                    f"{first_stap.value.display_name!r} (line {first_stap.line}) does: give one of them "
                    "another `name:`")
            seen[cell] = (kernel, stap)


def load_matrix(path: Path) -> Matrix:
    """Read and check a matrix file; raises MatrixError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise MatrixError(f"matrix file {path} does not exist")
    if not path.is_file():
        raise MatrixError(f"matrix file {path} is not a regular file (a directory or a device): give the YAML file")
    sections = _mapping(_compose(path), path, TOP_LEVEL_KEYS, "the matrix")
    for required in ("kernels", "stap"):
        if required not in sections:
            raise MatrixError(f"{path}: the matrix needs a '{required}' list")
    if "tests" not in sections and "testsuite" not in sections:
        raise MatrixError(f"{path}: the matrix needs a 'tests' list (scripts), a 'testsuite' list (systemtap's own "
                          "tests: examples, smoke, DejaGnu files), or both")

    kernels = [Located(_parse_kernel_node(n, path), _line(n))
               for n in _sequence(sections["kernels"], path, "kernels", allow_empty=False)]
    staps = [Located(_parse_stap_node(n, path), _line(n))
             for n in _sequence(sections["stap"], path, "stap", allow_empty=False)]
    tests = []
    for node in _sequence(sections["tests"], path, "tests", allow_empty=False) if "tests" in sections else []:
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
    _unique_cells(path, kernels, staps)

    matrix = Matrix(path, kernels, staps, [t.value for t in tests])
    for key, target in (("exclude", matrix.exclude), ("xfail", matrix.xfail)):
        if key in sections:
            target.extend(_parse_rule(n, path, key) for n in _sequence(sections[key], path, key))
    if "testsuite" in sections:
        seen: dict[TestSet, int] = {}
        for node in _sequence(sections["testsuite"], path, "testsuite"):
            test_set = _parse_test_set(node, path)
            if test_set in seen:
                raise MatrixError(f"{path}:{_line(node)}: test set {test_set.label!r} listed twice (first at line "
                                  f"{seen[test_set]})")
            seen[test_set] = _line(node)
            matrix.testsuite.append(test_set)
    if "allow_splats" in sections:
        for node in _sequence(sections["allow_splats"], path, "allow_splats"):
            pattern = _scalar(node, f"{path}:{_line(node)}", "a splat pattern")
            try:
                re.compile(pattern)
            except re.error as error:
                raise MatrixError(f"{path}:{_line(node)}: bad regular expression {pattern!r}: {error}") from None
            matrix.allow_splats.append(pattern)
    return matrix
