"""Which new taint flags fail a test. systemtap builds guru-mode modules without symbol
versions on purpose (PR10280), so on Debian's kernel (CONFIG_MODULE_FORCE_LOAD=y) the first
one loaded in a boot taints F. Recorded in a cold examples run on 6.12.118+deb13-amd64 x
deb:5.6-1: keyhack's installcheck (`stap -g keyhack.stp -c 'sleep 5'`) printed
"stap_4adbb939811c67bcd96f6d744d7f9330__605: module_layout: kernel tainted." and the guest's
taint went from 0 to F|O|E; since the flag is sticky, only the first guru module of each guest
was blamed, and its retry in the same guest passed: `flaky`, decided by the order of the tests."""

from __future__ import annotations

import shlex

import pytest

from harness.guest import forced_stap_module, guru_mode, new_taint

O, E, F, D = 4096, 8192, 2, 128


@pytest.mark.parametrize("command", [
    "stap -g keyhack.stp -c 'sleep 5'",
    "stap -gp4 threadstacks.stp -Gsize=65536 -d `which stap`",
    "stap --skip-badvars -g ttyspy.stp -T 1",
    "stap -DMAXACTION=10000 -g psig.stp -x $$",
    "stap --runtime=bpf -g bpf_xdp_guru.stp -c \"ping -6 -t 1 -c 10 localhost >/dev/null\" -T 3",
    "stap -wg x.stp",
])
def test_guru_commands(command: str) -> None:
    assert guru_mode(shlex.split(command))


@pytest.mark.parametrize("command", [
    "stap -p4 last_100_frees.stp -c \"stap -V\" -d `which stap` --ldd",
    "stap -Gsize=1 x.stp",  # -G takes the rest of its word
    "stap -c 'make -g' x.stp",  # an argument, not an option
    "stap -G g x.stp",
    "stap -p 4 -e 'probe begin { exit() }'",
    "stap x.stp -- -g",  # the script's own argument
])
def test_commands_that_are_not_guru(command: str) -> None:
    assert not guru_mode(shlex.split(command))


def test_forced_module_taint_fails_only_a_module_that_is_not_guru() -> None:
    assert new_taint(0, F | O | E, guru=True) == ""
    assert new_taint(0, F | O | E) == "F"
    assert new_taint(0, F | D | O | E, guru=True) == "D"  # a warning is a failure in guru mode too
    assert new_taint(F, F | O | E) == ""  # sticky: set before this test


# The line keyhack's guest printed in that run (try_to_force_load()), after the line the kernel
# prints for the first out-of-tree module of a boot.
KEYHACK_CONSOLE = ("stap_4adbb939811c67bcd96f6d744d7f9330__605: loading out-of-tree module taints kernel.\n"
                   "stap_4adbb939811c67bcd96f6d744d7f9330__605: module_layout: kernel tainted.\n")


def test_a_dejagnu_file_whose_stap_module_loaded_forced_may_taint_f() -> None:
    assert forced_stap_module(KEYHACK_CONSOLE)
    assert new_taint(0, F | O | E, guru=forced_stap_module(KEYHACK_CONSOLE)) == ""


def test_another_module_loaded_forced_is_still_blamed() -> None:
    console = "[   12.000001] dummy_hcd: module_layout: kernel tainted.\n"
    assert not forced_stap_module(console)
    assert not forced_stap_module("stap_abc: loading out-of-tree module taints kernel.\n")
    assert new_taint(0, F | O | E, guru=forced_stap_module(console)) == "F"
