"""The vocabulary every module speaks: what a kernel or a systemtap build is as the user named
it (a spec), a rule over cells and tests, a cell's id, and the checks every value from outside
passes before it is used.

Values are checked against strict patterns here: nothing from a matrix file or the command
line ever reaches a shell, but a value with shell metacharacters is a typo or worse, and is
refused naming where it came from (`where`: `matrix.yaml:LINE` or an option).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.debian_names import VERSION_RE
from harness.errors import MatrixError
from harness.gitrepo import is_local, mask

KERNEL_RE = re.compile(r"^[0-9]+\.[0-9]+[0-9A-Za-z.+~-]*-amd64$")
PATTERN_RE = re.compile(r"^[0-9A-Za-z.+~:*?_/@-]+$")
URL_RE = re.compile(r"^[A-Za-z0-9_./:@+~-]+$")
REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:-]{0,63}$")
EXP_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?\.exp$")
SHELL_METACHARACTERS = set(";&|$`<>()\\\"'{}[]!#\n\t ")
# A cell id is a job name, an artifact name, a cache key part and a directory name: these
# characters only (GitHub refuses `:` in artifact names, for one).
CELL_ID_RE = re.compile(r"^[A-Za-z0-9._+-]{1,200}$")


def _id_part(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:limit]


@dataclass(frozen=True)
class SourceSpec:
    """Where a kernel or a systemtap build comes from: a Debian package (`deb`), a git
    repository at a ref (`git`), or a directory (`path`)."""

    kind: str  # deb | git | path
    value: str  # the package version or ABI name, the repository URL or directory, or the directory
    ref: str = ""  # git only: a commit, tag or branch
    name: str = ""  # the row's or column's name (matrix `name:`); default: the spec

    ID_PREFIX: ClassVar[str] = ""  # the label's prefix for git: and path: specs

    def _deb_spec(self) -> str:
        return f"deb:{self.value}"

    def _deb_label(self) -> str:
        return _id_part(self.value, 100)

    def _named_label(self) -> str:
        return _id_part(self.name, 40)

    @property
    def spec(self) -> str:
        """The build as people and results name it; credentials in a URL are masked (the
        value itself, which git uses, keeps them)."""
        if self.kind == "git":
            return f"git:{mask(self.value)}@{self.ref}"
        return f"path:{self.value}" if self.kind == "path" else self._deb_spec()

    @property
    def display_name(self) -> str:
        return self.name or self.spec

    @property
    def label(self) -> str:
        """The spec's part of cell ids: the name if given, else a short form of the spec."""
        if self.name:
            return self._named_label()
        if self.kind == "git":
            return f"{self.ID_PREFIX}-" + _id_part(self.ref, 40)
        if self.kind == "path":
            return f"{self.ID_PREFIX}-path-" + _id_part(Path(self.value).name, 30)
        return self._deb_label()


@dataclass(frozen=True)
class StapSpec(SourceSpec):
    """A systemtap build: `deb:VERSION`, `git:URL@REF` or `path:DIR`. Labels: `stap5.1-5`,
    `stap-release-5.5`, `stap-path-NAME`, or `stap-NAME` for a named column."""

    ID_PREFIX: ClassVar[str] = "stap"

    def _deb_label(self) -> str:
        return "stap" + _id_part(self.value, 60)  # an epoch's `:` is not an artifact name's

    def _named_label(self) -> str:
        return "stap-" + _id_part(self.name, 40)


@dataclass(frozen=True)
class KernelSpec(SourceSpec):
    """A kernel: a Debian ABI name, `git:URL@REF` (built from source) or `path:DIR` (a tree
    the developer built). Labels: the ABI name, `linux-REF`, `linux-path-DIR`, or the name."""

    config: tuple[str, ...] = ()  # git only: a base and fragments (see harness/kconfig.py)

    ID_PREFIX: ClassVar[str] = "linux"

    def _deb_spec(self) -> str:
        return self.value


def cell_id(kernel_label: str, stap_label: str) -> str:
    """`KERNEL-LABEL-STAP-LABEL`: known from the matrix file alone, before anything is resolved.
    Two pairs can give one id (kernels `a` and `a-stap-b` with systemtap names `b-stap-c` and
    `c`): harness/matrix.py refuses such a matrix."""
    return f"{kernel_label}-{stap_label}"


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


def git_location(url: str, base: Path, where: str) -> str:
    """A git URL as given, or a local repository's path made absolute (relative to `base`)."""
    return str(expand_path(url, base, where)) if is_local(url) and not url.startswith("/") else url


# --- systemtap builds -------------------------------------------------------------------------

def parse_stap_spec(text: str, where: str, name: str = "") -> StapSpec:
    """`deb:VERSION`, `git:URL@REF` (URL a local repository or a remote one) or `path:DIR`."""
    kind, _, value = text.partition(":")
    kind, value = kind.strip(), value.strip()
    if kind == "deb":
        check_value(value, VERSION_RE, where, "systemtap package version", "5.1-5")
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
        return KernelSpec("git", git_location(url, Path.cwd(), where), ref, name, config)
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
