"""Which base suite a kernel, a systemtap build and a cell need, and why (harness/suites.py
says which bases there are and what each carries).

A kernel needs the base whose suites have the compiler its headers call; a Debian systemtap
build needs the base whose suites meet its packages' dependencies; a cell takes the older of
the two that serves both. Every choice comes with its reason in words, which `stapmatrix
check` prints.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from harness import cache
from harness.archive import Archive
from harness.errors import InfraError, MatrixError
from harness.settings import cache_dir
from harness.suites import BASE_SUITE_SOURCES, BASE_SUITES


class BaseChoice(NamedTuple):
    suite: str
    reason: str


def choose_base(archive: Archive, compilers: tuple[str, ...], what: str) -> BaseChoice:
    """The oldest base suite that has every compiler package, and why."""
    for suite in BASE_SUITES:
        if all(any(archive.in_suite(s, c) for s in BASE_SUITE_SOURCES[suite]) for c in compilers):
            reason = f"{what}'s compiler {', '.join(compilers)} is in {suite}"
            return BaseChoice(suite, reason if suite == BASE_SUITES[0] else reason + f" (not in {BASE_SUITES[0]})")
    raise MatrixError(f"{what} needs {', '.join(compilers)}, which no base suite ({', '.join(BASE_SUITES)}) has")


def compiler_packages(archive: Archive, cc: str, cc_version: str, base_suite: str) -> tuple[tuple[str, ...], str]:
    """(packages, gcc-N) on `base_suite` for the compiler a kernel's Makefile calls:
    `gcc-14` -> gcc-14; `x86_64-linux-gnu-gcc-16` (7.x headers, through gcc-16-for-host) ->
    gcc-16-x86-64-linux-gnu, the package holding that very binary; a plain `gcc` (a kernel
    built from source) -> gcc-N of the version that built it."""
    match = re.fullmatch(r"(x86_64-linux-gnu-)?gcc(?:-([0-9]+))?", cc)
    if not match or not re.fullmatch(r"[0-9]+", cc_version):
        raise InfraError(f"the kernel was built with {cc!r}, which is not a gcc stapmatrix knows how to install")
    prefix = match.group(1)
    candidates = [f"gcc-{cc_version}-x86-64-linux-gnu"] if prefix else []
    candidates.append(f"gcc-{cc_version}")
    suites = BASE_SUITE_SOURCES[base_suite]
    for candidate in candidates:
        if any(archive.in_suite(suite, candidate) for suite in suites):
            return (candidate,), f"gcc-{cc_version}"
    raise InfraError(f"the kernel's Makefile calls {cc} (gcc {cc_version}), which no package of {base_suite} "
                     f"provides (looked for {', '.join(candidates)})")


def package_base(archive: Archive, suite: str, version: str, names: tuple[str, ...], what: str) -> BaseChoice:
    """The oldest base whose suites meet every dependency of the packages `names` at
    `version` (from `suite`); remembered until the indexes it was read from are fetched again
    (reading the catalogues of every package costs more than the rest of planning)."""
    key = hashlib.sha256("\0".join([suite, version, *names, *archive.index_stamps(BASE_SUITES)]).encode())
    memo = cache_dir() / "plans" / f"stap-base-{key.hexdigest()[:24]}.json"
    known = cache.read_entry(memo)
    if isinstance(known, list) and len(known) == 2:
        return BaseChoice(str(known[0]), str(known[1]))
    choice = _package_base_from_indexes(archive, suite, version, names, what)
    cache.write_entry(memo, list(choice))
    return choice


def _package_base_from_indexes(archive: Archive, suite: str, version: str, names: tuple[str, ...],
                               what: str) -> BaseChoice:
    parts = [p for name in names if (p := archive.find(name, version)) is not None]
    for base in BASE_SUITES:
        sources_of_base = BASE_SUITE_SOURCES[base]
        if suite == "experimental" and "experimental" not in sources_of_base:
            continue
        unmet = [clause for part in parts for clause in archive.unmet(part, sources_of_base, tuple(parts))]
        if not unmet:
            return BaseChoice(base, f"{what} {version} ({suite}) installs on {base}")
    oldest, newest = BASE_SUITES[0], BASE_SUITES[-1]
    unmet_text = ", ".join(sorted({c for part in parts
                                   for c in archive.unmet(part, BASE_SUITE_SOURCES[oldest], tuple(parts))}))
    return BaseChoice(newest, f"{what} {version} ({suite}) needs {newest}"
                      + (f" ({oldest} lacks {unmet_text})" if unmet_text else ""))


def cell_base(kernel: BaseChoice, stap: BaseChoice) -> BaseChoice:
    """The oldest base that can install both the kernel's compiler and the systemtap build."""
    order = {suite: index for index, suite in enumerate(BASE_SUITES)}
    if order[kernel.suite] >= order[stap.suite]:
        return BaseChoice(kernel.suite, kernel.reason + (f"; {stap.reason}" if stap.reason else ""))
    return BaseChoice(stap.suite, stap.reason + f"; {kernel.reason}")
