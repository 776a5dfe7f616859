"""How an installcheck command of systemtap's examples is run under stap --remote: a `$$` word
names the guest's shell (PID 1), not a process of the container; a command that reads the
host's /proc in a substitution is not run. The commands are 5.6-1's (systemtap-doc .meta
files), as recorded in a cold examples run on 6.12.118+deb13-amd64."""

from __future__ import annotations

import pytest

from harness.example_run import guest_command, host_bound
from harness.examples import ExampleTest


def installcheck(example: str, command: str) -> ExampleTest:
    return ExampleTest(f"examples/{example}: installcheck", example, "installcheck", command)


@pytest.mark.parametrize(("example", "command", "as_run"), [
    ("process/pfiles", "stap -g pfiles.stp -x $$", "stap -g pfiles.stp -x 1"),
    ("process/plimit", "stap -g plimit.stp $$", "stap -g plimit.stp 1"),
    ("process/psig", "stap -DMAXACTION=10000 -g psig.stp -x $$", "stap -DMAXACTION=10000 -g psig.stp -x 1"),
    ("io/iotop", "stap iotop.stp -T 1", "stap iotop.stp -T 1"),
    # $$ inside a word or a quoted -c command is the shell's business, left as written
    ("x/quoted", "stap x.stp -c 'kill $$'", "stap x.stp -c 'kill $$'"),
    ("x/suffix", "stap x.stp -x $$1", "stap x.stp -x $$1"),
])
def test_a_shells_pid_names_the_guests_shell(example: str, command: str, as_run: str) -> None:
    test = installcheck(example, command)
    assert guest_command(test) == as_run
    assert host_bound(test) == ""


def test_the_hosts_proc_in_a_substitution_is_not_run() -> None:
    mbrwatch = installcheck("io/mbrwatch", "stap mbrwatch.stp -c \"dd of=/dev/null count=1 if=/dev/`grep -v major "
                                           "/proc/partitions | grep . | grep -v 'sr[0-9]' | awk '{print $4}' | head -1`\"")
    assert "reads /proc in a command substitution" in host_bound(mbrwatch)
