"""systemtap's own examples as tests, for real: the test_check and test_installcheck commands
of Debian's systemtap-doc, on the selftests' kernel and systemtap (conftest.py), compiled in a
container and run in a guest through stapsh; and a directory of examples of the selftests'
own (selftests/data/examples) that must fail in each of the ways a real example can."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.outcomes import Outcome
from selftests.cells import CellRun

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("real-cell")]

OWN_EXAMPLES = Path(__file__).parent / "data" / "examples"
REAL_SUBSET = ("examples/general/helloworld*", "examples/io/iotop*", "examples/apps/php-trace*",
               "examples/io/enospc: check", "examples/memory/kmalloc-top: check", "examples/profiling/periodic*")


def test_a_real_subset_of_the_packages_examples(run_cell: CellRun) -> None:
    """helloworld and iotop compile and run; php-trace's test_support fails (no php in the
    image), so both its tests are untested; enospc's probes on ext4 find the debuginfo of a
    compressed Debian module, kmalloc-top (Perl) finds Getopt::Std; periodic's installcheck
    (`--all-modules`: a module of 37 MB for Debian's 6.12, over stapsh's 32 MB limit) reaches
    the guest in parts through harness/stapsh_relay.py and runs there; a second run takes every
    check from the cache."""
    args = ("--testsuite", "examples", *(f"--testsuite-include={p}" for p in REAL_SUBSET))
    code, results, seconds = run_cell("subset", args=args)
    print({name: (r.outcome.value, r.detail.splitlines()[:1]) for name, r in results.items()}, f"{seconds:.0f} s")
    assert sorted(results) == [
        "examples/apps/php-trace: check", "examples/apps/php-trace: installcheck",
        "examples/general/helloworld: check", "examples/general/helloworld: installcheck",
        "examples/io/enospc: check", "examples/io/iotop: check", "examples/io/iotop: installcheck",
        "examples/memory/kmalloc-top: check", "examples/profiling/periodic: check",
        "examples/profiling/periodic: installcheck"]
    for name in ("examples/io/enospc: check", "examples/memory/kmalloc-top: check",
                 "examples/general/helloworld: check", "examples/general/helloworld: installcheck",
                 "examples/io/iotop: check", "examples/io/iotop: installcheck",
                 "examples/profiling/periodic: check", "examples/profiling/periodic: installcheck"):
        assert results[name].outcome is Outcome.PASS, (name, results[name].detail)
    for kind in ("check", "installcheck"):
        php = results[f"examples/apps/php-trace: {kind}"]
        assert php.outcome is Outcome.SKIP and "test_support" in php.detail and "process(\"php\")" in php.detail
    hello = results["examples/general/helloworld: installcheck"]
    assert Path(hello.artifacts["output"]).read_text().strip() == "hello world"
    assert Path(hello.artifacts["command"]).read_text().strip().endswith("stap helloworld.stp")
    assert "loading out-of-tree module taints kernel" in Path(hello.artifacts["console"]).read_text()
    # The guest's own timers, sampled by the module the relay sent in parts (before it, stap
    # --remote ended with "Failed reading staprun_args_stapsh" and printed nothing).
    periodic = Path(results["examples/profiling/periodic: installcheck"].artifacts["output"]).read_text()
    assert periodic.startswith("#monitoring timer periods")
    assert any(line.startswith("kernel ") for line in periodic.splitlines())  # a row: at least stap's own timers
    assert code == 0  # skips are not failures
    consoles = "".join(path.read_text(errors="replace")
                       for path in Path(hello.artifacts["dir"]).glob("guest/console-stapsh-*.log"))
    # init signals stapsh only once it catches SIGIO; before, one could die of it (128 + 29)
    assert "stapsh exited 0" in consoles and "stapsh exited 157" not in consoles

    again_code, again, _ = run_cell("subset-again", args=args)
    assert again_code == 0
    assert again["examples/io/iotop: check"].stages["check"].cached
    assert again["examples/io/iotop: installcheck"].outcome is Outcome.PASS


def test_examples_of_our_own_fail_in_every_way(run_cell: CellRun, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """A check that fails in pass 2 (its installcheck not run), a module that errors at run
    time (tried again, the same: not flaky), one that panics the guest (a crash; the guest is
    booted again and the next example passes), and one whose test_support fails."""
    monkeypatch.setenv("STAPMATRIX_TEST_JOBS", "1")  # one guest: the panic comes before the next example
    code, results, _ = run_cell("own", args=("--testsuite", "examples", "--testsuite-path", str(OWN_EXAMPLES)))
    print(json.dumps({name: (r.outcome.value, r.detail.splitlines()[:2]) for name, r in results.items()}, indent=1))
    assert code == 1
    outcome = {name: r.outcome for name, r in results.items()}
    assert outcome == {
        "examples/selftest/errors_at_run: check": Outcome.PASS,
        "examples/selftest/errors_at_run: installcheck": Outcome.FAIL_LOAD,
        "examples/selftest/fails_to_compile: check": Outcome.FAIL_PASS2,
        "examples/selftest/fails_to_compile: installcheck": Outcome.SKIP,
        "examples/selftest/panics: check": Outcome.PASS,
        "examples/selftest/panics: installcheck": Outcome.CRASH,
        "examples/selftest/panics_survived: installcheck": Outcome.PASS,
        "examples/selftest/unsupported: check": Outcome.SKIP,
    }
    assert "fails_to_compile.stp:2:7" in results["examples/selftest/fails_to_compile: check"].detail
    assert "semantic error: no match" in results["examples/selftest/fails_to_compile: check"].detail
    assert "its check is fail-pass2" in results["examples/selftest/fails_to_compile: installcheck"].detail
    run_error = results["examples/selftest/errors_at_run: installcheck"]
    assert "deliberate run-time error" in run_error.detail
    assert [t.outcome for t in run_error.tries] == ["fail-load", "fail-load"]
    assert "Kernel panic - not syncing: stapmatrix: deliberate panic through stapsh" in \
        results["examples/selftest/panics: installcheck"].detail
    assert "test_support" in results["examples/selftest/unsupported: check"].detail
    assert os.path.exists(results["examples/selftest/panics: installcheck"].artifacts["console"])
