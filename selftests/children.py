"""Child processes the Ctrl-C tests interrupt."""

from __future__ import annotations

import sys


def interruptible_cli(*arguments: str) -> list[str]:
    """`python -m harness.cli ARGUMENTS` with SIGINT at its default disposition. A command
    that a non-interactive shell starts in the background (`./sm test > log &`) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: the child never sees the
    test's Ctrl-C (both Ctrl-C tests timed out so, 2026-12-03, while passing in the foreground).
    stapmatrix rightly keeps an ignored SIGINT ignored, as every program a shell backgrounds
    does; the test wants a terminal's Ctrl-C, so the child gets SIGINT back (coreutils env)."""
    return ["env", "--default-signal=INT", sys.executable, "-m", "harness.cli", *arguments]
