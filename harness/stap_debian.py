"""systemtap from Debian's archive: `deb:VERSION`, looked up in every suite; the cell's base
must meet the packages' dependencies (harness/bases.py)."""

from __future__ import annotations

from harness.archive import Archive
from harness.bases import package_base
from harness.errors import MatrixError
from harness.specs import StapSpec
from harness.stap_build import STAP_PACKAGES, StapBuild


def resolve(spec: StapSpec, where: str, archive: Archive) -> StapBuild:
    package = archive.find("systemtap", spec.value)
    if package is None:
        have = [f"deb:{version} ({suite})" for version, suite in archive.systemtap_versions()]
        raise MatrixError(
            f"{where}: systemtap {spec.spec} is in none of {', '.join(s.name for s in archive.suites)}; "
            f"the archive has: {', '.join(have)}"
        )
    base = package_base(archive, package.suite, spec.value, STAP_PACKAGES, "systemtap")
    return StapBuild(spec, package.suite, package.version, base.suite, base.reason)
