"""Kernel configurations: what a source build is configured with, and what every kernel
given to stapmatrix must have.

A source build's config is an ordered list, as tuxmake and drgn's vmtest do it: a base
(`defconfig`, `tinyconfig`, `allnoconfig` or a full `.config` file), then fragments (files,
in-tree fragments such as `kvm_guest.config`, or single `CONFIG_X=y` lines). The default is
x86_64 defconfig plus `kvm_guest.config`. What systemtap and the guest need
(harness/kernel-config/*.config) is always merged last, and after `make olddefconfig` every
option any of the pieces asked for is checked: an option that did not take (a missing
dependency, a typo, an option this kernel does not have) fails the build with its name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.bounded import MIB, UnreadableFile, read_bounded
from harness.errors import InfraError, MatrixError
from harness.files import KERNEL_CONFIG_DIR

FRAGMENTS_DIR = KERNEL_CONFIG_DIR
REQUIRED_FRAGMENTS = ("systemtap.config", "guest.config")
BASE_TARGETS = ("defconfig", "x86_64_defconfig", "tinyconfig", "allnoconfig")
DEFAULT_CONFIG = ("base:defconfig", "target:kvm_guest.config")
# Matched whole (fullmatch): a value holds no newline or other control character, or a
# `CONFIG_X="a\nCONFIG_MODULES=n"` item would become two lines of the merged fragment.
OPTION_LINE_RE = re.compile(r'CONFIG_[A-Z0-9_]+=(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|"[^"\\$`\x00-\x1f\x7f]*")')
NOT_SET_RE = re.compile(r"# CONFIG_[A-Z0-9_]+ is not set")
CONFIG_FILE_LIMIT = 4 * MIB  # Debian's whole .config is about 280 KiB
TARGET_RE = re.compile(r"[a-z0-9_]+\.config")
FULL_CONFIG_MARK = "# Automatically generated file; DO NOT EDIT."


@dataclass(frozen=True)
class Wanted:
    option: str  # CONFIG_X
    value: str  # y, m, a number or string, or "" for "is not set"
    origin: str  # which fragment asked for it

    def met_by(self, config: dict[str, str]) -> bool:
        have = config.get(self.option, "")
        return have in ("", "n") if self.value in ("", "n") else have == self.value

    def describe(self) -> str:
        return f"# {self.option} is not set" if self.value in ("", "n") else f"{self.option}={self.value}"


def _fragment_lines(text: str, where: str) -> list[str]:
    """The option lines of a fragment; anything else but comments and blank lines is an error
    naming the line by its number only: a file given by mistake (a key, the environment
    through /proc) must not end up in a CI log."""
    lines = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or (line.startswith("#") and not NOT_SET_RE.fullmatch(line)):
            continue
        if not OPTION_LINE_RE.fullmatch(line) and not NOT_SET_RE.fullmatch(line):
            raise MatrixError(f"{where}:{number}: not a kernel config line (CONFIG_X=y, CONFIG_X=m, CONFIG_X=123, "
                              "CONFIG_X=\"text\" or '# CONFIG_X is not set'); is this a kernel config fragment?")
        lines.append(line)
    return lines


def read_config_file(path: Path, where: str) -> str:
    """A config file's text: a regular file (a symlink is followed to one) of at most
    CONFIG_FILE_LIMIT, in UTF-8; never a directory, FIFO or device."""
    try:
        data = read_bounded(path, CONFIG_FILE_LIMIT, "a kernel config file")
    except UnreadableFile as error:
        raise MatrixError(f"{where}: config file {path} {error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MatrixError(f"{where}: config file {path}:{line} is not UTF-8 text: is it a kernel config?") from None


def parse_config_items(items: list[tuple[str, str]], base_dir: Path) -> tuple[str, ...]:
    """Matrix `config:` items -> normalised items: `base:TARGET`, `target:NAME.config`,
    `file:PATH` (a fragment), `full:PATH` (a whole .config) or `line:CONFIG_X=y`.
    A base may only come first; without one, defconfig is the base."""
    normalised: list[str] = []
    for index, (text, where) in enumerate(items):
        if OPTION_LINE_RE.fullmatch(text) or NOT_SET_RE.fullmatch(text):
            normalised.append(f"line:{text}")
            continue
        if text.startswith(("CONFIG_", "# CONFIG_")):
            raise MatrixError(f"{where}: config line {text[:60]!r} is not CONFIG_X=y, CONFIG_X=m, CONFIG_X=123, "
                              "CONFIG_X=\"text\" (one line, no control characters) or '# CONFIG_X is not set'")
        if text in BASE_TARGETS:
            if index != 0:
                raise MatrixError(f"{where}: {text} is a base configuration and must come first in config:")
            normalised.append(f"base:{text}")
            continue
        candidate = Path(text).expanduser()
        candidate = candidate if candidate.is_absolute() else base_dir / candidate
        if os.path.lexists(candidate):  # a file of that name is what was meant, whatever it is
            content = read_config_file(candidate, where)
            _fragment_lines(content, str(candidate))
            if content.startswith(FULL_CONFIG_MARK) or "\n" + FULL_CONFIG_MARK in content[:200]:
                if index != 0:
                    raise MatrixError(f"{where}: {candidate} is a full .config (a base) and must come first")
                normalised.append(f"full:{candidate.resolve()}")
            else:
                normalised.append(f"file:{candidate.resolve()}")
            continue
        if TARGET_RE.fullmatch(text):
            normalised.append(f"target:{text}")
            continue
        raise MatrixError(
            f"{where}: config item {text!r} is not a base ({', '.join(BASE_TARGETS)}), an existing file, an "
            "in-tree fragment (kvm_guest.config) or a line (CONFIG_KPROBES=y, '# CONFIG_WERROR is not set')"
        )
    if not normalised or not normalised[0].startswith(("base:", "full:")):
        normalised.insert(0, "base:defconfig")
    return tuple(normalised)


def effective_items(items: tuple[str, ...]) -> tuple[str, ...]:
    """The config of a source build: the matrix's items, or the default."""
    return items or DEFAULT_CONFIG


def required_fragments() -> dict[str, str]:
    """name -> text of the fragments every kernel must satisfy."""
    return {name: (FRAGMENTS_DIR / name).read_text() for name in REQUIRED_FRAGMENTS}


def required_options() -> list[Wanted]:
    wanted = []
    for name, text in required_fragments().items():
        wanted += [_wanted(line, name) for line in _fragment_lines(text, str(FRAGMENTS_DIR / name))]
    return wanted


def _wanted(line: str, origin: str) -> Wanted:
    if line.startswith("#"):
        return Wanted(line.split()[1], "", origin)
    option, _, value = line.partition("=")
    return Wanted(option, value, origin)


def wanted_options(items: tuple[str, ...]) -> list[Wanted]:
    """Every option the fragments and lines of `items` ask for, then the required ones (later
    wins). In-tree fragments are checked by the build, which has the source."""
    wanted: dict[str, Wanted] = {}
    for item in items:
        kind, _, value = item.partition(":")
        if kind == "line":
            found = _wanted(value, "config: line")
            wanted[found.option] = found
        elif kind == "file":
            for line in _fragment_lines(read_config_file(Path(value), value), value):
                found = _wanted(line, value)
                wanted[found.option] = found
    for found in required_options():
        wanted[found.option] = found
    return list(wanted.values())


def parse_config(text: str) -> dict[str, str]:
    """A .config as {CONFIG_X: value}; options that are not set are absent."""
    values = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            option, _, value = line.partition("=")
            values[option] = value
    return values


def unmet(config_text: str, wanted: list[Wanted]) -> list[Wanted]:
    config = parse_config(config_text)
    return [w for w in wanted if not w.met_by(config)]


def describe_unmet(missing: list[Wanted], config: dict[str, str]) -> str:
    lines = []
    for wanted in missing:
        have = config.get(wanted.option)
        state = f"is {wanted.option}={have}" if have else "is not set"
        lines.append(f"  {wanted.describe():45} ({state}; asked for by {wanted.origin})")
    return "\n".join(lines)


def items_digest(items: tuple[str, ...]) -> str:
    """A digest of a config list and the contents of its files, and of the required fragments:
    part of a source build's cache key."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode() + b"\0")
        kind, _, value = item.partition(":")
        if kind in ("file", "full"):
            digest.update(read_config_file(Path(value), value).encode() + b"\0")
    for name, text in sorted(required_fragments().items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def fix_commands(missing: list[Wanted], tree: str) -> str:
    """The commands a developer runs in their tree to meet `missing`."""
    switches = []
    for wanted in missing:
        name = wanted.option.removeprefix("CONFIG_")
        if wanted.value in ("", "n"):
            switches += ["--disable", name]
        elif wanted.value in ("y", "m"):
            switches += ["--enable" if wanted.value == "y" else "--module", name]
        else:
            switches += ["--set-val", name, wanted.value]
    return (f"cd {tree} && scripts/config {' '.join(switches)} && make olddefconfig && "
            "make -j$(nproc) && make modules_prepare")


def compiler_of(config_text: str, where: str) -> tuple[str, str]:
    """(the compiler command, its major version) from CONFIG_CC_VERSION_TEXT: "gcc-14 (Debian
    14.2.0-19) 14.2.0" -> ("gcc-14", "14"); "x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0" ->
    ("x86_64-linux-gnu-gcc-16", "16"); "gcc (Debian 12.2.0-14) 12.2.0" -> ("gcc", "12")."""
    text = parse_config(config_text).get("CONFIG_CC_VERSION_TEXT", "").strip('"')
    match = re.match(r"^(\S*gcc\S*) .* ([0-9]+)\.[0-9.]+$", text)
    if not match:
        raise InfraError(f"{where}: the kernel was built with {text or 'an unknown compiler'!r}; "
                         "stapmatrix builds modules with gcc only")
    return match.group(1), match.group(2)
