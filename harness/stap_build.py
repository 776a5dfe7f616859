"""A systemtap build as planned (harness/staps.py resolves one from its spec): which package
version, commit or tree content it is, and which base suite installs it."""

from __future__ import annotations

from dataclasses import dataclass

from harness.bases import BaseChoice
from harness.specs import StapSpec
from harness.suites import BASE_SUITES

# The packages of a Debian systemtap build, installed at one version.
STAP_PACKAGES = ("systemtap", "systemtap-runtime", "systemtap-common")


@dataclass(frozen=True)
class StapBuild:
    spec: StapSpec
    suite: str  # deb: the suite that has the package; source builds: "" (built on the base)
    version: str  # deb: the package version; git: the full commit id; path: sha256 of the tree
    base_suite: str = BASE_SUITES[0]  # the oldest base that installs it
    base_reason: str = ""

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(f"{name}={self.version}" for name in STAP_PACKAGES)

    @property
    def version_label(self) -> str:
        """What `stap -V` of a source build shows (configure --with-extra-version)."""
        if self.spec.kind == "git":
            return f"stapmatrix git commit {self.version} ({self.spec.ref})"
        return f"stapmatrix path {self.spec.value} sha256 {self.version[:16]}"

    @property
    def identity(self) -> str:
        if self.spec.kind == "deb":
            return f"{self.version} ({self.suite})"
        if self.spec.kind == "git":
            return f"commit {self.version}"
        return f"tree sha256 {self.version[:16]}"

    @property
    def stap_path(self) -> str:
        """Where the build's stap is in its image (harness/dockerfiles/stap-*.Dockerfile)."""
        return "/usr/bin/stap" if self.spec.kind == "deb" else "/opt/systemtap/bin/stap"

    @property
    def base(self) -> BaseChoice:
        return BaseChoice(self.base_suite, self.base_reason)
