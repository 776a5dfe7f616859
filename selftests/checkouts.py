"""Source trees for the selftests that build systemtap from a checkout."""

from __future__ import annotations

from pathlib import Path


def failing_checkout(tmp_path: Path, configure: str) -> Path:
    """A systemtap "checkout" whose configure is `configure` (a shell script): enough for a
    real `path:` source build to get as far as configure, and fail there."""
    checkout = tmp_path / "systemtap"
    checkout.mkdir()
    (checkout / "configure.ac").write_text("AC_INIT([systemtap], [0.0])\n")
    (checkout / "configure").write_text(configure)
    (checkout / "configure").chmod(0o755)
    return checkout
