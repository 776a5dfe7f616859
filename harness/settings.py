"""Where the harness keeps things on the host, and the few knobs set from the environment."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    """Package indexes, compiled modules and the KVM probe verdict live here across runs."""
    base = os.environ.get("STAPMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stapmatrix"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_url() -> str:
    """The Debian archive used for indexes, debootstrap and apt inside images."""
    return os.environ.get("STAPMATRIX_MIRROR", DEFAULT_MIRROR).rstrip("/")


def artifacts_root() -> Path:
    return Path(os.environ.get("STAPMATRIX_ARTIFACTS", "artifacts")).resolve()
