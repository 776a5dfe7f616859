"""The runtime's refusal of an exec is told from a command's own exit 126. The outputs are the
two distinct ones among the three verdicts a stopped run left in the examples' check cache on
2026-12-03 (7.3-amd64 x deb:5.6-1: whythefail, sizeof_interactive), each {"code": 126, ...}."""

from __future__ import annotations

import pytest

from harness.docker_env import runtime_exec_failed

RECORDED = [
    "OCI runtime exec failed: exec failed: cannot exec in a stopped container: unknown\r\n",
    "cannot exec in a stopped state: unknown\r\n",
]


@pytest.mark.parametrize("output", RECORDED)
def test_recorded_refusals_are_the_runtimes(output: str) -> None:
    assert runtime_exec_failed(126, output)
    assert runtime_exec_failed(126, output.encode())


def test_a_commands_own_126_or_words_are_its_result() -> None:
    assert not runtime_exec_failed(126, "sh: 1: ./x.stp: Permission denied\n")
    assert not runtime_exec_failed(1, RECORDED[0])  # the words, but not the runtime's status
    assert not runtime_exec_failed(126, "semantic error: ... OCI runtime exec failed")  # not at the start
