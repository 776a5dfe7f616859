"""Infrastructure faults, for real: real processes, real containers, a real tmpfs, real
sockets and servers on loopback, real files damaged in place. Nothing of the part under test
is mocked. The tests that need the images of test_real.py (kernel 6.12.117+deb13-amd64,
systemtap deb:5.6-1) share its xdist group, so one worker builds them.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from harness import docker_env, settings
from harness.cli import main
from harness.outcomes import Outcome, read_results

pytestmark = [pytest.mark.real]
CELL = pytest.mark.xdist_group("real-cell")

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "6.12.117+deb13-amd64"
STAP = "deb:5.6-1"
STAP_DIR = ROOT / "tests" / "stap"


# --- isolation: source builds run configure and make without network ------------------------

CONFIGURE_PROBE = """#!/usr/bin/env python3
# Tries to reach the Debian mirror the dependencies came from, says whether it could, fails.
import sys, urllib.request
try:
    urllib.request.urlopen("{url}", timeout=10)
    print("configure: network: reached the mirror")
except Exception as error:
    print("configure: network: unreachable (" + type(error).__name__ + ")")
print("configure: error: broken on purpose", file=sys.stderr)
sys.exit(1)
"""


@CELL
def test_source_build_runs_configure_without_network(tmp_path: Path) -> None:
    """The host reaches the mirror (the dependencies step downloads from it); configure, in
    the source build step, cannot."""
    settings.reset_mirrors()
    url = settings.mirror_url() + "/dists/sid/InRelease"
    urllib.request.urlopen(url, timeout=30).close()  # the host can: what follows is the build's isolation
    checkout = tmp_path / "systemtap"
    checkout.mkdir()
    (checkout / "configure.ac").write_text("AC_INIT([systemtap], [0.0])\n")
    (checkout / "configure").write_text(CONFIGURE_PROBE.format(url=url))
    (checkout / "configure").chmod(0o755)
    json_path = tmp_path / "r.json"
    code = main(["run", "--kernel", KERNEL, "--stap", f"path:{checkout}", "--json", str(json_path),
                 str(STAP_DIR / "begin_end.stp")])
    (result,) = read_results(json_path)
    assert code == 1 and result.outcome is Outcome.ERROR
    log = Path(result.detail.split("full log: ")[1].strip()).read_text()
    assert "configure: network: unreachable (URLError)" in log, log[-2000:]
    assert "(network: none)" in log and log.count("=== attempt") == 1
    tag = result.detail.split("building ")[1].split()[0]
    assert not any(tag in i.tags for i in docker_env.client().images.list())
