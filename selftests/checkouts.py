"""Source trees for the selftests that build systemtap from a checkout."""

from __future__ import annotations

from pathlib import Path

from harness import recipes, staps
from harness.archive import Archive
from harness.specs import parse_stap_spec


def failing_checkout(tmp_path: Path, configure: str) -> Path:
    """A systemtap "checkout" whose configure is `configure` (a shell script): enough for a
    real `path:` source build to get as far as configure, and fail there."""
    checkout = tmp_path / "systemtap"
    checkout.mkdir()
    (checkout / "configure.ac").write_text("AC_INIT([systemtap], [0.0])\n")
    (checkout / "configure").write_text(configure)
    (checkout / "configure").chmod(0o755)
    return checkout


def source_image_tag(checkout: Path) -> str:
    """The tag the systemtap image of a `path:` checkout would have (once its build succeeded)."""
    build = staps.resolve(parse_stap_spec(f"path:{checkout}", "test"), "test", Archive())
    return recipes.stap_source_recipe(build.base_suite, build.version, build.version_label).tag
