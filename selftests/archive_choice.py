"""The Debian kernels and systemtap packages the selftests use, chosen from the archive when
the tests run: by series and release, never by a version that Debian's next point release or
security update replaces (the archive keeps only the newest builds of a series)."""

from __future__ import annotations

import functools

from debian.debian_support import Version

from harness import kernels
from harness.archive import Archive, series
from harness.errors import MatrixError
from harness.specs import parse_kernel_spec
from harness.suites import SUITE_BY_NAME


@functools.cache
def archive() -> Archive:
    return Archive()


@functools.cache
def newest_kernel(kernel_series: str, release: str, flavour: str = "amd64") -> str:
    """The ABI name of the newest kernel of `kernel_series` (6.12) that the suites of Debian
    release `release` (trixie: trixie, trixie-security) carry complete: -dbg, image (signed
    or -unsigned) and headers. A backport (bookworm's 6.12) counts for the release it was
    built for: `6.12.N+deb12` is bookworm's."""
    candidates = [k for k in archive().kernel_abis()
                  if series(k.abi)[0] == kernel_series and series(k.abi)[2] == flavour
                  and SUITE_BY_NAME[k.suite].release == release]
    # Newest first; of two ABIs of one build, the full name (6.12.118+deb12-amd64) before the
    # series' own (6.12-amd64), which bookworm-security also carries for the same build.
    ordered = sorted(candidates, key=lambda k: (Version(k.version), k.abi != f"{kernel_series}-{flavour}"),
                     reverse=True)
    for kernel in ordered:
        try:
            kernels.resolve(parse_kernel_spec(kernel.abi, "selftests"), "selftests", archive())
        except MatrixError:
            continue  # a build whose packages are not all there yet
        return kernel.abi
    raise AssertionError(f"the archive has no complete {kernel_series} kernel of {release}: "
                         f"{sorted(k.abi for k in candidates)}")


@functools.cache
def systemtap_of(suite: str) -> str:
    """`deb:VERSION` of the systemtap package `suite` carries."""
    versions = [v for v, s in archive().systemtap_versions() if s == suite]
    assert versions, f"{suite} has no systemtap package"
    return "deb:" + max(versions, key=Version)
