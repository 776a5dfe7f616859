"""How an installcheck command of systemtap's examples is run under stap --remote: a `$$` word
names the guest's shell (PID 1), not a process of the container; a command substitution that
reads /proc is evaluated in the guest (GuestControl.evaluate, here a stand-in that records it). The commands are 5.6-1's (systemtap-doc .meta
files), as recorded in a cold examples run on 6.12.118+deb13-amd64."""

from __future__ import annotations

import pytest

from harness.example_run import guest_command, in_guest
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
    assert in_guest(as_run, lambda inner: pytest.fail(f"evaluated {inner}")) == (as_run, "")


MBRWATCH = ("stap mbrwatch.stp -c \"dd of=/dev/null count=1 if=/dev/`grep -v major /proc/partitions | grep . | "
            "grep -v 'sr[0-9]' | awk '{print $4}' | head -1`\"")


def test_a_substitution_that_reads_proc_is_the_guests() -> None:
    asked: list[str] = []
    command, why = in_guest(MBRWATCH, lambda inner: asked.append(inner) or "vda\n")
    assert asked == ["grep -v major /proc/partitions | grep . | grep -v 'sr[0-9]' | awk '{print $4}' | head -1"]
    assert (command, why) == ('stap mbrwatch.stp -c "dd of=/dev/null count=1 if=/dev/vda"', "")


@pytest.mark.parametrize(("command", "printed", "as_run"), [
    ('stap x.stp -c "echo $(cat /proc/a)"', 'a"b $c\n', 'stap x.stp -c "echo a\\"b \\$c"'),  # still one word in quotes
    ("stap x.stp -x $(cat /proc/a)", "1 2\n", "stap x.stp -x 1 2"),  # unquoted: split into words
    ("stap x.stp -c 'cat `ls /proc/x`'", "never", "stap x.stp -c 'cat `ls /proc/x`'"),  # single quotes: a literal
])
def test_what_the_guest_printed_is_written_for_the_containers_shell(command: str, printed: str, as_run: str) -> None:
    assert in_guest(command, lambda inner: printed) == (as_run, "")


def test_a_substitution_with_nothing_in_the_guest_is_not_run() -> None:
    """A guest without a disk (a kernel without virtio_blk): no verdict about the example."""
    assert "printed nothing in the guest" in in_guest(MBRWATCH, lambda inner: "")[1]
    assert "the guest did not evaluate" in in_guest(MBRWATCH, lambda inner: None)[1]
