"""Test sets: systemtap's own tests, as a matrix or the command line names them.

    examples                     the examples' test_check and test_installcheck commands, from
                                 the column's own systemtap (harness/examples.py)
    smoke                        a fixed list of DejaGnu files (harness/dejagnu_sets.py), source columns
    all                          the whole DejaGnu testsuite, source columns
    systemtap.base/kprobes.exp   DejaGnu files, directories and globs, source columns
    {set: examples, include: [PATTERN...], exclude: [PATTERN...], path: DIR}
                                 any of the above filtered by fnmatch patterns on test names
                                 (`examples/io/iotop: check`, `testsuite:systemtap.base/x.exp`);
                                 for examples, `path:` names a directory of examples of the
                                 user's own (DIR/CATEGORY/NAME.meta) instead of the column's

A test set is checked here, from the matrix file alone; which tests it holds is planning's
business (it needs the column's systemtap).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import MatrixError

EXAMPLES = "examples"
NAMED_DEJAGNU = ("smoke", "all")
# A DejaGnu selector: a path under testsuite/ of a systemtap source tree, with glob characters.
DEJAGNU_RE = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+(/[A-Za-z0-9_.*?\[\]-]+)*$")
# A filter pattern: test names hold letters, digits, `/._:+-` and spaces (`examples/io/iotop: check`).
FILTER_RE = re.compile(r"^[A-Za-z0-9_./:+*?\[\]! -]{1,200}$")


@dataclass(frozen=True)
class TestSet:
    __test__ = False  # not a pytest class
    selector: str  # examples, smoke, all, or a DejaGnu file/directory/glob
    include: tuple[str, ...] = ()  # fnmatch patterns; empty: every test
    exclude: tuple[str, ...] = ()
    path: str = ""  # examples only: a directory of examples of the user's own

    @property
    def is_examples(self) -> bool:
        return self.selector == EXAMPLES

    def selects(self, test: str) -> bool:
        """Whether the filters keep the test named `test`."""
        if self.include and not any(fnmatch.fnmatchcase(test, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(test, p) for p in self.exclude)

    @property
    def label(self) -> str:
        """How the set is named in messages and reproducers."""
        return self.selector + (f" (from {self.path})" if self.path else "")


def check_selector(text: str, where: str) -> str:
    """`examples`, `smoke`, `all`, or a DejaGnu file, directory or glob below testsuite/."""
    if text == EXAMPLES or text in NAMED_DEJAGNU:
        return text
    if not DEJAGNU_RE.match(text) or ".." in text.split("/"):
        raise MatrixError(f"{where}: test set {text!r} is not `examples`, `smoke`, `all` or a DejaGnu file, "
                          "directory or glob below testsuite/ (for example systemtap.base/kprobes.exp or "
                          "systemtap.base/*.exp)")
    return text


def check_patterns(patterns: list[str], where: str, what: str) -> tuple[str, ...]:
    for pattern in patterns:
        if not FILTER_RE.match(pattern):
            raise MatrixError(f"{where}: {what} pattern {pattern!r} is not a test-name pattern (letters, digits, "
                              "spaces, `/._:+-` and the fnmatch characters `*?[]!`)")
    return tuple(patterns)


def make_test_set(selector: str, where: str, include: list[str] | None = None, exclude: list[str] | None = None,
                  path: Path | None = None) -> TestSet:
    selector = check_selector(selector, where)
    if path is not None:
        if selector != EXAMPLES:
            raise MatrixError(f"{where}: path: belongs to the examples set (a directory of examples of your own)")
        if not path.is_dir():
            raise MatrixError(f"{where}: examples directory {path} does not exist")
    return TestSet(selector, check_patterns(include or [], where, "include"),
                   check_patterns(exclude or [], where, "exclude"), str(path) if path else "")
